// Package api is flux-webhook's wire format: what /hook answers and streams, and what the
// platform API takes and answers. It depends on nothing of the service, so that a client
// (the CLI, api/client) imports it without the domain.
package api

import (
	"fmt"
	"strings"
	"time"
)

// Commit status states, as Gitea (and GitHub) name them.
const (
	StatePending = "pending"
	StateSuccess = "success"
	StateFailure = "failure"
	StateError   = "error"
	StateWarning = "warning"
)

// Final reports whether a state ends a request.
func Final(state string) bool { return state != StatePending }

// Status is a commit status state and its description.
type Status struct {
	State       string `json:"state"`
	Description string `json:"description"`
}

// ContextPrefix starts every commit status context flux-webhook posts.
const ContextPrefix = "flux/"

// Target names one Flux object in one cluster.
type Target struct {
	Cluster   string `json:"cluster"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Context is the commit status context of the target:
// flux/<cluster>/<kind in lower case>/<namespace>/<name>; for a target naming only a cluster
// (statuses per cluster), flux/<cluster>.
func (t Target) Context() string {
	if t.Kind == "" {
		return ContextPrefix + t.Cluster
	}
	return fmt.Sprintf("%s%s/%s/%s/%s", ContextPrefix, t.Cluster, strings.ToLower(t.Kind), t.Namespace, t.Name)
}

func (t Target) String() string {
	return fmt.Sprintf("%s/%s/%s/%s", t.Cluster, t.Kind, t.Namespace, t.Name)
}

// Request outcomes of one target, in a /hook answer.
const (
	// ResultQueued: the push is recorded; the leader's worker requests the target (its
	// commit status turns pending then).
	ResultQueued = "queued"
	// ResultRequested: requestedAt and the record were patched.
	ResultRequested = "requested"
	// ResultAlreadyRequested: the same push was accepted (or the same commit is pending on
	// the object) already: a redelivery, or the Actions step and the native webhook for one
	// push.
	ResultAlreadyRequested = "already-requested"
	// ResultCoalesced: recorded; the object was patched for another push moments ago, and
	// requestedAt is set for this one when that moment has passed.
	ResultCoalesced = "coalesced"
	// ResultSuspended: Flux is told to leave the object alone; it was not touched.
	ResultSuspended = "suspended"
	// ResultSuperseded: the push was overtaken before it arrived; a warning is owed, nothing
	// is requested.
	ResultSuperseded = "superseded"
	// ResultError: the object could not be patched; Error says why.
	ResultError = "error"
)

// Outcome is what a push did to one target.
type Outcome struct {
	Target
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

// Requested reports whether the target will reconcile for the push: queued, requested,
// coalesced with a burst, or requested by an identical push already.
func (o Outcome) Requested() bool {
	return o.Result == ResultQueued || o.Result == ResultRequested || o.Result == ResultCoalesced || o.Result == ResultAlreadyRequested
}

// Reported reports whether the target gets a final status for the push: it was requested,
// or is owed a warning as superseded.
func (o Outcome) Reported() bool { return o.Requested() || o.Result == ResultSuperseded }

// ClusterTargets is how many targets a push matched in one cluster.
type ClusterTargets struct {
	Cluster string `json:"cluster"`
	Targets int    `json:"targets"`
	// Refused, when set, is how many Flux objects of the cluster follow what was pushed
	// while the cluster may not follow its repository (it is neither public nor granted to
	// the cluster): none of them is requested or reported (Targets is 0).
	Refused int `json:"refused,omitempty"`
}

// ClusterError says why a cluster was left out.
type ClusterError struct {
	Cluster string `json:"cluster"`
	Error   string `json:"error"`
}

// HookResponse is the answer to a push.
type HookResponse struct {
	Delivery   string `json:"delivery"`
	Repository string `json:"repository,omitempty"`
	Ref        string `json:"ref,omitempty"`
	SHA        string `json:"sha,omitempty"`
	// Package and Tag are those of a registry push: Repository and SHA are then the
	// commit the artifact records, if any.
	Package string `json:"package,omitempty"`
	Tag     string `json:"tag,omitempty"`
	// Result says what happened: "accepted" (202: reconciles requested, statuses follow),
	// or, with 200, why nothing was done: "ignored" or "no-match".
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
	// Clusters says how many targets the push matched in each cluster, and in which
	// clusters it was refused.
	Clusters []ClusterTargets `json:"clusters,omitempty"`
	// Targets lists them, up to a bound (TargetsOmitted says how many more there are).
	Targets        []Outcome `json:"targets,omitempty"`
	TargetsOmitted int       `json:"targetsOmitted,omitempty"`
	// Unreachable lists clusters that could not be asked: what the push feeds there is
	// unknown.
	Unreachable []ClusterError `json:"unreachable,omitempty"`
}

// TargetResult is one target's final answer to a push, for a sender that waits.
type TargetResult struct {
	Target
	Status
	// Elapsed is the time since the push was requested.
	Elapsed time.Duration `json:"elapsed"`
}

// StreamLine is one NDJSON line of a waiting answer (/hook?wait=true).
type StreamLine struct {
	Event string `json:"event"` // accepted, target, heartbeat, summary
	*HookResponse
	*TargetResult
	Seconds float64        `json:"seconds,omitempty"`
	OK      *bool          `json:"ok,omitempty"`
	Counts  map[string]int `json:"counts,omitempty"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// ShortSHA shortens a commit id to the 12 characters descriptions and stream lines show.
func ShortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
