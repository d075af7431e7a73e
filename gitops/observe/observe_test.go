package observe

import (
	"reflect"
	"testing"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/record"
)

const (
	sha    = "0123456789abcdef0123456789abcdef01234567"
	oldSHA = "fedcba9876543210fedcba9876543210fedcba98"
	newSHA = "1111111111111111111111111111111111111111"
	token  = "2026-11-26T12:00:00.000000001Z"
)

var req = record.Request{Token: token, Repository: "org/app", Ref: "refs/heads/main", SHA: sha,
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
	k.Spec.SourceRef = kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "app"}
	k.Status.ObservedGeneration = 2
	k.Status.Conditions = conds
	k.Status.LastAppliedRevision, k.Status.LastAttemptedRevision = applied, attempted
	k.Status.LastHandledReconcileAt = handledToken
	return k
}

func rev(s string) string { return "main@sha1:" + s }

// sources is what a cluster's cache has of what an object builds from (nil entries left
// out: not found).
func sources(objs ...client.Object) map[flux.Ref]client.Object {
	out := map[flux.Ref]client.Object{}
	for _, o := range objs {
		if o != nil && !reflect.ValueOf(o).IsNil() {
			out[flux.RefOf(o)] = o
		}
	}
	return out
}

func TestEvaluateGitRepository(t *testing.T) {
	tests := []struct {
		name  string
		obj   *sourcev1.GitRepository
		state string
	}{
		{"fetched the commit", gitRepo(rev(sha), token, ready("stored artifact")), api.StateSuccess},
		{"fetched it by interval before the request was handled", gitRepo(rev(sha), "", ready("stored artifact")), api.StateSuccess},
		{"still at the old commit, request not handled", gitRepo(rev(oldSHA), "earlier", ready("")), ""},
		{"fetch failed after the request", gitRepo(rev(oldSHA), token, notReady("GitOperationFailed", "auth failed")), api.StateFailure},
		{"failure that predates the request", gitRepo(rev(oldSHA), "earlier", notReady("GitOperationFailed", "auth failed")), ""},
		{"reconciling", gitRepo(rev(oldSHA), token, []metav1.Condition{cond(meta.ReadyCondition, metav1.ConditionUnknown, meta.ProgressingReason, "building")}), ""},
		{"settled on another revision", gitRepo("v1.3.0@sha1:"+newSHA, token, ready("")), api.StateWarning},
		{"stalled", gitRepo("", token, []metav1.Condition{cond(meta.StalledCondition, metav1.ConditionTrue, meta.InvalidURLReason, "bad url")}), api.StateFailure},
		{"someone requested after us and it was handled", func() *sourcev1.GitRepository {
			later := "2026-11-26T12:00:05Z"
			r := gitRepo(rev(oldSHA), later, notReady("GitOperationFailed", "timeout"))
			r.Annotations[meta.ReconcileRequestAnnotation] = later
			return r
		}(), api.StateFailure},
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
			if got := Evaluate(tt.obj, Want(req), nil); got.State != tt.state {
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
		{"applied", kustomization(rev(sha), rev(sha), token, ready("Applied revision")), srcAt(sha), api.StateSuccess, "applied main@sha1:0123456789ab"},
		{"failed on the commit", kustomization(rev(oldSHA), rev(sha), token, notReady("ReconciliationFailed", "dry-run failed: bad name")), srcAt(sha), api.StateFailure, "dry-run failed: bad name"},
		{"health check failed on the commit", kustomization(rev(oldSHA), rev(sha), token, notReady("HealthCheckFailed", "timeout waiting for Deployment")), srcAt(sha), api.StateFailure, "timeout waiting for Deployment"},
		{"reconciled before its source moved", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), srcAt(sha), "", ""},
		{"source still fetching", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), gitRepo(rev(oldSHA), "", ready("")), "", ""},
		{"dependency not ready is not a failure", kustomization(rev(oldSHA), rev(sha), token, notReady(meta.DependencyNotReadyReason, "dependency 'infra' is not ready")), srcAt(sha), "", ""},
		{"source artifact not ready is not a failure", kustomization(rev(oldSHA), rev(sha), token, notReady(meta.ArtifactFailedReason, "Source artifact not found, retrying")), srcAt(sha), "", ""},
		{"old failure is not ours", kustomization(rev(oldSHA), rev(oldSHA), "earlier", notReady("ReconciliationFailed", "old error")), gitRepo(rev(oldSHA), "", ready("")), "", ""},
		{"source failed to fetch", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), gitRepo(rev(oldSHA), token, notReady("GitOperationFailed", "auth failed")), api.StateFailure, "source GitRepository flux-system/app: fetch failed: auth failed"},
		{"source settled elsewhere", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), gitRepo(rev(newSHA), token, ready("")), api.StateWarning, "source GitRepository flux-system/app: not applied: Flux fetched main@sha1:111111111111"},
		{"source not found yet", kustomization(rev(oldSHA), rev(oldSHA), token, ready("")), nil, "", ""},
		{"never reconciled, source failed", func() *kustomizev1.Kustomization {
			k := kustomization("", "", "", nil)
			k.Status.ObservedGeneration = 0
			return k
		}(), gitRepo(rev(oldSHA), token, notReady("GitOperationFailed", "auth failed")), api.StateFailure, ""},
		{"status of an older generation is not a success", func() *kustomizev1.Kustomization {
			k := kustomization(rev(sha), rev(sha), token, ready(""))
			k.Generation = 3
			return k
		}(), srcAt(sha), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Evaluate(tt.obj, Want(req), sources(tt.source))
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
		c.Spec.SourceRef = sourcev1.LocalHelmChartSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "app"}
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
		h.Spec.Chart = &helmv2.HelmChartTemplate{Spec: helmv2.HelmChartTemplateSpec{Chart: "./charts/podinfo",
			SourceRef: &helmv2.CrossNamespaceObjectReference{Kind: sourcev1.GitRepositoryKind, Name: "app", Namespace: "flux-system"}}}
		h.Status.HelmChart = "flux-system/apps-podinfo"
		h.Status.ObservedGeneration = 1
		h.Status.Conditions = conds
		h.Status.LastAttemptedRevision = attempted
		h.Status.LastHandledReconcileAt = handledToken
		return h
	}
	src := gitRepo(rev(sha), token, ready(""))
	t.Run("chart packaged from the commit", func(t *testing.T) {
		if v := Evaluate(chart(rev(sha), "6.0.0", ready("")), Want(req), sources(src)); v.State != api.StateSuccess {
			t.Fatalf("got %+v", v)
		}
	})
	t.Run("chart build failed on the commit", func(t *testing.T) {
		if v := Evaluate(chart(rev(oldSHA), "6.0.0", notReady("ChartPackageError", "Chart.yaml invalid")), Want(req), sources(src)); v.State != api.StateFailure {
			t.Fatalf("got %+v", v)
		}
	})
	tests := []struct {
		name  string
		hr    *helmv2.HelmRelease
		chart *sourcev1.HelmChart
		state string
	}{
		{"released the chart built from the commit", release("6.0.0", token, ready("Helm upgrade succeeded")), chart(rev(sha), "6.0.0", ready("")), api.StateSuccess},
		{"chart not rebuilt yet", release("6.0.0", token, ready("")), chart(rev(oldSHA), "6.0.0", ready("")), ""},
		{"release still on the previous chart version", release("5.9.0", token, ready("")), chart(rev(sha), "6.0.0", ready("")), ""},
		{"request not handled yet", release("6.0.0", "earlier", ready("")), chart(rev(sha), "6.0.0", ready("")), ""},
		{"upgrade failed", release("6.0.0", token, notReady("UpgradeFailed", "Helm upgrade failed: timed out")), chart(rev(sha), "6.0.0", ready("")), api.StateFailure},
		{"chart failed", release("5.9.0", token, ready("")), chart(rev(oldSHA), "5.9.0", notReady("ChartPackageError", "bad chart")), api.StateFailure},
		{"no chart yet", release("", "", nil), nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v := Evaluate(tt.hr, Want(req), sources(src, tt.chart)); v.State != tt.state {
				t.Fatalf("got %+v, want %q", v, tt.state)
			}
		})
	}
}
