package report_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// canaryCluster is an API server with the Flux and Flagger CRDs, as a cluster whose Flux
// applies Deployments Flagger analyses; the test writes Flux's and Flagger's status.
type canaryCluster struct {
	kube    *testenv.Kube
	cluster *cluster.Cluster
	ns      string
}

func newCanaryCluster(t *testing.T) *canaryCluster {
	t.Helper()
	dir, err := testenv.Paths().RequireFlagger()
	if err != nil {
		t.Fatal(err)
	}
	k := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	if err := k.InstallCRDs(t.Context(), filepath.Join(dir, "crd.yaml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := fluxtest.StartCluster(ctx, "canaries", k)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Serves(flaggerv1.CanaryKind) {
		t.Fatalf("the cluster does not serve canaries: %v", c.Kinds())
	}
	cc := &canaryCluster{kube: k, cluster: c, ns: "apps"}
	if err := k.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cc.ns}}); err != nil {
		t.Fatal(err)
	}
	return cc
}

// app creates a GitRepository of repo, Kustomizations (each applying the Deployment "web"
// in its inventory), the Deployment, its primary and its Canary, settled on spec s0.
func (cc *canaryCluster) app(t *testing.T, repo string, kustomizations ...string) {
	t.Helper()
	c := cc.kube.Client
	objs := []client.Object{fluxtest.GitRepository(cc.ns, "app", "https://"+fluxtest.ForgeHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"})}
	for _, name := range kustomizations {
		objs = append(objs, fluxtest.Kustomization(cc.ns, name, "", "app"))
	}
	for _, name := range []string{"web", "web-primary"} {
		labels := map[string]string{"app": name}
		objs = append(objs, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: cc.ns, Name: name}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "example.org/web:0"}}}}}})
	}
	objs = append(objs, &flaggerv1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: cc.ns, Name: "web"}, Spec: flaggerv1.CanarySpec{
		TargetRef: flaggerv1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"},
		Service:   flaggerv1.CanaryService{Port: 80},
		Analysis:  &flaggerv1.CanaryAnalysis{Interval: "10s", Iterations: 2, Threshold: 1}}})
	for _, o := range objs {
		if err := c.Create(t.Context(), o); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range kustomizations {
		if err := testenv.SetKustomizationInventory(t.Context(), c, client.ObjectKey{Namespace: cc.ns, Name: name}, cc.ns+"_web_apps_Deployment"); err != nil {
			t.Fatal(err)
		}
	}
	cc.flagger(t, "s0", "s0", flaggerv1.CanaryPhaseSucceeded, 0)
	fluxtest.WaitFor(t, "the cache has the canary", func() bool {
		return cc.cluster.GetCache().Get(t.Context(), client.ObjectKey{Namespace: cc.ns, Name: "web"}, &flaggerv1.Canary{}) == nil
	})
}

// flagger writes the Canary's status as Flagger does.
func (cc *canaryCluster) flagger(t *testing.T, applied, promoted string, phase flaggerv1.CanaryPhase, iterations int) {
	t.Helper()
	c := &flaggerv1.Canary{}
	key := client.ObjectKey{Namespace: cc.ns, Name: "web"}
	if err := cc.kube.Client.Get(t.Context(), key, c); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	status := map[flaggerv1.CanaryPhase]corev1.ConditionStatus{flaggerv1.CanaryPhaseSucceeded: corev1.ConditionTrue, flaggerv1.CanaryPhaseFailed: corev1.ConditionFalse}[phase]
	if status == "" {
		status = corev1.ConditionUnknown
	}
	message := map[flaggerv1.CanaryPhase]string{flaggerv1.CanaryPhaseSucceeded: "Canary analysis completed successfully, promotion finished.",
		flaggerv1.CanaryPhaseFailed: "Canary analysis failed, Deployment scaled to zero."}[phase]
	c.Status = flaggerv1.CanaryStatus{Phase: phase, LastAppliedSpec: applied, LastPromotedSpec: promoted, Iterations: iterations, LastTransitionTime: now,
		Conditions: []flaggerv1.CanaryCondition{{Type: flaggerv1.PromotedType, Status: status, Reason: string(phase), Message: message,
			LastUpdateTime: now, LastTransitionTime: now}}}
	if err := cc.kube.Client.Status().Update(t.Context(), c); err != nil {
		t.Fatal(err)
	}
}

// promote has the primary run image, as Flagger's promotion copies the target's template.
func (cc *canaryCluster) promote(t *testing.T, image string) {
	t.Helper()
	for _, name := range []string{"web", "web-primary"} {
		d := &appsv1.Deployment{}
		if err := cc.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: cc.ns, Name: name}, d); err != nil {
			t.Fatal(err)
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		if err := cc.kube.Client.Update(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
}

func (cc *canaryCluster) apply(t *testing.T, name, sha string) {
	t.Helper()
	rev := testenv.GitRevision("main", sha)
	if err := testenv.MarkGitRepositoryReady(t.Context(), cc.kube.Client, client.ObjectKey{Namespace: cc.ns, Name: "app"}, rev, ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationApplied(t.Context(), cc.kube.Client, client.ObjectKey{Namespace: cc.ns, Name: name}, rev, ""); err != nil {
		t.Fatal(err)
	}
}

// canaryRun is an app of a new repository on a canaryCluster, with a reporter and a
// requester of its own.
type canaryRun struct {
	cc               *canaryCluster
	rec              *fluxtest.Recorder
	r                *fluxtest.Requesting
	repo             string
	canaryCtx, ksCtx string // the canary's and the Kustomization's status contexts
}

// reported starts an app of a new repository named prefix+random in cc, a reporter that
// waits resultTimeout for results, and a requester.
func (cc *canaryCluster) reported(t *testing.T, prefix string, resultTimeout time.Duration) *canaryRun {
	t.Helper()
	run := &canaryRun{cc: cc, rec: &fluxtest.Recorder{}, repo: prefix + fluxtest.RandomHex(3),
		canaryCtx: api.Target{Cluster: "canaries", Kind: flaggerv1.CanaryKind, Namespace: cc.ns, Name: "web"}.Context(),
		ksCtx:     api.Target{Cluster: "canaries", Kind: kustomizev1.KustomizationKind, Namespace: cc.ns, Name: "app"}.Context()}
	cc.app(t, run.repo, "app")
	runReporter(t, &report.Reporter{Cluster: cc.cluster, Poster: run.rec, Lookup: run.rec, ResultTimeout: resultTimeout})
	run.r = fluxtest.NewRequester(t, cluster.NewSet(cc.cluster))
	return run
}

// pushApplied requests a push of a new commit, applies it as Flux would and waits for the
// Kustomization's success; it returns the commit.
func (run *canaryRun) pushApplied(t *testing.T) string {
	t.Helper()
	sha := fluxtest.NewSHA()
	if _, err := run.r.Request(t.Context(), fluxtest.PushOf(run.repo, "refs/heads/main", sha)); err != nil {
		t.Fatal(err)
	}
	run.cc.apply(t, "app", sha)
	fluxtest.WaitStates(t, run.rec, sha, run.ksCtx, api.StatePending, api.StateSuccess)
	return sha
}

// A canary of the Deployment a Kustomization applied is followed from the moment the
// Kustomization reached the commit: pending with Flagger's progress (posted before the
// Kustomization's own final status), then promoted, on that commit; a push overtaken by a
// newer one before Flagger decided is a warning on the canary's context.
func TestReportCanary(t *testing.T) {
	fluxtest.Integration(t)
	cc := newCanaryCluster(t)
	run := cc.reported(t, "org/canary-", time.Minute)
	rec, r, repo, canaryCtx, ksCtx := run.rec, run.r, run.repo, run.canaryCtx, run.ksCtx

	sha := run.pushApplied(t)
	if got := rec.States(sha, canaryCtx); len(got) != 1 || got[0] != api.StatePending {
		t.Fatalf("the canary's first status did not come before the Kustomization's final one: %v", got)
	}
	if d := rec.Find(sha, canaryCtx).Description; d != "waiting for Flagger to look at the target" {
		t.Fatalf("first pending %q", d)
	}
	cc.flagger(t, "s1", "s0", flaggerv1.CanaryPhaseProgressing, 1)
	fluxtest.WaitFor(t, "analysis 1/2", func() bool { return rec.Find(sha, canaryCtx).Description == "analysis 1/2" })
	cc.promote(t, "example.org/web:1")
	cc.flagger(t, "s1", "s1", flaggerv1.CanaryPhaseSucceeded, 0)
	fluxtest.WaitStates(t, rec, sha, canaryCtx, api.StatePending, api.StatePending, api.StateSuccess)
	if d := rec.Find(sha, canaryCtx).Description; d != "promoted example.org/web:1" {
		t.Fatalf("final %q", d)
	}

	// Overtaken: the next push is applied, Flagger takes its template up; a third push is
	// applied before Flagger decides.
	time.Sleep(2100 * time.Millisecond) // past the coalescing window
	second := fluxtest.NewSHA()
	if _, err := r.Request(t.Context(), fluxtest.PushOf(repo, "refs/heads/main", second)); err != nil {
		t.Fatal(err)
	}
	cc.apply(t, "app", second)
	cc.flagger(t, "s2", "s1", flaggerv1.CanaryPhaseProgressing, 1)
	fluxtest.WaitFor(t, "analysis of the second push", func() bool {
		s := rec.Find(second, canaryCtx)
		return s != nil && s.Description == "analysis 1/2"
	})
	time.Sleep(2100 * time.Millisecond)
	third := fluxtest.NewSHA()
	if _, err := r.Request(t.Context(), fluxtest.PushOf(repo, "refs/heads/main", third)); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "the overtaken canary's warning", func() bool {
		s := rec.Find(second, canaryCtx)
		return s != nil && s.State == api.StateWarning
	})
	if d := rec.Find(second, canaryCtx).Description; d != "superseded by "+third[:12] {
		t.Fatalf("overtaken: %q", d)
	}
	if got := rec.States(second, ksCtx); strings.Join(got, ",") != "pending,success" {
		t.Fatalf("the overtaken push's Kustomization: %v", got)
	}
}

// A canary's verdict is waited for as long as its analysis may take (CanaryDuration), not
// --result-timeout alone: Flagger decides well after the result timeout, and the status is
// its verdict, not an error.
func TestCanaryOutlivesResultTimeout(t *testing.T) {
	fluxtest.Integration(t)
	cc := newCanaryCluster(t)
	const resultTimeout = 2 * time.Second
	run := cc.reported(t, "org/canary-slow-", resultTimeout)
	rec, canaryCtx := run.rec, run.canaryCtx

	sha := run.pushApplied(t)
	cc.flagger(t, "s1", "s0", flaggerv1.CanaryPhaseProgressing, 1)
	fluxtest.WaitFor(t, "analysis 1/2", func() bool {
		s := rec.Find(sha, canaryCtx)
		return s != nil && s.Description == "analysis 1/2"
	})
	time.Sleep(3 * resultTimeout) // the result timeout is long past
	if got := rec.States(sha, canaryCtx); len(got) == 0 || got[len(got)-1] != api.StatePending {
		t.Fatalf("the canary's statuses %v past the result timeout, while Flagger analyses: want it still pending", got)
	}
	cc.promote(t, "example.org/web:1")
	cc.flagger(t, "s1", "s1", flaggerv1.CanaryPhaseSucceeded, 0)
	fluxtest.WaitFor(t, "Flagger's verdict", func() bool {
		got := rec.States(sha, canaryCtx)
		return len(got) > 0 && got[len(got)-1] != api.StatePending
	})
	if s := rec.Find(sha, canaryCtx); s.State != api.StateSuccess || s.Description != "promoted example.org/web:1" {
		t.Fatalf("final %s %q, want success \"promoted example.org/web:1\"", s.State, s.Description)
	}
}

// With statuses per cluster, the cluster's status counts each canary among its results and
// waits for Flagger's verdict: "3/3 ready" only once the canary is promoted.
func TestReportCanaryPerCluster(t *testing.T) {
	fluxtest.Integration(t)
	cc := newCanaryCluster(t)
	repo := "org/canary-agg-" + fluxtest.RandomHex(3)
	cc.app(t, repo, "app")
	rec := &fluxtest.Recorder{}
	r := fluxtest.NewRequester(t, cluster.NewSet(cc.cluster), func(r *request.Requester) { r.Granularity = request.PerCluster })
	agg := &report.Aggregator{Store: r.Store, Poster: rec, Lookup: rec, ResultTimeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = agg.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	runReporter(t, &report.Reporter{Cluster: cc.cluster, Poster: rec, Lookup: rec, Aggregator: agg, ResultTimeout: time.Minute})

	sha := fluxtest.NewSHA()
	if _, err := r.Request(t.Context(), fluxtest.PushOf(repo, "refs/heads/main", sha)); err != nil {
		t.Fatal(err)
	}
	const clusterCtx = "flux/canaries"
	fluxtest.WaitStates(t, rec, sha, clusterCtx, api.StatePending)
	cc.apply(t, "app", sha)
	cc.flagger(t, "s1", "s0", flaggerv1.CanaryPhaseProgressing, 1)
	time.Sleep(3 * time.Second) // several rounds of the aggregator
	if got := rec.States(sha, clusterCtx); len(got) != 1 {
		t.Fatalf("the cluster's status is final while Flagger analyses: %v %q", got, rec.Find(sha, clusterCtx).Description)
	}
	cc.promote(t, "example.org/web:1")
	cc.flagger(t, "s1", "s1", flaggerv1.CanaryPhaseSucceeded, 0)
	fluxtest.WaitStates(t, rec, sha, clusterCtx, api.StatePending, api.StateSuccess)
	if d := rec.Find(sha, clusterCtx).Description; d != "3/3 ready" {
		t.Fatalf("cluster status %q, want the canary counted: 3/3 ready", d)
	}

	// A rollback fails the cluster's status, naming the canary.
	time.Sleep(2100 * time.Millisecond)
	bad := fluxtest.NewSHA()
	if _, err := r.Request(t.Context(), fluxtest.PushOf(repo, "refs/heads/main", bad)); err != nil {
		t.Fatal(err)
	}
	cc.apply(t, "app", bad)
	cc.flagger(t, "s2", "s1", flaggerv1.CanaryPhaseProgressing, 1)
	time.Sleep(time.Second)
	cc.flagger(t, "s2", "s1", flaggerv1.CanaryPhaseFailed, 0)
	fluxtest.WaitStates(t, rec, bad, clusterCtx, api.StatePending, api.StateFailure)
	want := fmt.Sprintf("2/3 ready, 1 failed: canary/%s/web: rolled back: Canary analysis failed, Deployment scaled to zero.", cc.ns)
	if d := rec.Find(bad, clusterCtx).Description; d != want {
		t.Fatalf("cluster status %q, want %q", d, want)
	}
}
