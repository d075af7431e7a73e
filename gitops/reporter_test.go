package gitops_test

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// startReporter runs a reporter on the package's cluster until the test ends.
func startReporter(t *testing.T, rec *recorder, timeout time.Duration) {
	t.Helper()
	r := &gitops.Reporter{Cluster: local, Poster: rec, Lookup: rec, ResultTimeout: timeout}
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
	p := &pipeline{ns: newNamespace(t), repo: "org/rep-" + randomHex(3)}
	p.gr = client.ObjectKey{Namespace: p.ns, Name: "app"}
	p.ks = client.ObjectKey{Namespace: p.ns, Name: "app"}
	create(t, gitRepository(p.ns, "app", "https://"+giteaHost+"/"+p.repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
		kustomization(p.ns, "app", "", "app"))
	return p
}

func (p *pipeline) push(t *testing.T) string {
	t.Helper()
	p.sha = newSHA()
	res, err := (&gitops.Requester{Clusters: gitops.NewClusterSet(local)}).Request(t.Context(), pushOf(p.repo, "refs/heads/main", p.sha))
	out := res.Targets
	if err != nil || len(out) != 2 {
		t.Fatalf("request: %v %v", targets(out), err)
	}
	return p.sha
}

func (p *pipeline) ctx(kind string) string {
	return gitops.Target{Cluster: "local", Kind: kind, Namespace: p.ns, Name: "app"}.Context()
}

// waitStates waits until exactly want has been posted for a context, and stays so briefly.
func waitStates(t *testing.T, rec *recorder, sha, context string, want ...string) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("%s: states posted %v", context, rec.states(sha, context))
		}
	}()
	waitFor(t, context+" "+strings.Join(want, ","), func() bool { return slices.Equal(rec.states(sha, context), want) })
	time.Sleep(300 * time.Millisecond) // nothing more arrives
	if got := rec.states(sha, context); !slices.Equal(got, want) {
		t.Fatalf("%s: states %v, want %v", context, got, want)
	}
}

func TestReportSuccess(t *testing.T) {
	integration(t)
	rec := &recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	waitStates(t, rec, sha, p.ctx(gitops.KindGitRepository), gitops.StatePending)
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending)

	// Flux: the Kustomization first reconciles at the old revision (before its source moved),
	// then the source fetches the commit, then the Kustomization applies it.
	ctx := t.Context()
	if err := testenv.MarkKustomizationApplied(ctx, kube.Client, p.ks, testenv.GitRevision("main", newSHA()), ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := rec.states(sha, p.ctx(gitops.KindKustomization)); !slices.Equal(got, []string{gitops.StatePending}) {
		t.Fatalf("reported before the source moved: %v", got)
	}
	if err := testenv.MarkGitRepositoryReady(ctx, kube.Client, p.gr, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, p.ctx(gitops.KindGitRepository), gitops.StatePending, gitops.StateSuccess)
	if err := testenv.MarkKustomizationApplied(ctx, kube.Client, p.ks, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending, gitops.StateSuccess)
	if d := rec.find(sha, p.ctx(gitops.KindKustomization)).Description; d != "applied main@sha1:"+sha[:12] {
		t.Fatalf("description %q", d)
	}
	// The record says it is done, so a restarted reporter has nothing to do.
	ks := &kustomizev1.Kustomization{}
	if err := kube.Client.Get(ctx, p.ks, ks); err != nil {
		t.Fatal(err)
	}
	if r, _ := gitops.ParseRecord(ks.Annotations); r.Pending() || !r.Current.Final || r.Current.Posted != gitops.StateSuccess {
		t.Fatalf("record %+v", r.Current)
	}
}

func TestReportFailure(t *testing.T) {
	integration(t)
	rec := &recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	ctx := t.Context()
	if err := testenv.MarkGitRepositoryReady(ctx, kube.Client, p.gr, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	msg := `ConfigMap/default/Bad_Name dry-run failed: metadata.name: Invalid value: "Bad_Name"`
	if err := testenv.MarkKustomizationFailed(ctx, kube.Client, p.ks, testenv.GitRevision("main", sha), "", "ReconciliationFailed", msg); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending, gitops.StateFailure)
	if d := rec.find(sha, p.ctx(gitops.KindKustomization)).Description; d != msg {
		t.Fatalf("description %q, want Flux's message", d)
	}
}

func TestReportSourceFailure(t *testing.T) {
	integration(t)
	rec := &recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	if err := testenv.MarkGitRepositoryFailed(t.Context(), kube.Client, p.gr, "", "GitOperationFailed", "failed to checkout: authentication required"); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, p.ctx(gitops.KindGitRepository), gitops.StatePending, gitops.StateFailure)
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending, gitops.StateFailure)
	if d := rec.find(sha, p.ctx(gitops.KindKustomization)).Description; !strings.Contains(d, "authentication required") {
		t.Fatalf("description %q", d)
	}
}

func TestReportTimeout(t *testing.T) {
	integration(t)
	rec := &recorder{}
	startReporter(t, rec, 2*time.Second)
	p := newPipeline(t)
	sha := p.push(t)
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending, gitops.StateError)
	if d := rec.find(sha, p.ctx(gitops.KindKustomization)).Description; !strings.HasPrefix(d, "no answer from Flux within 2s") {
		t.Fatalf("description %q", d)
	}
}

func TestReportSuperseded(t *testing.T) {
	integration(t)
	rec := &recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	first := p.push(t)
	waitStates(t, rec, first, p.ctx(gitops.KindKustomization), gitops.StatePending)
	second := p.push(t)
	for _, kind := range []string{gitops.KindGitRepository, gitops.KindKustomization} {
		waitStates(t, rec, first, p.ctx(kind), gitops.StatePending, gitops.StateWarning)
		if d := rec.find(first, p.ctx(kind)).Description; d != "superseded by "+second[:12] {
			t.Fatalf("description %q", d)
		}
		waitStates(t, rec, second, p.ctx(kind), gitops.StatePending)
	}
	ctx := t.Context()
	if err := testenv.MarkGitRepositoryReady(ctx, kube.Client, p.gr, testenv.GitRevision("main", second), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationApplied(ctx, kube.Client, p.ks, testenv.GitRevision("main", second), ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, second, p.ctx(gitops.KindKustomization), gitops.StatePending, gitops.StateSuccess)
	waitStates(t, rec, first, p.ctx(gitops.KindKustomization), gitops.StatePending, gitops.StateWarning)
}

func TestReportHelmRelease(t *testing.T) {
	integration(t)
	rec := &recorder{}
	startReporter(t, rec, time.Minute)
	src, apps := newNamespace(t), newNamespace(t)
	repo := "org/helm-" + randomHex(3)
	create(t, gitRepository(src, "app", "https://"+giteaHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
		helmReleaseFromGit(apps, "podinfo", src, "app"), helmChart(src, apps+"-podinfo", "app"))
	sha := newSHA()
	if _, err := (&gitops.Requester{Clusters: gitops.NewClusterSet(local)}).Request(t.Context(), pushOf(repo, "refs/heads/main", sha)); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	chart := client.ObjectKey{Namespace: src, Name: apps + "-podinfo"}
	hr := client.ObjectKey{Namespace: apps, Name: "podinfo"}
	hrCtx := gitops.Target{Cluster: "local", Kind: gitops.KindHelmRelease, Namespace: apps, Name: "podinfo"}.Context()
	chartCtx := gitops.Target{Cluster: "local", Kind: gitops.KindHelmChart, Namespace: src, Name: chart.Name}.Context()
	// helm-controller handles the request before source-controller rebuilt the chart: the
	// release is still the previous chart, not built from the pushed commit.
	if err := testenv.MarkHelmChartReady(ctx, kube.Client, chart, testenv.GitRevision("main", newSHA()), "6.0.0", "earlier"); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkHelmReleaseReady(ctx, kube.Client, hr, chart, "6.0.0", ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, hrCtx, gitops.StatePending)
	if err := testenv.MarkGitRepositoryReady(ctx, kube.Client, client.ObjectKey{Namespace: src, Name: "app"}, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkHelmChartReady(ctx, kube.Client, chart, testenv.GitRevision("main", sha), "6.1.0", ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, chartCtx, gitops.StatePending, gitops.StateSuccess)
	time.Sleep(300 * time.Millisecond)
	if got := rec.states(sha, hrCtx); !slices.Equal(got, []string{gitops.StatePending}) {
		t.Fatalf("release reported before it released 6.1.0: %v", got)
	}
	if err := testenv.MarkHelmReleaseReady(ctx, kube.Client, hr, chart, "6.1.0", ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, hrCtx, gitops.StatePending, gitops.StateSuccess)
	if d := rec.find(sha, hrCtx).Description; d != "released chart 6.1.0 from main@sha1:"+sha[:12] {
		t.Fatalf("description %q", d)
	}
}

// A reporter that stopped after recording its intent to post a final status, but maybe
// before posting it, is replaced: the new one asks Gitea and does not post twice.
func TestReportTakeoverDoesNotRepost(t *testing.T) {
	integration(t)
	rec := &recorder{}
	p := newPipeline(t)
	sha := p.push(t)
	ctx := t.Context()
	final := gitops.Status{State: gitops.StateSuccess, Description: "applied main@sha1:" + sha[:12]}
	// The previous leader: posted pending, recorded the intent, posted success, and died
	// before recording that it did.
	for _, key := range []client.ObjectKey{p.ks} {
		ks := &kustomizev1.Kustomization{}
		if err := kube.Client.Get(ctx, key, ks); err != nil {
			t.Fatal(err)
		}
		r, _ := gitops.ParseRecord(ks.Annotations)
		r.Current.Posted, r.Current.Intent = gitops.StatePending, &final
		base := ks.DeepCopy()
		if err := gitops.Seal(local, ks, r); err != nil {
			t.Fatal(err)
		}
		if err := kube.Client.Patch(ctx, ks, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	rec.statuses = append(rec.statuses,
		gitops.CommitStatus{Repository: p.repo, SHA: sha, Context: p.ctx(gitops.KindKustomization), Status: gitops.Status{State: gitops.StatePending}},
		gitops.CommitStatus{Repository: p.repo, SHA: sha, Context: p.ctx(gitops.KindKustomization), Status: final})
	startReporter(t, rec, time.Minute)
	waitFor(t, "record final", func() bool {
		ks := &kustomizev1.Kustomization{}
		if err := kube.Client.Get(ctx, p.ks, ks); err != nil {
			return false
		}
		r, _ := gitops.ParseRecord(ks.Annotations)
		return r.Current.Final && r.Current.Posted == gitops.StateSuccess
	})
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending, gitops.StateSuccess)
}

func TestReportDeleted(t *testing.T) {
	integration(t)
	rec := &recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending)
	if err := kube.Client.Delete(t.Context(), &kustomizev1.Kustomization{ObjectMeta: metaOf(p.ks)}); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending, gitops.StateError)
	if d := rec.find(sha, p.ctx(gitops.KindKustomization)).Description; d != "deleted before Flux answered" {
		t.Fatalf("description %q", d)
	}
}

func TestReportRetriesGitea(t *testing.T) {
	integration(t)
	rec := &recorder{fail: errFlaky}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	sha := p.push(t)
	time.Sleep(time.Second) // a few failed attempts
	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending)
}

// A burst of pushes to one object makes two reconciles: one at once, one for the burst
// when coalesceWindow has passed. Every push still gets its statuses.
func TestCoalesceBurst(t *testing.T) {
	integration(t)
	rec := &recorder{}
	startReporter(t, rec, time.Minute)
	p := newPipeline(t)
	r := &gitops.Requester{Clusters: gitops.NewClusterSet(local)}
	var shas []string
	var first string
	for i := range 5 {
		sha := newSHA()
		shas = append(shas, sha)
		res, err := r.Request(t.Context(), pushOf(p.repo, "refs/heads/main", sha))
		if err != nil {
			t.Fatal(err)
		}
		want := gitops.ResultCoalesced
		if i == 0 {
			want = gitops.ResultRequested
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
	waitFor(t, "the burst's reconcile requested", func() bool {
		ks := &kustomizev1.Kustomization{}
		if err := kube.Client.Get(t.Context(), p.ks, ks); err != nil {
			return false
		}
		r, _ := gitops.ParseRecord(ks.Annotations)
		return r.Current.SHA == shas[4] && ks.Annotations[meta.ReconcileRequestAnnotation] == r.Current.Token && r.Current.PatchAt == nil
	})
	ctx := p.ctx(gitops.KindKustomization)
	for _, sha := range shas[:4] {
		// One final warning each; a push overtaken before its pending status went out gets
		// only the warning.
		waitFor(t, "superseded "+sha[:7], func() bool {
			got := rec.states(sha, ctx)
			return slices.Equal(got, []string{gitops.StateWarning}) || slices.Equal(got, []string{gitops.StatePending, gitops.StateWarning})
		})
	}
	waitStates(t, rec, shas[4], ctx, gitops.StatePending)
	if err := testenv.MarkGitRepositoryReady(t.Context(), kube.Client, p.gr, testenv.GitRevision("main", shas[4]), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationApplied(t.Context(), kube.Client, p.ks, testenv.GitRevision("main", shas[4]), ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, shas[4], ctx, gitops.StatePending, gitops.StateSuccess)
}

func requestedAt(t *testing.T, key client.ObjectKey) string {
	t.Helper()
	ks := &kustomizev1.Kustomization{}
	if err := kube.Client.Get(t.Context(), key, ks); err != nil {
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
	if err := kube.Client.Get(t.Context(), p.ks, ks); err != nil {
		return false
	}
	r, _ := gitops.ParseRecord(ks.Annotations)
	return r.Current.Final && r.Current.Lost && r.Current.Posted == "" && r.Current.Intent == nil
}

func TestReportGivesUp(t *testing.T) {
	integration(t)
	for _, tt := range []struct {
		name    string
		err     error
		timeout time.Duration
	}{
		{"gitea refuses", permanentErr{}, time.Minute},
		{"gitea unavailable past the timeout", errFlaky, 3 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{fail: tt.err}
			startReporter(t, rec, tt.timeout)
			p := newPipeline(t)
			p.push(t)
			waitFor(t, "request given up as lost", func() bool { return p.lost(t) })
			rec.mu.Lock()
			rec.fail = nil
			rec.mu.Unlock()
			time.Sleep(2 * time.Second)
			if got := rec.states(p.sha, p.ctx(gitops.KindKustomization)); len(got) != 0 {
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

// staleCluster is the package's cluster seen through a staleCache.
type staleCluster struct {
	cluster.Cluster
	cache staleCache
}

func (c staleCluster) GetCache() cache.Cache { return c.cache }

// reconcileStale runs one reconcile of the pipeline's Kustomization by a reporter whose cache
// still shows old, with Gitea up, and returns what it posted.
func reconcileStale(t *testing.T, p *pipeline, old *kustomizev1.Kustomization) *recorder {
	t.Helper()
	late := &recorder{}
	stale := gitops.NewCluster("local", "", staleCluster{Cluster: local.Cluster, cache: staleCache{Cache: local.GetCache(), old: old}}, recordKeys)
	r := &gitops.Reporter{Cluster: stale, Poster: late, Lookup: late, ResultTimeout: time.Minute}
	if _, err := r.Reconcile(t.Context(), gitops.Target{Cluster: "local", Kind: gitops.KindKustomization, Namespace: p.ns, Name: "app"}); err != nil {
		t.Fatal(err)
	}
	return late
}

// A reconcile whose cache is behind the reporter's own writes (the push seen, not yet the
// pending status posted for it) does not post it again.
func TestReportStaleCacheNoRepeat(t *testing.T) {
	integration(t)
	p := newPipeline(t)
	p.push(t)
	old := &kustomizev1.Kustomization{}
	if err := kube.Client.Get(t.Context(), p.ks, old); err != nil {
		t.Fatal(err)
	}
	if r, _ := gitops.ParseRecord(old.Annotations); r.Current == nil || r.Current.Posted != "" || r.Current.Intent != nil {
		t.Fatalf("record before any report: %+v", r.Current)
	}
	rec := &recorder{}
	startReporter(t, rec, time.Minute)
	waitStates(t, rec, p.sha, p.ctx(gitops.KindKustomization), gitops.StatePending)
	waitFor(t, "pending recorded as posted", func() bool {
		ks := &kustomizev1.Kustomization{}
		if err := kube.Client.Get(t.Context(), p.ks, ks); err != nil {
			return false
		}
		r, _ := gitops.ParseRecord(ks.Annotations)
		return r.Current.Posted == gitops.StatePending && r.Current.Intent == nil
	})
	if got := reconcileStale(t, p, old).states(p.sha, p.ctx(gitops.KindKustomization)); len(got) != 0 {
		t.Fatalf("posted again from a stale view: %v", got)
	}
}

// A reconcile that still sees, in its cache, the intent of a status given up as lost in the
// meantime neither posts it late nor reopens the request.
func TestReportLostStaysLost(t *testing.T) {
	integration(t)
	rec := &recorder{fail: errFlaky}
	startReporter(t, rec, 3*time.Second)
	p := newPipeline(t)
	p.push(t)
	ks := &kustomizev1.Kustomization{}
	waitFor(t, "pending intent recorded", func() bool {
		if err := kube.Client.Get(t.Context(), p.ks, ks); err != nil {
			return false
		}
		r, _ := gitops.ParseRecord(ks.Annotations)
		return r.Current != nil && r.Current.Intent != nil && r.Current.Intent.State == gitops.StatePending
	})
	waitFor(t, "request given up as lost", func() bool { return p.lost(t) })
	if got := reconcileStale(t, p, ks).states(p.sha, p.ctx(gitops.KindKustomization)); len(got) != 0 {
		t.Fatalf("posted from a stale view: %v", got)
	}
	if !p.lost(t) {
		t.Fatal("the lost request was reopened")
	}
}
