package flux

import (
	"testing"
	"time"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Deployments an applier applied are read from its inventory, and the cache keeps
// those entries only.
func TestAppliedDeployments(t *testing.T) {
	ks := &kustomizev1.Kustomization{Status: kustomizev1.KustomizationStatus{Inventory: &kustomizev1.ResourceInventory{Entries: []kustomizev1.ResourceRef{
		{ID: "apps_web_apps_Deployment", Version: "v1"},
		{ID: "apps_web_flagger.app_Canary", Version: "v1beta1"},
		{ID: "apps_web-config__ConfigMap", Version: "v1"},
		{ID: "_apps__Namespace", Version: "v1"},
		{ID: "other_api_apps_Deployment", Version: "v1"},
		{ID: "other_api_apps_StatefulSet", Version: "v1"},
		{ID: "bad_id_Deployment", Version: "v1"},
	}}}}
	want := []Ref{{"Deployment", "apps", "web"}, {"Deployment", "other", "api"}}
	if got := Applied(ks); !equalRefs(got, want) {
		t.Fatalf("Applied = %v, want %v", got, want)
	}
	if _, err := CacheTransform(ks); err != nil {
		t.Fatal(err)
	}
	if n := len(ks.Status.Inventory.Entries); n != 2 || !equalRefs(Applied(ks), want) {
		t.Fatalf("the cache kept %d inventory entries: %v", n, ks.Status.Inventory.Entries)
	}
	hr := &helmv2.HelmRelease{Status: helmv2.HelmReleaseStatus{Inventory: &helmv2.ResourceInventory{Entries: []helmv2.ResourceRef{
		{ID: "apps_web_apps_Deployment", Version: "v1"}, {ID: "apps_web__Service", Version: "v1"}}}}}
	if got := Applied(hr); !equalRefs(got, want[:1]) {
		t.Fatalf("HelmRelease applied %v", got)
	}
	_, _ = CacheTransform(hr)
	if len(hr.Status.Inventory.Entries) != 1 {
		t.Fatalf("HelmRelease inventory kept %v", hr.Status.Inventory.Entries)
	}
	c := &flaggerv1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "web"},
		Spec: flaggerv1.CanarySpec{TargetRef: flaggerv1.LocalObjectReference{Kind: "Deployment", Name: "web"}}}
	if got := (canary{}).Sources(c); !equalRefs(got, want[:1]) {
		t.Fatalf("canary sources %v", got)
	}
	c.Spec.TargetRef.Kind = "DaemonSet"
	if got := (canary{}).Sources(c); got != nil {
		t.Fatalf("a DaemonSet's canary is followed: %v", got)
	}
}

func equalRefs(a, b []Ref) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Flagger's verdict on the template a push applied, from the Canary's status now against
// its baseline, through every way Flagger gets there (its scheduler's phases and writes).
func TestJudgeCanary(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(s int) metav1.Time { return metav1.NewTime(t0.Add(time.Duration(s) * time.Second)) }
	cond := func(status corev1.ConditionStatus, reason string, s int) []flaggerv1.CanaryCondition {
		return []flaggerv1.CanaryCondition{{Type: flaggerv1.PromotedType, Status: status, Reason: reason, LastTransitionTime: at(s),
			Message: "Canary analysis " + reason}}
	}
	canaryWith := func(st flaggerv1.CanaryStatus) *flaggerv1.Canary {
		return &flaggerv1.Canary{Spec: flaggerv1.CanarySpec{TargetRef: flaggerv1.LocalObjectReference{Kind: "Deployment", Name: "web"},
			Analysis: &flaggerv1.CanaryAnalysis{Interval: "10s", Iterations: 10, Threshold: 2}}, Status: st}
	}
	// The baselines: a settled canary (Succeeded, spec A promoted), one mid-analysis of
	// spec B, one mid-promotion of B, one Failed on B.
	settled := CanaryBaseline{Spec: "A", Phase: "Succeeded", Transition: t0}
	analysingB := CanaryBaseline{Spec: "B", Phase: "Progressing", Transition: t0}
	promotingB := CanaryBaseline{Spec: "B", Phase: "Promoting", Transition: t0}
	failedB := CanaryBaseline{Spec: "B", Phase: "Failed", Transition: t0}
	fresh := CanaryBaseline{}
	for _, tt := range []struct {
		name     string
		base     CanaryBaseline
		st       flaggerv1.CanaryStatus
		want     Verdict
		quiet    bool
		progress string
	}{
		{"nothing new yet on a settled canary", settled,
			flaggerv1.CanaryStatus{Phase: "Succeeded", LastAppliedSpec: "A", LastPromotedSpec: "A", LastTransitionTime: at(0)}, Pending, true, ""},
		{"the new template taken up", settled,
			flaggerv1.CanaryStatus{Phase: "Progressing", LastAppliedSpec: "C", LastPromotedSpec: "A", Iterations: 3, LastTransitionTime: at(30),
				Conditions: cond("Unknown", "Progressing", 10)}, Pending, false, "analysis 3/10"},
		{"analysis with a failed check", settled,
			flaggerv1.CanaryStatus{Phase: "Progressing", LastAppliedSpec: "C", LastPromotedSpec: "A", Iterations: 3, FailedChecks: 1, LastTransitionTime: at(30)}, Pending, false, "analysis 3/10"},
		{"the new template promoted", settled,
			flaggerv1.CanaryStatus{Phase: "Succeeded", LastAppliedSpec: "C", LastPromotedSpec: "C", LastTransitionTime: at(90),
				Conditions: cond("True", "Succeeded", 90)}, Reached, false, ""},
		{"the new template rolled back", settled,
			flaggerv1.CanaryStatus{Phase: "Failed", LastAppliedSpec: "C", LastPromotedSpec: "A", LastTransitionTime: at(40),
				Conditions: cond("False", "Failed", 40)}, Failed, false, ""},
		{"the analysis running at the baseline promoted, no newer template", analysingB,
			flaggerv1.CanaryStatus{Phase: "Succeeded", LastAppliedSpec: "B", LastPromotedSpec: "B", LastTransitionTime: at(50)}, Reached, false, ""},
		{"a promotion in flight at the baseline ends: its template may not be the push's", promotingB,
			flaggerv1.CanaryStatus{Phase: "Succeeded", LastAppliedSpec: "B", LastPromotedSpec: "B", LastTransitionTime: at(20)}, Pending, true, ""},
		{"the analysis running at the baseline rolled back", analysingB,
			flaggerv1.CanaryStatus{Phase: "Failed", LastAppliedSpec: "B", LastPromotedSpec: "A", LastTransitionTime: at(20),
				Conditions: cond("False", "Failed", 20)}, Failed, false, ""},
		{"Failed before the push, not looked at since", failedB,
			flaggerv1.CanaryStatus{Phase: "Failed", LastAppliedSpec: "B", LastPromotedSpec: "A", LastTransitionTime: at(0),
				Conditions: cond("False", "Failed", -100)}, Pending, false, failedProgress},
		{"Failed before the push, a pass since found the same template", failedB,
			flaggerv1.CanaryStatus{Phase: "Failed", LastAppliedSpec: "B", LastPromotedSpec: "A", LastTransitionTime: at(10),
				Conditions: cond("False", "Failed", -100)}, Failed, false, ""},
		{"Failed before the push, a pass synced the new template on its way to analyse it", failedB,
			flaggerv1.CanaryStatus{Phase: "Failed", LastAppliedSpec: "C", LastPromotedSpec: "A", LastTransitionTime: at(10),
				Conditions: cond("False", "Failed", -100)}, Pending, false, failedProgress},
		{"Failed before the push, which reverted the target to the promoted template", failedB,
			flaggerv1.CanaryStatus{Phase: "Failed", LastAppliedSpec: "A", LastPromotedSpec: "A", LastTransitionTime: at(10),
				Conditions: cond("False", "Failed", -100)}, Reached, false, ""},
		{"a new canary initialized from the pushed template", fresh,
			flaggerv1.CanaryStatus{Phase: "Initialized", LastAppliedSpec: "C", LastPromotedSpec: "C", LastTransitionTime: at(5)}, Reached, false, ""},
		{"a new canary Flagger has not seen", fresh, flaggerv1.CanaryStatus{}, Pending, false, "waiting for Flagger to initialize the canary"},
		{"promoting", settled,
			flaggerv1.CanaryStatus{Phase: "Promoting", LastAppliedSpec: "C", LastPromotedSpec: "A", LastTransitionTime: at(80)}, Pending, false, "analysis passed, promoting"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j := JudgeCanary(canaryWith(tt.st), tt.base)
			if j.Verdict != tt.want || j.Quiet != tt.quiet || tt.progress != "" && j.Progress != tt.progress {
				t.Fatalf("JudgeCanary = %+v, want verdict %v quiet %v progress %q", j, tt.want, tt.quiet, tt.progress)
			}
		})
	}
}

func TestCanaryBaselineRoundTrip(t *testing.T) {
	for _, b := range []CanaryBaseline{
		{Spec: "5f7b9c", Phase: "Succeeded", Transition: time.Unix(1796000000, 0)},
		{},
	} {
		got, err := ParseBaseline(b.String())
		if err != nil || got.Spec != b.Spec || got.Phase != b.Phase || got.Transition.Unix() != b.Transition.Unix() {
			t.Errorf("%q: %+v %v", b.String(), got, err)
		}
	}
	for _, bad := range []string{"", "a b", "a b c d", "a b x"} {
		if _, err := ParseBaseline(bad); err == nil {
			t.Errorf("ParseBaseline(%q): no error", bad)
		}
	}
}

// How long a canary is waited for follows its analysis, and Flagger's bounds.
func TestCanaryDuration(t *testing.T) {
	deadline := int32(60)
	c := &flaggerv1.Canary{Spec: flaggerv1.CanarySpec{ProgressDeadlineSeconds: &deadline,
		Analysis: &flaggerv1.CanaryAnalysis{Interval: "1s", Iterations: 3, Threshold: 2}}}
	if got := CanaryInterval(c); got != 10*time.Second {
		t.Fatalf("interval %s: Flagger's minimum is 10s", got)
	}
	// quiet 2×10s+10s, deadline 60s, (3 steps + 2 checks + 4 promotion passes) × 10s
	if got, want := CanaryDuration(c), 30*time.Second+60*time.Second+90*time.Second; got != want {
		t.Fatalf("duration %s, want %s", got, want)
	}
	c.Spec.Analysis = &flaggerv1.CanaryAnalysis{Interval: "1m", StepWeight: 20, MaxWeight: 50}
	c.Spec.ProgressDeadlineSeconds = nil
	// quiet 2m10s, deadline 10m, (3 steps + 1 check + 4) × 1m
	if got, want := CanaryDuration(c), 130*time.Second+600*time.Second+8*time.Minute; got != want {
		t.Fatalf("duration %s, want %s", got, want)
	}
}
