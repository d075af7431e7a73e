package cluster_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// Three real API servers: this package's, and two more registered through kubeconfig
// Secrets (one as vcluster writes it, under key "config", reached through a proxy that the
// test cuts to stop the cluster mid-test).
func TestClusters(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	east := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	west := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	westProxy := testenv.NewProxy(t, west.APIAddr())
	westKubeconfig, err := westProxy.KubeconfigVia(ctx, west.Kubeconfig, t.TempDir(), "kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	ns := fluxtest.Namespace(t)
	secret := func(name, clusterName, region, key, kubeconfig string) *corev1.Secret {
		b, err := os.ReadFile(kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
				Labels: map[string]string{cluster.ClusterLabel: clusterName, cluster.RegionLabel: region}},
			Data: map[string][]byte{key: b},
		}
	}
	eastSecret := secret("cluster-east", "east", "eu-central", "kubeconfig", east.Kubeconfig)
	if err := fluxtest.Kube.Client.Create(ctx, eastSecret); err != nil {
		t.Fatal(err)
	}
	if err := fluxtest.Kube.Client.Create(ctx, secret("vc-west", "west", "eu-west", "config", westKubeconfig)); err != nil {
		t.Fatal(err)
	}
	// Not clusters: no label, and a label without a kubeconfig.
	if err := fluxtest.Kube.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unlabelled"}}); err != nil {
		t.Fatal(err)
	}
	if err := fluxtest.Kube.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "empty",
		Labels: map[string]string{cluster.ClusterLabel: "empty"}}}); err != nil {
		t.Fatal(err)
	}

	set := cluster.NewSet(fluxtest.Local)
	cs, err := kubernetes.NewForConfig(fluxtest.Kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	rec := &fluxtest.Recorder{}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() {
		// Granted their organization by default (the Secrets have no annotation: grant_test.go).
		// The test's API servers listen on loopback: a category the service refuses unless
		// allowed.
		local, _ := cluster.ParseKubeconfigPolicy([]string{cluster.KubeconfigLocalAddress})
		_ = (&cluster.Secrets{Client: cs, Namespace: ns, Clusters: set, QPS: 50, Burst: 100, Policy: local, Keys: fluxtest.RecordKeys, Log: logr.Discard(),
			DefaultGrant: "org/*"}).Start(runCtx)
		done <- struct{}{}
	}()
	go func() {
		_ = (&report.Reporters{Clusters: set, New: func(c *cluster.Cluster) *report.Reporter {
			return &report.Reporter{Cluster: c, Poster: rec, Lookup: rec, ResultTimeout: time.Minute}
		}}).Start(runCtx)
		done <- struct{}{}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })

	names := func() []string {
		var out []string
		for _, c := range set.Clusters() {
			if c.Ready() {
				out = append(out, c.Name+"/"+c.Region)
			}
		}
		return out
	}
	fluxtest.WaitFor(t, "three clusters ready", func() bool {
		return slices.Equal(names(), []string{"east/eu-central", "local/", "west/eu-west"})
	})

	// The same repository feeds a GitRepository and a Kustomization in each cluster.
	repo := "org/fleet-" + fluxtest.RandomHex(3)
	clients := map[string]client.Client{"local": fluxtest.Kube.Client, "east": east.Client, "west": west.Client}
	for name, c := range clients {
		for _, o := range []client.Object{
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			fluxtest.GitRepository(ns, "fleet", "https://"+fluxtest.ForgeHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
			fluxtest.Kustomization(ns, "fleet", "", "fleet"),
		} {
			if err := c.Create(ctx, o); err != nil && !(name == "local" && strings.Contains(err.Error(), "already exists")) {
				t.Fatal(err)
			}
		}
	}
	pushes := &record.PushStore{Client: fluxtest.Kube.Client, Reader: fluxtest.Kube.Client, Namespace: ns}
	r := fluxtest.NewRequester(t, set, func(r *request.Requester) { r.Store = pushes })
	backlogCtx, stopBacklog := context.WithCancel(context.Background())
	backlogDone := make(chan struct{})
	go func() {
		defer close(backlogDone)
		_ = (&report.Backlog{Store: pushes, Clusters: set, Poster: rec, Lookup: rec, Grace: 5 * time.Second, ResultTimeout: time.Minute}).Start(backlogCtx)
	}()
	t.Cleanup(func() { stopBacklog(); <-backlogDone })
	var res gitops.Result
	fluxtest.WaitFor(t, "every cluster's cache sees the objects", func() bool {
		res, err = r.Request(ctx, fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA()))
		return err == nil && len(res.Targets) == 6
	})
	contextOf := func(cluster, kind string) string {
		return api.Target{Cluster: cluster, Kind: kind, Namespace: ns, Name: "fleet"}.Context()
	}

	// One push fans out to all three clusters; each cluster's reporter reports its own.
	sha := fluxtest.NewSHA()
	if res, err = r.Request(ctx, fluxtest.PushOf(repo, "refs/heads/main", sha)); err != nil || len(res.Targets) != 6 {
		t.Fatalf("fan-out: %v %v", fluxtest.Targets(res.Targets), err)
	}
	for cluster := range clients {
		for _, kind := range []string{sourcev1.GitRepositoryKind, kustomizev1.KustomizationKind} {
			fluxtest.WaitStates(t, rec, sha, contextOf(cluster, kind), api.StatePending)
		}
	}
	if err := testenv.MarkGitRepositoryReady(ctx, east.Client, client.ObjectKey{Namespace: ns, Name: "fleet"}, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, contextOf("east", sourcev1.GitRepositoryKind), api.StatePending, api.StateSuccess)

	// A cluster that stops answering does not hold up the others: its objects get an error
	// status with the reason, the others are requested as usual.
	westProxy.Cut()
	down := fluxtest.NewSHA()
	start := time.Now()
	res, err = r.Request(ctx, fluxtest.PushOf(repo, "refs/heads/main", down))
	if err != nil {
		t.Fatalf("one cluster down failed the push: %v", err)
	}
	t.Logf("push with one of three clusters down answered in %s", time.Since(start).Round(time.Millisecond))
	for _, o := range res.Targets {
		// Requested now, or coalesced with the pushes just before (within 2 s).
		if o.Cluster == "west" && o.Result != api.ResultError || o.Cluster != "west" && !o.Requested() {
			t.Fatalf("%s: %s (%s)", o.Target, o.Result, o.Error)
		}
	}
	fluxtest.WaitStates(t, rec, down, contextOf("west", kustomizev1.KustomizationKind), api.StateError)
	// The status says what kind of failure, and a reference to the log line: no internal
	// address of the API server.
	if d := rec.Find(down, contextOf("west", kustomizev1.KustomizationKind)).Description; !strings.HasPrefix(d, "not requested: cluster west ") ||
		!strings.Contains(d, "(ref ") || strings.Contains(d, "127.0.0.1") || strings.Contains(d, "https://") {
		t.Fatalf("description %q", d)
	}
	for _, o := range res.Targets {
		if o.Cluster == "west" && (strings.Contains(o.Error, "127.0.0.1") || !strings.Contains(o.Error, "(ref ")) {
			t.Fatalf("answer's reason %q", o.Error)
		}
	}
	fluxtest.WaitStates(t, rec, down, contextOf("east", kustomizev1.KustomizationKind), api.StatePending)

	// The leader's worker asks a cluster that stops answering again, with backoff, until the
	// result timeout: once it is back, its targets are requested and get the reporter's
	// statuses, no error.
	cs2, err := kubernetes.NewForConfig(fluxtest.Kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	workCtx, stopWorker := context.WithCancel(context.Background())
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		_ = (&request.Worker{Clusters: set, Store: pushes, Client: cs2, ResultTimeout: time.Minute}).Start(workCtx)
	}()
	retried := fluxtest.NewSHA()
	if res, err = r.Accept(ctx, fluxtest.PushOf(repo, "refs/heads/main", retried)); err != nil || len(res.Clusters) != 3 {
		t.Fatalf("accept with west down: %v %v", res.Clusters, err)
	}
	fluxtest.WaitStates(t, rec, retried, contextOf("east", kustomizev1.KustomizationKind), api.StatePending)
	if got := rec.States(retried, contextOf("west", kustomizev1.KustomizationKind)); len(got) != 0 {
		t.Fatalf("west, down, got %v", got)
	}
	sent := time.Now()
	if err := westProxy.Restore(); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, retried, contextOf("west", kustomizev1.KustomizationKind), api.StatePending)
	t.Logf("the worker requested west %s after it came back", time.Since(sent).Round(time.Millisecond))
	stopWorker()
	<-workerDone

	// Removing a Secret removes its cluster (and stops its cache and reporter).
	if err := fluxtest.Kube.Client.Delete(ctx, eastSecret); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "east removed", func() bool { return set.Get("east") == nil })
	fluxtest.WaitFor(t, "push without east", func() bool {
		res, err = r.Request(ctx, fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA()))
		return err == nil && len(res.Targets) == 4
	})
	for _, o := range res.Targets {
		if o.Cluster == "east" {
			t.Fatalf("removed cluster requested: %s", o.Target)
		}
	}

	// Adding it back under another name and region takes effect without a restart.
	eastSecret = secret("cluster-east", "east-2", "eu-central", "kubeconfig", east.Kubeconfig)
	if err := fluxtest.Kube.Client.Create(ctx, eastSecret); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "east-2 ready", func() bool { c := set.Get("east-2"); return c != nil && c.Ready() })
	again := fluxtest.NewSHA()
	fluxtest.WaitFor(t, "push reaches east-2", func() bool {
		res, err = r.Request(ctx, fluxtest.PushOf(repo, "refs/heads/main", again))
		return err == nil && slices.ContainsFunc(res.Targets, func(o api.Outcome) bool { return o.Cluster == "east-2" })
	})
	fluxtest.WaitStates(t, rec, again, contextOf("east-2", kustomizev1.KustomizationKind), api.StatePending)
}
