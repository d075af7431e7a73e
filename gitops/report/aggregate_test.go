package report_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// With statuses per cluster, the objects' results go to the push record and one status,
// flux/<cluster>, says pending once and then, once every object answered, what they did;
// no object gets a status of its own. A second aggregator (a leader that took over) posts
// nothing again.
func TestReportPerCluster(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	ns := fluxtest.Namespace(t)
	repo := "org/agg-" + fluxtest.RandomHex(3)
	fluxtest.Create(t,
		fluxtest.GitRepository(ns, "app", "https://"+fluxtest.ForgeHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
		fluxtest.Kustomization(ns, "a", "", "app"),
		fluxtest.Kustomization(ns, "b", "", "app"),
	)
	r := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local), func(r *request.Requester) { r.Granularity = request.PerCluster })
	rec := &fluxtest.Recorder{}
	agg := &report.Aggregator{Store: r.Store, Poster: rec, Lookup: rec, ResultTimeout: time.Minute}
	run := func(runnable interface{ Start(context.Context) error }) {
		c, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = runnable.Start(c) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	run(agg)
	rep := &report.Reporter{Cluster: fluxtest.Local, Poster: rec, Lookup: rec, Aggregator: agg, ResultTimeout: time.Minute}
	ctrl, err := rep.Controller()
	if err != nil {
		t.Fatal(err)
	}
	run(ctrl)

	sha := fluxtest.NewSHA()
	res, err := r.Request(ctx, fluxtest.PushOf(repo, "refs/heads/main", sha))
	if err != nil || len(res.Targets) != 3 {
		t.Fatalf("push: %v %v", fluxtest.Targets(res.Targets), err)
	}
	const clusterCtx = "flux/local"
	fluxtest.WaitStates(t, rec, sha, clusterCtx, api.StatePending)
	// As a leader that stopped between posting pending and recording it leaves the record:
	// the intent, not the post. The leader that goes on asks Gitea, and posts nothing again.
	stored, err := r.Store.List(ctx)
	if err != nil || len(stored) != 1 {
		t.Fatalf("push records: %d %v", len(stored), err)
	}
	if err := r.Store.Update(ctx, stored[0].Key(), func(p *record.Push) error {
		pending := rec.Find(sha, clusterCtx).Status
		p.Clusters[0].Posted, p.Clusters[0].Intent = "", &pending
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if got := rec.States(sha, clusterCtx); len(got) != 1 {
		t.Fatalf("pending posted again after a takeover: %v", got)
	}
	rev := testenv.GitRevision("main", sha)
	key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, key("app"), rev, ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationApplied(ctx, fluxtest.Kube.Client, key("a"), rev, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if got := rec.States(sha, clusterCtx); len(got) != 1 {
		t.Fatalf("final before every object answered: %v", got)
	}
	if err := testenv.MarkKustomizationFailed(ctx, fluxtest.Kube.Client, key("b"), rev, "", "HealthCheckFailed", "Deployment/b not ready"); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, clusterCtx, api.StatePending, api.StateFailure)
	want := "2/3 ready, 1 failed: kustomization/" + ns + "/b: Deployment/b not ready"
	if d := rec.Find(sha, clusterCtx).Description; d != want {
		t.Fatalf("description %q, want %q", d, want)
	}
	for _, s := range rec.All() {
		if s.SHA == sha && s.Context != clusterCtx {
			t.Fatalf("an object's own status posted: %s", s.Context)
		}
	}
	// A leader that takes over finds the status final: nothing more.
	run(&report.Aggregator{Store: r.Store, Poster: rec, Lookup: rec, ResultTimeout: time.Minute})
	time.Sleep(2 * time.Second)
	if got := rec.States(sha, clusterCtx); len(got) != 2 || strings.Join(got, ",") != "pending,failure" {
		t.Fatalf("states %v", got)
	}
}

// While a push is being requested in the service's own cluster (Busy), where the push records
// are, results wait to be written, and the reporter that hands one over with them; once it
// is requested, they are written.
func TestAggregatorWaitsWhileRequesting(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	ns := fluxtest.Namespace(t)
	repo := "org/busy-" + fluxtest.RandomHex(3)
	fluxtest.Create(t, fluxtest.GitRepository(ns, "app", "https://"+fluxtest.ForgeHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"}))
	r := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local), func(r *request.Requester) { r.Granularity = request.PerCluster })
	var busy atomic.Bool
	busy.Store(true)
	rec := &fluxtest.Recorder{}
	agg := &report.Aggregator{Store: r.Store, Poster: rec, Lookup: rec, ResultTimeout: time.Minute,
		Busy: func() time.Duration {
			if busy.Load() {
				return time.Second
			}
			return 0
		}}
	runCtx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = agg.Start(runCtx) }()
	t.Cleanup(func() { cancel(); <-stopped })

	sha := fluxtest.NewSHA()
	if res, err := r.Request(ctx, fluxtest.PushOf(repo, "refs/heads/main", sha)); err != nil || len(res.Targets) != 1 {
		t.Fatalf("push: %v %v", fluxtest.Targets(res.Targets), err)
	}
	stored, err := r.Store.List(ctx)
	if err != nil || len(stored) != 1 {
		t.Fatalf("push records: %d %v", len(stored), err)
	}
	key, target := stored[0].Key(), "flux/local/gitrepository/"+ns+"/app"
	written := make(chan error, 1)
	go func() {
		written <- agg.PostStatus(ctx, report.CommitStatus{Repository: repo, SHA: sha, Context: target, Push: key,
			Status: api.Status{State: api.StateSuccess, Description: "applied"}})
	}()
	result := func() (string, bool) {
		p, err := r.Store.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := p.Results[target]
		return s, ok
	}
	select {
	case err := <-written:
		t.Fatalf("result handed over while a push was being requested (%v)", err)
	case <-time.After(2 * time.Second): // eight flushes
	}
	if s, ok := result(); ok {
		t.Fatalf("result %q written while a push was being requested", s)
	}
	busy.Store(false)
	select {
	case err := <-written:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("result not written once the push was requested")
	}
	if s, _ := result(); s != api.StateSuccess {
		t.Fatalf("result %q, want %q", s, api.StateSuccess)
	}
}
