package gitops

import (
	"testing"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	sha    = "0123456789abcdef0123456789abcdef01234567"
	oldSHA = "fedcba9876543210fedcba9876543210fedcba98"
	newSHA = "1111111111111111111111111111111111111111"
	token  = "2026-11-26T12:00:00.000000001Z"
)

var req = Request{Token: token, Repository: "org/app", Ref: "refs/heads/main", SHA: sha,
	RequestedAt: time.Date(2026, 11, 26, 12, 0, 0, 1, time.UTC)}

func cond(typ string, status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg}
}

func ready(msg string) []metav1.Condition {
	return []metav1.Condition{cond(meta.ReadyCondition, metav1.ConditionTrue, meta.SucceededReason, msg)}
}

func notReady(reason, msg string) []metav1.Condition {
	return []metav1.Condition{cond(meta.ReadyCondition, metav1.ConditionFalse, reason, msg)}
}

func gitRepo(rev, handledToken string, conds []metav1.Condition) *sourcev1.GitRepository {
	r := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "app", Generation: 1,
		Annotations: map[string]string{meta.ReconcileRequestAnnotation: token}}}
	r.Status.ObservedGeneration = 1
	r.Status.Conditions = conds
	r.Status.LastHandledReconcileAt = handledToken
	if rev != "" {
		r.Status.Artifact = &meta.Artifact{Revision: rev}
	}
	return r
}

func kustomization(applied, attempted, handledToken string, conds []metav1.Condition) *kustomizev1.Kustomization {
	k := &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "app", Generation: 2,
		Annotations: map[string]string{meta.ReconcileRequestAnnotation: token}}}
	k.Status.ObservedGeneration = 2
	k.Status.Conditions = conds
	k.Status.LastAppliedRevision, k.Status.LastAttemptedRevision = applied, attempted
	k.Status.LastHandledReconcileAt = handledToken
	return k
}

func rev(s string) string { return "main@sha1:" + s }

func TestEvaluateGitRepository(t *testing.T) {
	tests := []struct {
		name  string
		obj   *sourcev1.GitRepository
		state string
	}{
		{"fetched the commit", gitRepo(rev(sha), token, ready("stored artifact")), StateSuccess},
		{"fetched it by interval before the request was handled", gitRepo(rev(sha), "", ready("stored artifact")), StateSuccess},
		{"still at the old commit, request not handled", gitRepo(rev(oldSHA), "earlier", ready("")), ""},
		{"fetch failed after the request", gitRepo(rev(oldSHA), token, notReady("GitOperationFailed", "auth failed")), StateFailure},
		{"failure that predates the request", gitRepo(rev(oldSHA), "earlier", notReady("GitOperationFailed", "auth failed")), ""},
		{"reconciling", gitRepo(rev(oldSHA), token, []metav1.Condition{cond(meta.ReadyCondition, metav1.ConditionUnknown, meta.ProgressingReason, "building")}), ""},
		{"settled on another revision", gitRepo("v1.3.0@sha1:"+newSHA, token, ready("")), StateWarning},
		{"stalled", gitRepo("", token, []metav1.Condition{cond(meta.StalledCondition, metav1.ConditionTrue, meta.InvalidURLReason, "bad url")}), StateFailure},
		{"someone requested after us and it was handled", func() *sourcev1.GitRepository {
			later := "2026-11-26T12:00:05Z"
			r := gitRepo(rev(oldSHA), later, notReady("GitOperationFailed", "timeout"))
			r.Annotations[meta.ReconcileRequestAnnotation] = later
			return r
		}(), StateFailure},
		{"the request before ours was handled, ours not yet (coalesced)", func() *sourcev1.GitRepository {
			earlier := "2026-11-26T11:59:59Z"
			r := gitRepo(rev(oldSHA), earlier, ready(""))
			r.Annotations[meta.ReconcileRequestAnnotation] = earlier
			return r
		}(), ""},
		{"someone else's token that is no time", func() *sourcev1.GitRepository {
			r := gitRepo(rev(oldSHA), "manual", ready(""))
			r.Annotations[meta.ReconcileRequestAnnotation] = "manual"
			return r
		}(), ""},
		{"status of an older generation", func() *sourcev1.GitRepository {
			r := gitRepo(rev(sha), token, ready(""))
			r.Generation = 2
			return r
		}(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := evaluate(tt.obj, req, related{}); got.State != tt.state {
				t.Fatalf("state %q (%s), want %q", got.State, got.Description, tt.state)
			}
		})
	}
}

func TestEvaluateKustomization(t *testing.T) {
	srcAt := func(s string) *sourcev1.GitRepository { return gitRepo(rev(s), token, ready("")) }
	tests := []struct {
		name   string
		obj    *kustomizev1.Kustomization
		source *sourcev1.GitRepository
		state  string
		desc   string
	}{
		{"applied", kustomization(rev(sha), rev(sha), token, ready("Applied revision")), srcAt(sha), StateSuccess, "applied main@sha1:0123456789ab"},
		{"failed on the commit", kustomization(rev(oldSHA), rev(sha), token, notReady("ReconciliationFailed", "dry-run failed: bad name")), srcAt(sha), StateFailure, "dry-run failed: bad name"},
		{"health check failed on the commit", kustomization(rev(oldSHA), rev(sha), token, notReady("HealthCheckFailed", "timeout waiting for Deployment")), srcAt(sha), StateFailure, "timeout waiting for Deployment"},
		{"reconciled before its source moved", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), srcAt(sha), "", ""},
		{"source still fetching", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), gitRepo(rev(oldSHA), "", ready("")), "", ""},
		{"dependency not ready is not a failure", kustomization(rev(oldSHA), rev(sha), token, notReady(meta.DependencyNotReadyReason, "dependency 'infra' is not ready")), srcAt(sha), "", ""},
		{"source artifact not ready is not a failure", kustomization(rev(oldSHA), rev(sha), token, notReady(meta.ArtifactFailedReason, "Source artifact not found, retrying")), srcAt(sha), "", ""},
		{"old failure is not ours", kustomization(rev(oldSHA), rev(oldSHA), "earlier", notReady("ReconciliationFailed", "old error")), gitRepo(rev(oldSHA), "", ready("")), "", ""},
		{"source failed to fetch", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), gitRepo(rev(oldSHA), token, notReady("GitOperationFailed", "auth failed")), StateFailure, "source GitRepository flux-system/app: fetch failed: auth failed"},
		{"source settled elsewhere", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), gitRepo(rev(newSHA), token, ready("")), StateWarning, "source GitRepository flux-system/app: not applied: Flux fetched main@sha1:111111111111"},
		{"source not found yet", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), nil, "", ""},
		{"never reconciled, source failed", func() *kustomizev1.Kustomization {
			k := kustomization("", "", "", nil)
			k.Status.ObservedGeneration = 0
			return k
		}(), gitRepo(rev(oldSHA), token, notReady("GitOperationFailed", "auth failed")), StateFailure, ""},
		{"status of an older generation is not a success", func() *kustomizev1.Kustomization {
			k := kustomization(rev(sha), rev(sha), token, ready(""))
			k.Generation = 3
			return k
		}(), srcAt(sha), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := evaluate(tt.obj, req, related{source: tt.source})
			if got.State != tt.state || (tt.desc != "" && got.Description != tt.desc) {
				t.Fatalf("got %q %q, want %q %q", got.State, got.Description, tt.state, tt.desc)
			}
		})
	}
}

func TestEvaluateHelm(t *testing.T) {
	chart := func(observed, version string, conds []metav1.Condition) *sourcev1.HelmChart {
		c := &sourcev1.HelmChart{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "apps-podinfo", Generation: 1,
			Annotations: map[string]string{meta.ReconcileRequestAnnotation: token}}}
		c.Spec.SourceRef = sourcev1.LocalHelmChartSourceReference{Kind: KindGitRepository, Name: "app"}
		c.Status.ObservedGeneration = 1
		c.Status.Conditions = conds
		c.Status.ObservedSourceArtifactRevision = observed
		c.Status.LastHandledReconcileAt = token
		if version != "" {
			c.Status.Artifact = &meta.Artifact{Revision: version}
		}
		return c
	}
	release := func(attempted, handledToken string, conds []metav1.Condition) *helmv2.HelmRelease {
		h := &helmv2.HelmRelease{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "podinfo", Generation: 1,
			Annotations: map[string]string{meta.ReconcileRequestAnnotation: token}}}
		h.Status.ObservedGeneration = 1
		h.Status.Conditions = conds
		h.Status.LastAttemptedRevision = attempted
		h.Status.LastHandledReconcileAt = handledToken
		return h
	}
	src := gitRepo(rev(sha), token, ready(""))
	t.Run("chart packaged from the commit", func(t *testing.T) {
		if v := evaluate(chart(rev(sha), "6.0.0", ready("")), req, related{source: src}); v.State != StateSuccess {
			t.Fatalf("got %+v", v)
		}
	})
	t.Run("chart build failed on the commit", func(t *testing.T) {
		if v := evaluate(chart(rev(oldSHA), "6.0.0", notReady("ChartPackageError", "Chart.yaml invalid")), req, related{source: src}); v.State != StateFailure {
			t.Fatalf("got %+v", v)
		}
	})
	tests := []struct {
		name  string
		hr    *helmv2.HelmRelease
		chart *sourcev1.HelmChart
		state string
	}{
		{"released the chart built from the commit", release("6.0.0", token, ready("Helm upgrade succeeded")), chart(rev(sha), "6.0.0", ready("")), StateSuccess},
		{"chart not rebuilt yet", release("6.0.0", token, ready("")), chart(rev(oldSHA), "6.0.0", ready("")), ""},
		{"release still on the previous chart version", release("5.9.0", token, ready("")), chart(rev(sha), "6.0.0", ready("")), ""},
		{"request not handled yet", release("6.0.0", "earlier", ready("")), chart(rev(sha), "6.0.0", ready("")), ""},
		{"upgrade failed", release("6.0.0", token, notReady("UpgradeFailed", "Helm upgrade failed: timed out")), chart(rev(sha), "6.0.0", ready("")), StateFailure},
		{"chart failed", release("5.9.0", token, ready("")), chart(rev(oldSHA), "5.9.0", notReady("ChartPackageError", "bad chart")), StateFailure},
		{"no chart yet", release("", "", nil), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v := evaluate(tt.hr, req, related{source: src, chart: tt.chart}); v.State != tt.state {
				t.Fatalf("got %+v, want %q", v, tt.state)
			}
		})
	}
}

func TestRevisionHas(t *testing.T) {
	for _, tt := range []struct {
		rev  string
		want bool
	}{
		{"main@sha1:" + sha, true},
		{"refs/heads/main@sha1:" + sha, true},
		{"v1.0.0@sha1:" + sha, true},
		{"sha1:" + sha, true},
		{"main/" + sha, true},
		{sha, true},
		{"main@sha1:" + oldSHA, false},
		{"main@sha1:x" + sha, false},
		{"", false},
	} {
		if got := revisionHas(tt.rev, sha); got != tt.want {
			t.Errorf("revisionHas(%q) = %v", tt.rev, got)
		}
	}
}

func TestTargetContext(t *testing.T) {
	got := Target{Cluster: "eu-1", Kind: KindKustomization, Namespace: "flux-system", Name: "apps"}.Context()
	if want := "flux/eu-1/kustomization/flux-system/apps"; got != want {
		t.Fatalf("context %q, want %q", got, want)
	}
}
