// Package observe says how far Flux is with a request — pending, success, failure, error or
// warning, and why — once, for the reporter, the waiting stream and platform jobs alike: one
// evaluation (a kind's Judge, through gitops/flux), one result type (api.Status, State ""
// while pending), and every description a user reads, written here.
package observe

import (
	"fmt"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/record"
)

// Want returns what a push's request waits for: its commit, and the rule that tells whether
// an object handled it (or a later request).
func Want(req record.Request) flux.Want {
	return flux.Want{Commit: req.SHA, Version: req.Version, Handled: handledBy(req.Token, req.RequestedAt, req.PatchAt != nil)}
}

// WantAny returns what a platform reconcile requested with token at at waits for: whatever
// Flux settles on once it handled the request.
func WantAny(token string, at time.Time) flux.Want {
	return flux.Want{Handled: handledBy(token, at, false)}
}

// handledBy returns whether a status shows a reconcile requested no earlier than the
// request of token at at: ours, or one someone requested after us (the annotation then holds
// their token, an RFC 3339 time as flux-webhook and the flux CLI write it). A request whose
// requestedAt is not set yet (coalesced) is not handled, whatever Flux did before.
func handledBy(token string, at time.Time, deferred bool) func(flux.Status) bool {
	return func(s flux.Status) bool {
		if s.LastHandled == "" || deferred {
			return false
		}
		if s.LastHandled == token {
			return true
		}
		if s.Requested == token || s.LastHandled != s.Requested {
			return false
		}
		t, err := time.Parse(time.RFC3339Nano, s.Requested)
		return err == nil && t.After(at)
	}
}

// Evaluate returns what Flux's status says of o for a request waiting for w, given the
// objects o builds from (cluster.Sources): State "" while pending, else the final status.
func Evaluate(o client.Object, w flux.Want, sources map[flux.Ref]client.Object) api.Status {
	k, err := flux.KindFor(o)
	if err != nil {
		return api.Status{State: api.StateError, Description: "not a Flux kind flux-webhook knows"}
	}
	if k.Suspended(o) {
		return api.Status{State: api.StateWarning, Description: "not applied: suspended in Flux"}
	}
	return describe(k.Judge(o, w, sources))
}

// describe turns a kind's judgement into a status.
func describe(j flux.Judgement) api.Status {
	var st api.Status
	switch j.Verdict {
	case flux.Reached:
		st = api.Status{State: api.StateSuccess, Description: j.Action + " " + shortRevision(j.Revision)}
	case flux.Failed:
		st = api.Status{State: api.StateFailure, Description: j.Message}
		if j.Stage != "" {
			st.Description = j.Stage + " failed: " + j.Message
		}
	case flux.Elsewhere:
		st = api.Status{State: api.StateWarning, Description: "not applied: Flux " + j.Action + " " + shortRevision(j.Revision)}
	default:
		return api.Status{}
	}
	for i := len(j.Via) - 1; i >= 0; i-- {
		ref := j.Via[i]
		prefix := ref.Kind + " " + ref.Namespace + "/" + ref.Name + ": "
		if k, err := flux.Lookup(ref.Kind); err == nil && k.Stage() == 0 {
			prefix = "source " + prefix
		}
		st.Description = prefix + st.Description
	}
	st.Description = Text(st.Description)
	return st
}

// shortRevision shortens the commit of a Flux revision to 12 characters.
func shortRevision(rev string) string {
	i := strings.LastIndexAny(rev, ":/@")
	if sha := rev[i+1:]; len(sha) > 12 && i >= 0 {
		return rev[:i+1] + sha[:12]
	}
	return rev
}

// Requested is the pending status of a request.
func Requested(sha string) api.Status {
	return api.Status{State: api.StatePending, Description: "reconcile requested for " + api.ShortSHA(sha)}
}

// Superseded is the final status of a request a newer push overtook: by names it (its
// commit, or the tag of an artifact that records none).
func Superseded(by string) api.Status {
	return api.Status{State: api.StateWarning, Description: "superseded by " + api.ShortSHA(by)}
}

// TimedOut is the final status of a request Flux did not answer within timeout; message is
// what the object's conditions say.
func TimedOut(timeout time.Duration, message string) api.Status {
	if message == "" {
		message = "no status"
	}
	return api.Status{State: api.StateError, Description: Text(fmt.Sprintf("no answer from Flux within %s: %s", timeout, message))}
}

// StreamTimedOut is what a waiting sender is told of a target Flux did not answer in time.
func StreamTimedOut(timeout time.Duration) api.Status {
	return api.Status{State: api.StateError, Description: fmt.Sprintf("no answer from Flux within %s (the commit status follows when it comes)", timeout)}
}

// Deleted is the final status of a request whose object was deleted before Flux answered.
func Deleted() api.Status {
	return api.Status{State: api.StateError, Description: "deleted before Flux answered"}
}

// ClusterGone is the final status of a target whose cluster is no longer registered.
func ClusterGone(cluster string) api.Status {
	return api.Status{State: api.StateError, Description: "cluster " + cluster + " is no longer registered"}
}

// NotRequested is the final status of a target a push could not request; reason is the
// failure's public category.
func NotRequested(reason string) api.Status {
	return api.Status{State: api.StateError, Description: Text("not requested: " + reason)}
}

// Platform job results, for a target with no answer by the job's deadline.
func JobTimedOut(after time.Duration) api.Status {
	return api.Status{State: api.StateError, Description: fmt.Sprintf("no answer from Flux within %s", after)}
}

// Summary is the final status of a cluster's objects for one push (status granularity
// "cluster"): counts of their final states, n of them, and the first that was not a
// success ("kind/namespace/name: description"). The worst state wins: failure, then error,
// then warning.
func Summary(counts map[string]int, n int, first string) api.Status {
	ok := counts[api.StateSuccess]
	st := api.Status{State: api.StateSuccess, Description: fmt.Sprintf("%d/%d ready", ok, n)}
	switch {
	case counts[api.StateFailure] > 0:
		st.State = api.StateFailure
	case counts[api.StateError] > 0:
		st.State = api.StateError
	case ok < n:
		st.State = api.StateWarning
	}
	var parts []string
	for _, s := range []struct{ state, word string }{{api.StateFailure, "failed"}, {api.StateError, "no answer or not requested"}, {api.StateWarning, "not applied"}} {
		if c := counts[s.state]; c > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c, s.word))
		}
	}
	if len(parts) > 0 {
		st.Description += ", " + strings.Join(parts, ", ")
		if first != "" {
			st.Description += ": " + first
		}
	}
	if n == 0 {
		st = api.Status{State: api.StateWarning, Description: "no Flux object left to reconcile"}
	}
	st.Description = Text(st.Description)
	return st
}

// What a canary's status says (Flagger's verdict on the template a push applied to its
// target).

// CanaryPending is a canary's status while Flagger analyses: how far (progress), how many of
// its checks failed of those it allows, and Flagger's last word on why, if any.
func CanaryPending(progress string, failed, threshold int, why string) api.Status {
	d := progress
	if failed > 0 {
		d += fmt.Sprintf(", %d/%d failed checks", failed, threshold)
		if why != "" {
			d += ": " + why
		}
	}
	return api.Status{State: api.StatePending, Description: record.Bounded(d)}
}

// Promoted is a canary's final status when Flagger promoted the template: the images its
// primary runs.
func Promoted(images []string) api.Status {
	return api.Status{State: api.StateSuccess, Description: record.Bounded("promoted " + strings.Join(images, ", "))}
}

// RolledBack is a canary's final status when Flagger rolled the template back, with its
// reason.
func RolledBack(reason string) api.Status {
	return api.Status{State: api.StateFailure, Description: record.Bounded("rolled back: " + reason)}
}

// CanaryTimedOut is a canary's final status when Flagger decided nothing within what its
// analysis may take.
func CanaryTimedOut(after time.Duration, progress string) api.Status {
	return api.Status{State: api.StateError, Description: record.Bounded(fmt.Sprintf("no verdict from Flagger within %s: %s", after.Round(time.Second), progress))}
}

// CanaryDeleted is the final status of a canary deleted before Flagger decided.
func CanaryDeleted() api.Status {
	return api.Status{State: api.StateError, Description: "deleted before Flagger answered"}
}

// NotFollowed is a canary's final status when it cannot be followed any more.
func NotFollowed(why string) api.Status {
	return api.Status{State: api.StateError, Description: record.Bounded("not followed: " + why)}
}

// ApplierDeleted is a canary's final status when the object that applied its target was
// deleted before Flagger decided.
func ApplierDeleted() api.Status {
	return api.Status{State: api.StateError, Description: "what applied its target was deleted before Flagger answered"}
}
