package report_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/gitops/request"
)

// A push overtaken before its delivery was verified (Head set) requests nothing: each
// object it feeds is owed a warning, which the leader's backlog posts once, however often
// the push is delivered.
func TestOvertakenPush(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	rec := &fluxtest.Recorder{}
	p := newPipeline(t)
	pushes := &record.PushStore{Client: fluxtest.Kube.Client, Reader: fluxtest.Kube.Client, Namespace: p.ns}
	set := cluster.NewSet(fluxtest.Local)
	r := fluxtest.NewRequester(t, set, func(r *request.Requester) { r.Store = pushes })
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&report.Backlog{Store: pushes, Clusters: set, Poster: rec, Lookup: rec, ResultTimeout: time.Minute}).Start(runCtx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	before := map[string]string{}
	for _, o := range []client.Object{&sourcev1.GitRepository{}, &kustomizev1.Kustomization{}} {
		if err := fluxtest.Kube.Client.Get(ctx, p.gr, o); err != nil {
			t.Fatal(err)
		}
		before[fmt.Sprintf("%T", o)] = o.GetResourceVersion()
	}
	old, head := fluxtest.NewSHA(), fluxtest.NewSHA()
	push := fluxtest.PushOf(p.repo, "refs/heads/main", old)
	push.Head = head
	for range 3 {
		res, err := r.Request(ctx, push)
		if err != nil || len(res.Targets) != 2 || res.Targets[0].Result != api.ResultSuperseded || !res.Targets[0].Reported() {
			t.Fatalf("overtaken push: %v %v", fluxtest.Targets(res.Targets), err)
		}
	}
	for _, kind := range []string{sourcev1.GitRepositoryKind, kustomizev1.KustomizationKind} {
		fluxtest.WaitStates(t, rec, old, p.ctx(kind), api.StateWarning)
		if d := rec.Find(old, p.ctx(kind)).Description; d != "superseded by "+head[:12] {
			t.Fatalf("description %q", d)
		}
	}
	for _, o := range []client.Object{&sourcev1.GitRepository{}, &kustomizev1.Kustomization{}} {
		if err := fluxtest.Kube.Client.Get(ctx, p.gr, o); err != nil {
			t.Fatal(err)
		}
		if o.GetResourceVersion() != before[fmt.Sprintf("%T", o)] {
			t.Fatalf("%T patched for an overtaken push", o)
		}
	}
	// A repeat after the warnings went out owes nothing again: the record is kept for the
	// repeat window.
	if _, err := r.Request(ctx, push); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	for _, kind := range []string{sourcev1.GitRepositoryKind, kustomizev1.KustomizationKind} {
		fluxtest.WaitStates(t, rec, old, p.ctx(kind), api.StateWarning)
	}
}

// A push record says what it owes; one not written by this service (anyone who may write
// the namespace's ConfigMaps can) may say a status was intended without saying when. While
// Gitea fails, that owed status is retried, not a crash of the leader; then it is posted.
func TestPushRecordIntentWithoutTime(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	rec := &fluxtest.Recorder{}
	rec.Fail(errors.New("gitea down"))
	p := newPipeline(t)
	pushes := &record.PushStore{Client: fluxtest.Kube.Client, Reader: fluxtest.Kube.Client, Namespace: p.ns}
	sha := fluxtest.NewSHA()
	req := record.Request{Token: time.Now().UTC().Format(time.RFC3339Nano), Repository: p.repo, Ref: "refs/heads/main", SHA: sha, RequestedAt: time.Now()}
	target := api.Target{Cluster: "local", Kind: sourcev1.GitRepositoryKind, Namespace: p.ns, Name: "app"}
	owed := record.Owed{Target: target, Status: api.Status{State: api.StateWarning, Description: "superseded by " + fluxtest.NewSHA()[:12]}, Now: true, Intent: true}
	if err := pushes.Add(ctx, req, []record.Owed{owed}); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&report.Backlog{Store: pushes, Clusters: cluster.NewSet(fluxtest.Local), Poster: rec, ResultTimeout: time.Minute}).Start(runCtx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(2 * time.Second) // a failed post or two
	rec.Fail(nil)
	fluxtest.WaitStates(t, rec, sha, p.ctx(sourcev1.GitRepositoryKind), api.StateWarning)
}
