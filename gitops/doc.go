// Package gitops is the Flux side of flux-webhook. Its packages, each with one reason to
// change:
//
//   - flux: the model of the Flux kinds (one adapter per kind: making, indexing, matching,
//     what builds from what, how Flux says it is done);
//   - record: the request/record protocol (what is written on each Flux object and, per
//     push, in the service's namespace; sealed, bounded, superseded, repeated);
//   - cluster: the clusters (the local one and those registered by kubeconfig Secrets, the
//     Flux kinds each serves, metadata patches, sealed records);
//   - request: turning a verified push into reconcile requests, sources first;
//   - observe: how far Flux is with a request, and every text that says so;
//   - report: posting what observe says as commit statuses, exactly once;
//   - jobs: region-wide reconciles for platform teams.
//
// This package holds what they share: a push, as the Gitea side hands it over, and what a
// push did.
package gitops

import (
	"time"

	"github.com/openova-io/flux-webhook/api"
)

// Push is what the Flux side needs of a verified push.
type Push struct {
	// Delivery identifies the webhook delivery (X-Gitea-Delivery) or the Actions run.
	Delivery string
	// Repository is the pushed repository's full name, "owner/name".
	Repository string
	// URLs are the repository's clone, SSH and HTML URLs as Gitea reports them.
	URLs []string
	// Ref is the full pushed reference, e.g. "refs/heads/main".
	Ref string
	// SHA is the commit the reference now points at; Before the one it pointed at.
	SHA    string
	Before string
	// Head, when set, is where the reference has moved since the push (a later push, before
	// this one's delivery was verified): every object it feeds is owed a warning, nothing is
	// requested.
	Head string
	// Public says the forge shows the repository (Subject) to anyone: every registered
	// cluster follows the push. Otherwise only those granted it do (the local cluster
	// follows every push). False when the forge was not asked.
	Public bool
	// OCI, when set, is the registry push this is: the Flux objects fed are those pulling
	// that tag of that OCI repository. Repository, Ref and SHA are then the Git repository,
	// reference and commit the artifact was built from, as it records them; all "" when it
	// records none (the results are then in the stream and the logs only: there is no
	// commit to post them on).
	OCI *OCI
}

// OCI is a tag pushed to an OCI repository of the forge's registry.
type OCI struct {
	// Package is the OCI repository's path in the registry, "owner/name".
	Package string
	// URL is the OCI repository, "oci://host/owner/name".
	URL string
	// Tag is the tag (or chart version) pushed.
	Tag string
}

// Subject is the repository a registered cluster must be granted (unless it is Public) to
// follow the push: the pushed repository; for a registry push, the repository its artifact
// names (Repository), else its package ("owner/name"), which an owner's grant covers.
func (p Push) Subject() string {
	if p.Repository == "" && p.OCI != nil {
		return p.OCI.Package
	}
	return p.Repository
}

// What names what was pushed, for answers and logs: a reference of a repository, or a tag
// of an OCI repository.
func (p Push) What() string {
	if p.OCI != nil {
		return "tag " + p.OCI.Tag + " of " + p.OCI.URL
	}
	return p.Ref + " of " + p.Repository
}

// Result is what a push did in every cluster.
type Result struct {
	// Token is the requestedAt value of the push, RequestedAt its time.
	Token       string
	RequestedAt time.Time
	Targets     []api.Outcome
	// Clusters says how many targets the push matched in each cluster.
	Clusters []api.ClusterTargets
	// Repeat is set when the push was accepted before (its other delivery, a repeat).
	Repeat bool
	// Unreachable lists the clusters that could not be asked at all: their caches never
	// synced, so which of their objects the push feeds is unknown.
	Unreachable []api.ClusterError
}
