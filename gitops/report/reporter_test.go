package report_test

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcluster "sigs.k8s.io/controller-runtime/pkg/cluster"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// startReporter runs a reporter on the package's cluster until the test ends.
func startReporter(t *testing.T, rec *fluxtest.Recorder, timeout time.Duration) {
	t.Helper()
	runReporter(t, &report.Reporter{Cluster: fluxtest.Local, Poster: rec, Lookup: rec, ResultTimeout: timeout})
}

// runReporter runs r until the test ends.
func runReporter(t *testing.T, r *report.Reporter) {
	t.Helper()
	c, err := r.Controller()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// pipeline is one GitRepository "app" and one Kustomization "app" built from it, pushed to.
type pipeline struct {
	ns, repo, sha string
	gr, ks        client.ObjectKey
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	p := &pipeline{ns: fluxtest.Namespace(t), repo: "org/rep-" + fluxtest.RandomHex(3)}
	p.gr = client.ObjectKey{Namespace: p.ns, Name: "app"}
	p.ks = client.ObjectKey{Namespace: p.ns, Name: "app"}
	fluxtest.Create(t, fluxtest.GitRepository(p.ns, "app", "https://"+fluxtest.ForgeHost+"/"+p.repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
		fluxtest.Kustomization(p.ns, "app", "", "app"))
	return p
}

func (p *pipeline) push(t *testing.T) string {
	t.Helper()
	p.sha = fluxtest.NewSHA()
	res, err := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local)).Request(t.Context(), fluxtest.PushOf(p.repo, "refs/heads/main", p.sha))
	out := res.Targets
	if err != nil || len(out) != 2 {
		t.Fatalf("request: %v %v", fluxtest.Targets(out), err)
	}
	return p.sha
}

func (p *pipeline) ctx(kind string) string {
	return api.Target{Cluster: "local", Kind: kind, Namespace: p.ns, Name: "app"}.Context()
}

func TestReportSuccess(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	fluxtest.WaitStates(t, rec, sha, p.ctx(sourcev1.GitRepositoryKind), api.StatePending)
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending)

	// Flux: the Kustomization first reconciles at the old revision (before its source moved),
	// then the source fetches the commit, then the Kustomization applies it.
	ctx := t.Context()
	if err := testenv.MarkKustomizationApplied(ctx, fluxtest.Kube.Client, p.ks, testenv.GitRevision("main", fluxtest.NewSHA()), ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := rec.States(sha, p.ctx(kustomizev1.KustomizationKind)); !slices.Equal(got, []string{api.StatePending}) {
		t.Fatalf("reported before the source moved: %v", got)
	}
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, p.gr, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, p.ctx(sourcev1.GitRepositoryKind), api.StatePending, api.StateSuccess)
	if err := testenv.MarkKustomizationApplied(ctx, fluxtest.Kube.Client, p.ks, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending, api.StateSuccess)
	if d := rec.Find(sha, p.ctx(kustomizev1.KustomizationKind)).Description; d != "applied main@sha1:"+sha[:12] {
		t.Fatalf("description %q", d)
	}
	// The record says it is done, so a restarted reporter has nothing to do.
	ks := &kustomizev1.Kustomization{}
	if err := fluxtest.Kube.Client.Get(ctx, p.ks, ks); err != nil {
		t.Fatal(err)
	}
	if r, _ := record.Parse(ks.Annotations); r.Pending() || !r.Current.Final || r.Current.Posted != api.StateSuccess {
		t.Fatalf("record %+v", r.Current)
	}
}

func TestReportFailure(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	ctx := t.Context()
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, p.gr, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	msg := `ConfigMap/default/Bad_Name dry-run failed: metadata.name: Invalid value: "Bad_Name"`
	if err := testenv.MarkKustomizationFailed(ctx, fluxtest.Kube.Client, p.ks, testenv.GitRevision("main", sha), "", "ReconciliationFailed", msg); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending, api.StateFailure)
	if d := rec.Find(sha, p.ctx(kustomizev1.KustomizationKind)).Description; d != msg {
		t.Fatalf("description %q, want Flux's message", d)
	}
}

func TestReportSourceFailure(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	if err := testenv.MarkGitRepositoryFailed(t.Context(), fluxtest.Kube.Client, p.gr, "", "GitOperationFailed", "failed to checkout: authentication required"); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, p.ctx(sourcev1.GitRepositoryKind), api.StatePending, api.StateFailure)
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending, api.StateFailure)
	if d := rec.Find(sha, p.ctx(kustomizev1.KustomizationKind)).Description; !strings.Contains(d, "authentication required") {
		t.Fatalf("description %q", d)
	}
}

func TestReportTimeout(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, 2*time.Second)
	p := newPipeline(t)
	sha := p.push(t)
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending, api.StateError)
	if d := rec.Find(sha, p.ctx(kustomizev1.KustomizationKind)).Description; !strings.HasPrefix(d, "no answer from Flux within 2s") {
		t.Fatalf("description %q", d)
	}
}

func TestReportSuperseded(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	first := p.push(t)
	// Both pending before the next push (a request superseded before its pending is posted
	// gets its warning only).
	fluxtest.WaitStates(t, rec, first, p.ctx(sourcev1.GitRepositoryKind), api.StatePending)
	fluxtest.WaitStates(t, rec, first, p.ctx(kustomizev1.KustomizationKind), api.StatePending)
	second := p.push(t)
	for _, kind := range []string{sourcev1.GitRepositoryKind, kustomizev1.KustomizationKind} {
		fluxtest.WaitStates(t, rec, first, p.ctx(kind), api.StatePending, api.StateWarning)
		if d := rec.Find(first, p.ctx(kind)).Description; d != "superseded by "+second[:12] {
			t.Fatalf("description %q", d)
		}
		fluxtest.WaitStates(t, rec, second, p.ctx(kind), api.StatePending)
	}
	ctx := t.Context()
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, p.gr, testenv.GitRevision("main", second), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationApplied(ctx, fluxtest.Kube.Client, p.ks, testenv.GitRevision("main", second), ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, second, p.ctx(kustomizev1.KustomizationKind), api.StatePending, api.StateSuccess)
	fluxtest.WaitStates(t, rec, first, p.ctx(kustomizev1.KustomizationKind), api.StatePending, api.StateWarning)
}

func TestReportHelmRelease(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, time.Minute)
	src, apps := fluxtest.Namespace(t), fluxtest.Namespace(t)
	repo := "org/helm-" + fluxtest.RandomHex(3)
	fluxtest.Create(t, fluxtest.GitRepository(src, "app", "https://"+fluxtest.ForgeHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
		fluxtest.HelmReleaseFromGit(apps, "podinfo", src, "app"), fluxtest.HelmChart(src, apps+"-podinfo", "app"))
	sha := fluxtest.NewSHA()
	if _, err := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local)).Request(t.Context(), fluxtest.PushOf(repo, "refs/heads/main", sha)); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	chart := client.ObjectKey{Namespace: src, Name: apps + "-podinfo"}
	hr := client.ObjectKey{Namespace: apps, Name: "podinfo"}
	hrCtx := api.Target{Cluster: "local", Kind: helmv2.HelmReleaseKind, Namespace: apps, Name: "podinfo"}.Context()
	chartCtx := api.Target{Cluster: "local", Kind: sourcev1.HelmChartKind, Namespace: src, Name: chart.Name}.Context()
	// helm-controller handles the request before source-controller rebuilt the chart: the
	// release is still the previous chart, not built from the pushed commit.
	if err := testenv.MarkHelmChartReady(ctx, fluxtest.Kube.Client, chart, testenv.GitRevision("main", fluxtest.NewSHA()), "6.0.0", "earlier"); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkHelmReleaseReady(ctx, fluxtest.Kube.Client, hr, chart, "6.0.0", ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, hrCtx, api.StatePending)
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, client.ObjectKey{Namespace: src, Name: "app"}, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkHelmChartReady(ctx, fluxtest.Kube.Client, chart, testenv.GitRevision("main", sha), "6.1.0", ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, chartCtx, api.StatePending, api.StateSuccess)
	time.Sleep(300 * time.Millisecond)
	if got := rec.States(sha, hrCtx); !slices.Equal(got, []string{api.StatePending}) {
		t.Fatalf("release reported before it released 6.1.0: %v", got)
	}
	if err := testenv.MarkHelmReleaseReady(ctx, fluxtest.Kube.Client, hr, chart, "6.1.0", ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, hrCtx, api.StatePending, api.StateSuccess)
	if d := rec.Find(sha, hrCtx).Description; d != "released chart 6.1.0 from main@sha1:"+sha[:12] {
		t.Fatalf("description %q", d)
	}
}

// A reporter that stopped after recording its intent to post a final status, but maybe
// before posting it, is replaced: the new one asks Gitea and does not post twice.
func TestReportTakeoverDoesNotRepost(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	p := newPipeline(t)
	sha := p.push(t)
	ctx := t.Context()
	final := api.Status{State: api.StateSuccess, Description: "applied main@sha1:" + sha[:12]}
	// The previous leader: posted pending, recorded the intent, posted success, and died
	// before recording that it did.
	for _, key := range []client.ObjectKey{p.ks} {
		ks := &kustomizev1.Kustomization{}
		if err := fluxtest.Kube.Client.Get(ctx, key, ks); err != nil {
			t.Fatal(err)
		}
		r, _ := record.Parse(ks.Annotations)
		r.Current.Posted, r.Current.Intent = api.StatePending, &final
		base := ks.DeepCopy()
		if err := fluxtest.Seal(fluxtest.Local, ks, r); err != nil {
			t.Fatal(err)
		}
		if err := fluxtest.Kube.Client.Patch(ctx, ks, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range []api.Status{{State: api.StatePending}, final} {
		_ = rec.PostStatus(ctx, report.CommitStatus{Repository: p.repo, SHA: sha, Context: p.ctx(kustomizev1.KustomizationKind), Status: st})
	}
	startReporter(t, rec, time.Minute)
	fluxtest.WaitFor(t, "record final", func() bool {
		ks := &kustomizev1.Kustomization{}
		if err := fluxtest.Kube.Client.Get(ctx, p.ks, ks); err != nil {
			return false
		}
		r, _ := record.Parse(ks.Annotations)
		return r.Current.Final && r.Current.Posted == api.StateSuccess
	})
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending, api.StateSuccess)
}

func TestReportDeleted(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending)
	if err := fluxtest.Kube.Client.Delete(t.Context(), &kustomizev1.Kustomization{ObjectMeta: fluxtest.MetaOf(p.ks)}); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending, api.StateError)
	if d := rec.Find(sha, p.ctx(kustomizev1.KustomizationKind)).Description; d != "deleted before Flux answered" {
		t.Fatalf("description %q", d)
	}
}

func TestReportRetriesGitea(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	rec.Fail(fluxtest.ErrFlaky)
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	time.Sleep(time.Second) // a few failed attempts
	rec.Fail(nil)
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending)
}

// A burst of pushes to one object makes two reconciles: one at once, one for the burst
// when coalesceWindow has passed. Every push still gets its statuses.
func TestCoalesceBurst(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	r := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local))
	var shas []string
	var first string
	for i := range 5 {
		sha := fluxtest.NewSHA()
		shas = append(shas, sha)
		res, err := r.Request(t.Context(), fluxtest.PushOf(p.repo, "refs/heads/main", sha))
		if err != nil {
			t.Fatal(err)
		}
		want := api.ResultCoalesced
		if i == 0 {
			want = api.ResultRequested
			first = requestedAt(t, p.ks)
		}
		for _, o := range res.Targets {
			if o.Result != want {
				t.Fatalf("push %d: %s %s, want %s", i, o.Kind, o.Result, want)
			}
		}
	}
	if got := requestedAt(t, p.ks); got != first {
		t.Fatalf("requestedAt changed within the window: %q, want %q", got, first)
	}
	fluxtest.WaitFor(t, "the burst's reconcile requested", func() bool {
		ks := &kustomizev1.Kustomization{}
		if err := fluxtest.Kube.Client.Get(t.Context(), p.ks, ks); err != nil {
			return false
		}
		r, _ := record.Parse(ks.Annotations)
		return r.Current.SHA == shas[4] && ks.Annotations[meta.ReconcileRequestAnnotation] == r.Current.Token && r.Current.PatchAt == nil
	})
	ctx := p.ctx(kustomizev1.KustomizationKind)
	for _, sha := range shas[:4] {
		// One final warning each; a push overtaken before its pending status went out gets
		// only the warning.
		fluxtest.WaitFor(t, "superseded "+sha[:7], func() bool {
			got := rec.States(sha, ctx)
			return slices.Equal(got, []string{api.StateWarning}) || slices.Equal(got, []string{api.StatePending, api.StateWarning})
		})
	}
	fluxtest.WaitStates(t, rec, shas[4], ctx, api.StatePending)
	if err := testenv.MarkGitRepositoryReady(t.Context(), fluxtest.Kube.Client, p.gr, testenv.GitRevision("main", shas[4]), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationApplied(t.Context(), fluxtest.Kube.Client, p.ks, testenv.GitRevision("main", shas[4]), ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, shas[4], ctx, api.StatePending, api.StateSuccess)
}

func requestedAt(t *testing.T, key client.ObjectKey) string {
	t.Helper()
	ks := &kustomizev1.Kustomization{}
	if err := fluxtest.Kube.Client.Get(t.Context(), key, ks); err != nil {
		t.Fatal(err)
	}
	return ks.Annotations[meta.ReconcileRequestAnnotation]
}

// permanentErr is what Gitea answers for a repository or commit that is gone (4xx).
type permanentErr struct{}

func (permanentErr) Error() string   { return "gitea answered 404" }
func (permanentErr) Permanent() bool { return true }

// A status Gitea refuses for good is given up at once; one it cannot take is retried until
// the result timeout after the verdict, then given up. Either way the record says it was
// lost, and nothing is retried after.
// lost reports whether the API server's record of the Kustomization says its pending status
// was given up as lost.
func (p *pipeline) lost(t *testing.T) bool {
	ks := &kustomizev1.Kustomization{}
	if err := fluxtest.Kube.Client.Get(t.Context(), p.ks, ks); err != nil {
		return false
	}
	r, _ := record.Parse(ks.Annotations)
	return r.Current.Final && r.Current.Lost && r.Current.Posted == "" && r.Current.Intent == nil
}

func TestReportGivesUp(t *testing.T) {
	fluxtest.Integration(t)
	for _, tt := range []struct {
		name    string
		err     error
		timeout time.Duration
	}{
		{"gitea refuses", permanentErr{}, time.Minute},
		{"gitea unavailable past the timeout", fluxtest.ErrFlaky, 3 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &fluxtest.Recorder{}
			rec.Fail(tt.err)
			startReporter(t, rec, tt.timeout)
			p := newPipeline(t)
			p.push(t)
			fluxtest.WaitFor(t, "request given up as lost", func() bool { return p.lost(t) })
			rec.Fail(nil)
			time.Sleep(2 * time.Second)
			if got := rec.States(p.sha, p.ctx(kustomizev1.KustomizationKind)); len(got) != 0 {
				t.Fatalf("a lost status was posted later: %v", got)
			}
		})
	}
}

// staleCache answers Get for one object with an old copy of it, as an informer cache does
// that has not yet seen the latest write.
type staleCache struct {
	cache.Cache
	old client.Object
}

func (c staleCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if key == client.ObjectKeyFromObject(c.old) && reflect.TypeOf(obj) == reflect.TypeOf(c.old) {
		reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(c.old.DeepCopyObject()).Elem())
		return nil
	}
	return c.Cache.Get(ctx, key, obj, opts...)
}

// staleCluster is the package's cluster seen through a staleCache; its indexes are the
// package cluster's, already set up.
type staleCluster struct {
	ctrlcluster.Cluster
	cache staleCache
}

func (c staleCluster) GetCache() cache.Cache { return c.cache }

func (c staleCluster) GetFieldIndexer() client.FieldIndexer { return indexed{} }

type indexed struct{}

func (indexed) IndexField(context.Context, client.Object, string, client.IndexerFunc) error {
	return nil
}

// reconcileStale runs one reconcile of the pipeline's Kustomization by a reporter whose cache
// still shows old, with Gitea up, and returns what it posted.
func reconcileStale(t *testing.T, p *pipeline, old *kustomizev1.Kustomization) *fluxtest.Recorder {
	t.Helper()
	late := &fluxtest.Recorder{}
	stale := cluster.New("local", "", staleCluster{Cluster: fluxtest.Local.Cluster, cache: staleCache{Cache: fluxtest.Local.GetCache(), old: old}}, fluxtest.RecordKeys)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go stale.Watch(ctx)
	fluxtest.WaitFor(t, "stale cluster ready", stale.Ready)
	r := &report.Reporter{Cluster: stale, Poster: late, Lookup: late, ResultTimeout: time.Minute}
	if _, err := r.Reconcile(t.Context(), api.Target{Cluster: "local", Kind: kustomizev1.KustomizationKind, Namespace: p.ns, Name: "app"}); err != nil {
		t.Fatal(err)
	}
	return late
}

// A reconcile whose cache is behind the reporter's own writes (the push seen, not yet the
// pending status posted for it) does not post it again.
func TestReportStaleCacheNoRepeat(t *testing.T) {
	fluxtest.Integration(t)
	p := newPipeline(t)
	p.push(t)
	old := &kustomizev1.Kustomization{}
	if err := fluxtest.Kube.Client.Get(t.Context(), p.ks, old); err != nil {
		t.Fatal(err)
	}
	if r, _ := record.Parse(old.Annotations); r.Current == nil || r.Current.Posted != "" || r.Current.Intent != nil {
		t.Fatalf("record before any report: %+v", r.Current)
	}
	rec := &fluxtest.Recorder{}
	startReporter(t, rec, time.Minute)
	fluxtest.WaitStates(t, rec, p.sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending)
	fluxtest.WaitFor(t, "pending recorded as posted", func() bool {
		ks := &kustomizev1.Kustomization{}
		if err := fluxtest.Kube.Client.Get(t.Context(), p.ks, ks); err != nil {
			return false
		}
		r, _ := record.Parse(ks.Annotations)
		return r.Current.Posted == api.StatePending && r.Current.Intent == nil
	})
	if got := reconcileStale(t, p, old).States(p.sha, p.ctx(kustomizev1.KustomizationKind)); len(got) != 0 {
		t.Fatalf("posted again from a stale view: %v", got)
	}
}

// A reconcile that still sees, in its cache, the intent of a status given up as lost in the
// meantime neither posts it late nor reopens the request.
func TestReportLostStaysLost(t *testing.T) {
	fluxtest.Integration(t)
	rec := &fluxtest.Recorder{}
	rec.Fail(fluxtest.ErrFlaky)
	startReporter(t, rec, 3*time.Second)
	p := newPipeline(t)
	p.push(t)
	ks := &kustomizev1.Kustomization{}
	fluxtest.WaitFor(t, "pending intent recorded", func() bool {
		if err := fluxtest.Kube.Client.Get(t.Context(), p.ks, ks); err != nil {
			return false
		}
		r, _ := record.Parse(ks.Annotations)
		return r.Current != nil && r.Current.Intent != nil && r.Current.Intent.State == api.StatePending
	})
	fluxtest.WaitFor(t, "request given up as lost", func() bool { return p.lost(t) })
	if got := reconcileStale(t, p, ks).States(p.sha, p.ctx(kustomizev1.KustomizationKind)); len(got) != 0 {
		t.Fatalf("posted from a stale view: %v", got)
	}
	if !p.lost(t) {
		t.Fatal("the lost request was reopened")
	}
}
