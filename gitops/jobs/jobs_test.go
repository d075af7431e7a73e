package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/jobs"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

func TestPlatformReconcile(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	ns, jobsNS := fluxtest.Namespace(t), fluxtest.Namespace(t)
	platform := fluxtest.Kustomization(ns, "platform", "", "infra")
	platform.Labels = map[string]string{"tier": "platform"}
	suspended := fluxtest.Kustomization(ns, "paused", "", "infra")
	suspended.Labels = map[string]string{"tier": "platform"}
	suspended.Spec.Suspend = true
	fluxtest.Create(t,
		fluxtest.GitRepository(ns, "infra", "https://"+fluxtest.ForgeHost+"/org/infra", &sourcev1.GitRepositoryRef{Branch: "main"}),
		platform, suspended,
		fluxtest.Kustomization(ns, "apps", "", "infra"), // no label
	)
	p := &jobs.Platform{
		Clusters:      cluster.NewSet(fluxtest.Local),
		Jobs:          &jobs.JobStore{Client: fluxtest.Kube.Client, Reader: fluxtest.Kube.Client, Namespace: jobsNS},
		ResultTimeout: time.Minute,
	}
	sel := api.Selector{Namespaces: []string{ns}, LabelSelector: "tier=platform"}
	st, err := p.Reconcile(ctx, sel)
	if err != nil {
		t.Fatal(err)
	}
	// Saved, not requested: nothing is patched before the leader's worker runs.
	if st.Requested || len(st.Targets) != 0 || st.Done {
		t.Fatalf("queued job: %+v", st)
	}
	if ks := kustomizationOf(t, ns, "platform"); ks.Annotations[meta.ReconcileRequestAnnotation] != "" {
		t.Fatal("patched before the worker ran")
	}
	cs, err := kubernetes.NewForConfig(fluxtest.Kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = (&jobs.Worker{Clusters: p.Clusters, Jobs: p.Jobs, Client: cs}).Start(wctx)
	}()
	t.Cleanup(func() { stop(); <-stopped })
	requested := func(st *api.JobStatus) *api.JobStatus {
		t.Helper()
		fluxtest.WaitFor(t, "job requested", func() bool {
			next, err := p.Status(ctx, st.ID)
			if err == nil && next.Requested {
				st = next
			}
			return err == nil && next.Requested
		})
		return st
	}
	st = requested(st)
	var got []string
	for _, tg := range st.Targets {
		got = append(got, tg.Kind+"/"+tg.Name)
	}
	if want := []string{"GitRepository/infra", "Kustomization/platform"}; !slices.Equal(got, want) {
		t.Fatalf("targets %v, want %v (source first, label selected)", got, want)
	}
	if len(st.Skipped) != 1 || st.Skipped[0].Name != "paused" || st.Skipped[0].Result != api.ResultSuspended {
		t.Fatalf("skipped %+v", st.Skipped)
	}
	if st.Done || st.Counts[api.StatePending] != 2 {
		t.Fatalf("fresh job: %+v", st)
	}
	// Both objects carry the job's requestedAt.
	ks := kustomizationOf(t, ns, "platform")
	if ks.Annotations[meta.ReconcileRequestAnnotation] != st.Token {
		t.Fatalf("requestedAt %q, want the job's token %q", ks.Annotations[meta.ReconcileRequestAnnotation], st.Token)
	}

	// The same request while the first is in flight joins it.
	again, err := p.Reconcile(ctx, api.Selector{LabelSelector: "tier=platform", Namespaces: []string{ns}})
	if err != nil || again.ID != st.ID || !again.Coalesced {
		t.Fatalf("identical request: %+v %v", again, err)
	}

	// Flux answers: the source and the Kustomization handle the job's request.
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, client.ObjectKey{Namespace: ns, Name: "infra"}, testenv.GitRevision("main", fluxtest.NewSHA()), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationFailed(ctx, fluxtest.Kube.Client, client.ObjectKey{Namespace: ns, Name: "platform"}, testenv.GitRevision("main", fluxtest.NewSHA()), "", "HealthCheckFailed", "Deployment/platform/api not ready"); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "job done", func() bool {
		st, err = p.Status(ctx, st.ID)
		return err == nil && st.Done
	})
	if st.Counts[api.StateSuccess] != 1 || st.Counts[api.StateFailure] != 1 {
		t.Fatalf("counts %v", st.Counts)
	}
	for _, pr := range st.Progress {
		if pr.Kind == kustomizev1.KustomizationKind && pr.Description != "Deployment/platform/api not ready" {
			t.Fatalf("failure description %q", pr.Description)
		}
	}
	// Finished: the same request now makes a new job.
	next, err := p.Reconcile(ctx, sel)
	if err != nil || next.ID == st.ID || next.Coalesced {
		t.Fatalf("request after the first finished: %+v %v", next, err)
	}

	// withSource false leaves the source alone; kinds and namespaces narrow.
	noSrc := false
	st2, err := p.Reconcile(ctx, api.Selector{Namespaces: []string{ns}, Kinds: []string{"kustomization"}, WithSource: &noSrc})
	if err != nil {
		t.Fatal(err)
	}
	st2 = requested(st2)
	got = got[:0]
	for _, tg := range st2.Targets {
		got = append(got, tg.Kind+"/"+tg.Name)
	}
	if want := []string{"Kustomization/apps", "Kustomization/platform"}; !slices.Equal(got, want) {
		t.Fatalf("targets %v, want %v", got, want)
	}

	// Job records the API did not write (anyone who may write the namespace's ConfigMaps
	// can): one past its hour and one with a selector the API refuses are not requested;
	// one without withSource is requested as the API defaults it (sources too), without a
	// panic.
	now := time.Now().UTC()
	written := func(name string, sel api.Selector, created time.Time) string {
		t.Helper()
		id := fmt.Sprintf("%016x", rand.Uint64())
		b, _ := json.Marshal(api.Job{ID: id, Selector: sel, Token: name + created.Format(time.RFC3339Nano), Created: created, Deadline: created.Add(time.Minute)})
		if err := fluxtest.Kube.Client.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: jobsNS, Name: "flux-webhook-job-" + id, Labels: map[string]string{jobs.JobLabel: name}},
			Data:       map[string]string{"job.json": string(b)},
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	stale := written("stale", api.Selector{Namespaces: []string{ns}}, now.Add(-2*time.Hour))
	bad := written("bad", api.Selector{Namespaces: []string{ns}, Kinds: []string{"Deployment"}}, now)
	defaulted := requested(&api.JobStatus{Job: api.Job{ID: written("defaulted", api.Selector{Namespaces: []string{ns}, Kinds: []string{"Kustomization"}}, now)}})
	if len(defaulted.Targets) != 3 || defaulted.Targets[0].Kind != sourcev1.GitRepositoryKind {
		t.Fatalf("job without withSource: targets %+v, want the source and both Kustomizations", defaulted.Targets)
	}
	for _, id := range []string{stale, bad} {
		if st, err := p.Status(ctx, id); err == nil && st.Requested || err != nil && !errors.Is(err, jobs.ErrJobNotFound) {
			t.Errorf("job %s: %+v %v, want not requested", id, st, err)
		}
	}

	// Guard rails.
	for name, bad := range map[string]api.Selector{
		"empty":          {},
		"unknown kind":   {Kinds: []string{"Deployment"}},
		"bad namespace":  {Namespaces: []string{"Not_A_Name"}},
		"bad label":      {LabelSelector: "tier in ("},
		"bad region":     {Region: "EU"},
		"empty but flag": {WithSource: &noSrc},
	} {
		if _, err := p.Reconcile(ctx, bad); !errors.Is(err, jobs.ErrBadSelector) && !errors.Is(err, jobs.ErrEmptySelector) {
			t.Errorf("%s selector: %v", name, err)
		}
	}
	// Three distinct requests were allowed at once (by any replica: the bucket is a
	// ConfigMap); the next is refused until it refills (one per 10 s).
	_, err = p.Reconcile(ctx, api.Selector{Namespaces: []string{ns}, Kinds: []string{"GitRepository"}})
	var limited *jobs.RateLimitedError
	if !errors.As(err, &limited) || limited.RetryAfter <= 0 {
		t.Fatalf("fourth distinct request: %v, want rate limited", err)
	}
	if _, err := p.Status(ctx, "0123456789abcdef"); !errors.Is(err, jobs.ErrJobNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
	if _, err := p.Status(ctx, "../../etc"); !errors.Is(err, jobs.ErrJobNotFound) {
		t.Fatalf("malformed job id: %v", err)
	}
}

func kustomizationOf(t *testing.T, ns, name string) *kustomizev1.Kustomization {
	t.Helper()
	ks := &kustomizev1.Kustomization{}
	if err := fluxtest.Kube.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, ks); err != nil {
		t.Fatal(err)
	}
	return ks
}
