package gitops

import (
	"fmt"
	"strings"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Verdict is what Flux's status says about one request. State is empty while Flux has not
// answered yet; otherwise it is the final commit status state.
type Verdict struct {
	State       string
	Description string
}

// related holds the objects a verdict depends on besides the object itself.
type related struct {
	// source is the GitRepository a HelmChart, Kustomization or HelmRelease builds from.
	source *sourcev1.GitRepository
	// chart is a HelmRelease's HelmChart.
	chart *sourcev1.HelmChart
}

// waitingReasons are Ready=False reasons that say Flux has not tried the revision yet:
// a dependency (dependsOn) or the source artifact is not ready. Flux retries them.
var waitingReasons = map[string]bool{
	meta.ProgressingReason:        true,
	meta.DependencyNotReadyReason: true,
	meta.ArtifactFailedReason:     true, // "Source artifact not found, retrying", same name in helm-controller
}

// readiness summarises the Ready and Stalled conditions of an object.
type readiness struct {
	current bool   // status describes the current generation
	ready   bool   // Ready=True
	failed  bool   // Stalled=True, or Ready=False for a reason other than waiting
	message string // the condition message that says why
}

func readinessOf(o client.Object) readiness {
	c, ok := o.(interface{ GetConditions() []metav1.Condition })
	if !ok {
		return readiness{}
	}
	r := readiness{current: observedGeneration(o) == o.GetGeneration()}
	conds := c.GetConditions()
	if s := apimeta.FindStatusCondition(conds, meta.StalledCondition); s != nil && s.Status == metav1.ConditionTrue {
		r.failed, r.message = true, s.Message
		return r
	}
	ready := apimeta.FindStatusCondition(conds, meta.ReadyCondition)
	switch {
	case ready == nil:
	case ready.Status == metav1.ConditionTrue:
		r.ready, r.message = true, ready.Message
	case ready.Status == metav1.ConditionFalse && !waitingReasons[ready.Reason]:
		r.failed, r.message = true, ready.Message
	default:
		r.message = ready.Message
	}
	return r
}

// handled reports whether Flux has finished a reconciliation requested no earlier than req:
// ours, or one someone requested after us (the annotation then holds their token, an RFC
// 3339 time as flux-webhook and the flux CLI write it). A coalesced request whose
// requestedAt is not set yet is not handled, whatever Flux did for the request before it.
func handled(o client.Object, req Request) bool {
	last := lastHandled(o)
	if last == "" || req.PatchAt != nil {
		return false
	}
	if last == req.Token {
		return true
	}
	current := o.GetAnnotations()[meta.ReconcileRequestAnnotation]
	if current == req.Token || last != current {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, current)
	return err == nil && at.After(req.RequestedAt)
}

// revisionHas reports whether a Flux revision names commit sha: "main@sha1:<sha>",
// "v1.2.3@sha1:<sha>", "sha256:<sha>", the older "main/<sha>", or the bare sha.
func revisionHas(rev, sha string) bool {
	if sha == "" || !strings.HasSuffix(rev, sha) {
		return false
	}
	if len(rev) == len(sha) {
		return true
	}
	switch rev[len(rev)-len(sha)-1] {
	case ':', '/', '@':
		return true
	}
	return false
}

// evaluate decides what Flux's status says about req on o. It is pure: the reporter feeds it
// objects from the cache whenever one of them changes.
func evaluate(o client.Object, req Request, rel related) Verdict {
	switch o := o.(type) {
	case *sourcev1.GitRepository:
		return evaluateGitRepository(o, req)
	case *sourcev1.HelmChart:
		return evaluateHelmChart(o, req, rel)
	case *kustomizev1.Kustomization:
		return evaluateKustomization(o, req, rel)
	case *helmv2.HelmRelease:
		return evaluateHelmRelease(o, req, rel)
	}
	return Verdict{}
}

func evaluateGitRepository(o *sourcev1.GitRepository, req Request) Verdict {
	r := readinessOf(o)
	rev := ""
	if o.Status.Artifact != nil {
		rev = o.Status.Artifact.Revision
	}
	switch {
	case !r.current:
		return Verdict{}
	case r.ready && revisionHas(rev, req.SHA):
		return Verdict{StateSuccess, "fetched " + shortRevision(rev)}
	case !handled(o, req):
		return Verdict{} // whatever the status says predates the request
	case r.failed:
		return Verdict{StateFailure, "fetch failed: " + r.message}
	case r.ready:
		// Fetched after the push, but not this commit: a semver range chose another tag, or
		// the reference moved on without a hook flux-webhook saw.
		return Verdict{StateWarning, "not applied: Flux fetched " + shortRevision(rev)}
	}
	return Verdict{}
}

// viaSource is the verdict of an object built from a source that has not reached the pushed
// commit: failure when the source failed, warning when it settled on another revision, and
// no verdict yet otherwise.
func viaSource(src *sourcev1.GitRepository, req Request) Verdict {
	if src == nil {
		return Verdict{}
	}
	v := evaluateGitRepository(src, req)
	switch v.State {
	case StateFailure, StateWarning:
		v.Description = fmt.Sprintf("source GitRepository %s/%s: %s", src.Namespace, src.Name, v.Description)
		return v
	}
	return Verdict{}
}

func evaluateKustomization(o *kustomizev1.Kustomization, req Request, rel related) Verdict {
	r := readinessOf(o)
	switch {
	case !r.current:
	case r.ready && revisionHas(o.Status.LastAppliedRevision, req.SHA):
		return Verdict{StateSuccess, "applied " + shortRevision(o.Status.LastAppliedRevision)}
	case r.failed && revisionHas(o.Status.LastAttemptedRevision, req.SHA):
		return Verdict{StateFailure, r.message}
	}
	// Not at the commit yet. A Kustomization that reconciled before its source moved is
	// reconciled again by kustomize-controller when the source's revision changes; one
	// whose source failed on the commit never will be.
	return viaSource(rel.source, req)
}

func evaluateHelmChart(o *sourcev1.HelmChart, req Request, rel related) Verdict {
	r := readinessOf(o)
	switch {
	case !r.current:
	case r.ready && revisionHas(o.Status.ObservedSourceArtifactRevision, req.SHA) && o.Status.Artifact != nil:
		return Verdict{StateSuccess, fmt.Sprintf("packaged chart %s from %s", o.Status.Artifact.Revision, shortRevision(o.Status.ObservedSourceArtifactRevision))}
	case r.failed && handled(o, req) && rel.source != nil && rel.source.Status.Artifact != nil &&
		revisionHas(rel.source.Status.Artifact.Revision, req.SHA):
		return Verdict{StateFailure, r.message}
	}
	return viaSource(rel.source, req)
}

func evaluateHelmRelease(o *helmv2.HelmRelease, req Request, rel related) Verdict {
	r := readinessOf(o)
	chart := rel.chart
	if r.current && chart != nil && chart.Status.Artifact != nil && revisionHas(chart.Status.ObservedSourceArtifactRevision, req.SHA) && handled(o, req) {
		switch {
		case r.ready && o.Status.LastAttemptedRevision == chart.Status.Artifact.Revision:
			return Verdict{StateSuccess, fmt.Sprintf("released chart %s from %s", chart.Status.Artifact.Revision, shortRevision(chart.Status.ObservedSourceArtifactRevision))}
		case r.failed:
			return Verdict{StateFailure, r.message}
		}
	}
	if chart != nil {
		v := evaluateHelmChart(chart, req, rel)
		switch v.State {
		case StateFailure, StateWarning:
			v.Description = fmt.Sprintf("HelmChart %s/%s: %s", chart.Namespace, chart.Name, v.Description)
			return v
		}
		return Verdict{}
	}
	return viaSource(rel.source, req)
}

// shortRevision shortens the commit of a Flux revision to 12 characters for descriptions.
func shortRevision(rev string) string {
	i := strings.LastIndexAny(rev, ":/@")
	if sha := rev[i+1:]; len(sha) > 12 && i >= 0 {
		return rev[:i+1] + sha[:12]
	}
	return rev
}
