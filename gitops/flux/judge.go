package flux

import (
	"strings"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// What every kind reads alike in a status.

// waitingReasons are Ready=False reasons that say Flux has not tried the revision yet: a
// dependency (dependsOn) or the source artifact is not ready. Flux retries them.
var waitingReasons = map[string]bool{
	meta.ProgressingReason:        true,
	meta.DependencyNotReadyReason: true,
	meta.ArtifactFailedReason:     true, // "Source artifact not found, retrying", same name in helm-controller
}

// readiness summarises the Ready and Stalled conditions of a status.
type readiness struct {
	current bool   // the status describes the current generation
	ready   bool   // Ready=True
	failed  bool   // Stalled=True, or Ready=False for a reason other than waiting
	message string // the condition message that says why
}

// judgedConditions are the conditions Judge reads; the cache keeps no other
// (CacheTransform).
var judgedConditions = []string{meta.ReadyCondition, meta.StalledCondition}

func readinessOf(s Status) readiness {
	r := readiness{current: s.ObservedGeneration == s.Generation}
	if c := s.Condition(meta.StalledCondition); c != nil && c.Status == metav1.ConditionTrue {
		r.failed, r.message = true, c.Message
		return r
	}
	ready := s.Condition(meta.ReadyCondition)
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

// Message returns what an object's Ready or Stalled condition says, for an answer that
// timed out.
func Message(o client.Object) string { return readinessOf(StatusOf(o)).message }

// ParseRevision splits a Flux revision ("main@sha1:<sha>", "v1.2.3@sha1:<sha>", a bare
// sha) into the name of the reference it was at ("" when none) and its commit ("" when it
// names none).
func ParseRevision(rev string) (name, commit string) {
	commit = revisionCommit(rev)
	if i := strings.LastIndexByte(rev, '@'); i > 0 && commit != "" {
		name = rev[:i]
	}
	return name, commit
}

// revisionCommit returns the commit a Flux revision names: "main@sha1:<sha>",
// "v1.2.3@sha1:<sha>", "sha256:<sha>", the older "main/<sha>", or the bare sha; "" when it
// names none.
func revisionCommit(rev string) string {
	i := strings.LastIndexAny(rev, ":/@")
	c := rev[i+1:]
	if len(c) != 40 && len(c) != 64 || strings.Trim(c, "0123456789abcdef") != "" {
		return ""
	}
	return c
}

// revisionTag returns the tag of an OCI revision "<tag>@sha256:<digest>".
func revisionTag(rev string) string {
	tag, _, _ := strings.Cut(rev, "@")
	return tag
}

// judgeSource judges a source fetched from the forge: Reached when Ready on the wanted
// revision; once it handled the request, Failed (its stage failed) or Elsewhere (Ready on
// another revision).
func judgeSource(s Status, w Want, action, stage, revision, commit, version string) Judgement {
	r := readinessOf(s)
	j := Judgement{Action: action, Revision: revision, Message: r.message, Stage: stage}
	switch {
	case !r.current:
	case r.ready && revision != "" && w.is(commit, version) && (!w.Any() || w.Handled(s)):
		j.Verdict = Reached
	case !w.Handled(s):
	case r.failed:
		j.Verdict = Failed
	case r.ready:
		j.Verdict = Elsewhere
	}
	return j
}

// through returns the judgement of the source an object builds from, when that source
// decides for it (it failed, or settled elsewhere); Pending otherwise.
func through(ref Ref, sources map[Ref]client.Object, w Want) Judgement {
	src, ok := sources[ref]
	if !ok {
		return Judgement{}
	}
	k, err := Lookup(ref.Kind)
	if err != nil {
		return Judgement{}
	}
	j := k.Judge(src, w, sources)
	switch j.Verdict {
	case Failed, Elsewhere:
		j.Via = append([]Ref{ref}, j.Via...)
		return j
	}
	return Judgement{}
}
