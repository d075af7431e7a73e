package observe_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(fluxtest.Main(m)) }

// A ?wait=true stream evaluates, on each change of a Flux object, only the targets that
// object can answer (itself, or what builds from it): 100 waited-for Kustomizations cost
// nothing when an unrelated object changes, about one evaluation when one of them does,
// one each when their common source does. Evaluating every target on every change would
// cost 100 per change.
func TestAwaitWorkPerChange(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	ns := fluxtest.Namespace(t)
	repo := "org/await-" + fluxtest.RandomHex(3)
	const n = 100
	objs := []client.Object{
		fluxtest.GitRepository(ns, "src", "https://"+fluxtest.ForgeHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
		fluxtest.GitRepository(ns, "unrelated", "https://"+fluxtest.ForgeHost+"/org/other", &sourcev1.GitRepositoryRef{Branch: "main"}),
	}
	for i := range n {
		objs = append(objs, fluxtest.Kustomization(ns, fmt.Sprintf("ks-%03d", i), "", "src"))
	}
	fluxtest.Create(t, objs...)
	set := cluster.NewSet(fluxtest.Local)
	push := fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA())
	fluxtest.WaitFor(t, "the cache holds every object", func() bool {
		var l kustomizev1.KustomizationList
		return fluxtest.Local.GetCache().List(ctx, &l, client.InNamespace(ns)) == nil && len(l.Items) == n
	})
	res, err := fluxtest.NewRequester(t, set).Request(ctx, push)
	if err != nil || len(res.Targets) != n+1 {
		t.Fatalf("request: %d targets, %v", len(res.Targets), err)
	}
	answers := (&observe.Awaiter{Clusters: set}).Await(ctx, push, res, time.Minute)
	settled := func() int64 {
		// Until the requests' own writes have reached the cache and been evaluated.
		last := observe.Judged()
		for {
			time.Sleep(time.Second)
			now := observe.Judged()
			if now == last {
				return now
			}
			last = now
		}
	}
	touch := func(key client.ObjectKey, o client.Object, times int) {
		t.Helper()
		for i := range times {
			if err := fluxtest.Kube.Client.Get(ctx, key, o); err != nil {
				t.Fatal(err)
			}
			base := o.DeepCopyObject().(client.Object)
			l := o.GetLabels()
			if l == nil {
				l = map[string]string{}
			}
			l["touched"] = fmt.Sprint(i)
			o.SetLabels(l)
			if err := fluxtest.Kube.Client.Patch(ctx, o, client.MergeFrom(base)); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := settled()
	touch(client.ObjectKey{Namespace: ns, Name: "unrelated"}, &sourcev1.GitRepository{}, 20)
	unrelated := settled() - start
	start = settled()
	touch(client.ObjectKey{Namespace: ns, Name: "ks-007"}, &kustomizev1.Kustomization{}, 20)
	one := settled() - start
	start = settled()
	touch(client.ObjectKey{Namespace: ns, Name: "src"}, &sourcev1.GitRepository{}, 3)
	source := settled() - start
	t.Logf("%d targets waited for: 20 changes of an unrelated object cost %d evaluations, 20 of one target %d, 3 of their source %d",
		n+1, unrelated, one, source)
	if unrelated != 0 || one < 1 || one > 20 || source < n || source > 3*(n+1) {
		t.Fatalf("evaluations: unrelated %d (want 0), one target %d (want 1 to 20), their source %d (want %d to %d)",
			unrelated, one, source, n, 3*(n+1))
	}
	// Flux answers: each target once.
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, client.ObjectKey{Namespace: ns, Name: "src"}, testenv.GitRevision("main", push.SHA), ""); err != nil {
		t.Fatal(err)
	}
	got := map[api.Target]int{}
	deadline := time.After(time.Minute)
	for len(got) < 1 {
		select {
		case r := <-answers:
			got[r.Target]++
		case <-deadline:
			t.Fatal("no answer for the source")
		}
	}
}
