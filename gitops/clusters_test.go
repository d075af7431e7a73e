package gitops_test

import (
	"context"
	"fmt"
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

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// Three real API servers: this package's, and two more registered through kubeconfig
// Secrets (one as vcluster writes it, under key "config", reached through a proxy that the
// test cuts to stop the cluster mid-test).
func TestClusters(t *testing.T) {
	integration(t)
	ctx := t.Context()
	east := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	west := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	westProxy := testenv.NewProxy(t, west.APIAddr())
	westKubeconfig, err := westProxy.KubeconfigVia(ctx, west.Kubeconfig, t.TempDir(), "kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t)
	secret := func(name, cluster, region, key, kubeconfig string) *corev1.Secret {
		b, err := os.ReadFile(kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
				Labels: map[string]string{gitops.ClusterLabel: cluster, gitops.RegionLabel: region}},
			Data: map[string][]byte{key: b},
		}
	}
	eastSecret := secret("cluster-east", "east", "eu-central", "kubeconfig", east.Kubeconfig)
	if err := kube.Client.Create(ctx, eastSecret); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Create(ctx, secret("vc-west", "west", "eu-west", "config", westKubeconfig)); err != nil {
		t.Fatal(err)
	}
	// Not clusters: no label, and a label without a kubeconfig.
	if err := kube.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unlabelled"}}); err != nil {
		t.Fatal(err)
	}
	if err := kube.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "empty",
		Labels: map[string]string{gitops.ClusterLabel: "empty"}}}); err != nil {
		t.Fatal(err)
	}

	set := gitops.NewClusterSet(local)
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() {
		_ = (&gitops.ClusterSecrets{Client: cs, Namespace: ns, Clusters: set, QPS: 50, Burst: 100, Keys: recordKeys, Log: logr.Discard()}).Start(runCtx)
		done <- struct{}{}
	}()
	go func() {
		_ = (&gitops.Reporters{Clusters: set, New: func(c *gitops.Cluster) *gitops.Reporter {
			return &gitops.Reporter{Cluster: c, Poster: rec, Lookup: rec, ResultTimeout: time.Minute}
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
	waitFor(t, "three clusters ready", func() bool {
		return slices.Equal(names(), []string{"east/eu-central", "local/", "west/eu-west"})
	})

	// The same repository feeds a GitRepository and a Kustomization in each cluster.
	repo := "org/fleet-" + randomHex(3)
	clients := map[string]client.Client{"local": kube.Client, "east": east.Client, "west": west.Client}
	for name, c := range clients {
		for _, o := range []client.Object{
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			gitRepository(ns, "fleet", "https://"+giteaHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
			kustomization(ns, "fleet", "", "fleet"),
		} {
			if err := c.Create(ctx, o); err != nil && !(name == "local" && strings.Contains(err.Error(), "already exists")) {
				t.Fatal(err)
			}
		}
	}
	pushes := &gitops.PushStore{Client: kube.Client, Reader: kube.Client, Namespace: ns}
	r := &gitops.Requester{Clusters: set, Backlog: pushes}
	backlogCtx, stopBacklog := context.WithCancel(context.Background())
	backlogDone := make(chan struct{})
	go func() {
		defer close(backlogDone)
		_ = (&gitops.Backlog{Store: pushes, Clusters: set, Poster: rec, Lookup: rec, Grace: 5 * time.Second, ResultTimeout: time.Minute}).Start(backlogCtx)
	}()
	t.Cleanup(func() { stopBacklog(); <-backlogDone })
	var res gitops.Result
	waitFor(t, "every cluster's cache sees the objects", func() bool {
		res, err = r.Request(ctx, pushOf(repo, "refs/heads/main", newSHA()))
		return err == nil && len(res.Targets) == 6
	})
	contextOf := func(cluster, kind string) string {
		return gitops.Target{Cluster: cluster, Kind: kind, Namespace: ns, Name: "fleet"}.Context()
	}

	// One push fans out to all three clusters; each cluster's reporter reports its own.
	sha := newSHA()
	if res, err = r.Request(ctx, pushOf(repo, "refs/heads/main", sha)); err != nil || len(res.Targets) != 6 {
		t.Fatalf("fan-out: %v %v", targets(res.Targets), err)
	}
	for cluster := range clients {
		for _, kind := range []string{gitops.KindGitRepository, gitops.KindKustomization} {
			waitStates(t, rec, sha, contextOf(cluster, kind), gitops.StatePending)
		}
	}
	if err := testenv.MarkGitRepositoryReady(ctx, east.Client, client.ObjectKey{Namespace: ns, Name: "fleet"}, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	waitStates(t, rec, sha, contextOf("east", gitops.KindGitRepository), gitops.StatePending, gitops.StateSuccess)

	// A cluster that stops answering does not hold up the others: its objects get an error
	// status with the reason, the others are requested as usual.
	westProxy.Cut()
	down := newSHA()
	start := time.Now()
	res, err = r.Request(ctx, pushOf(repo, "refs/heads/main", down))
	if err != nil {
		t.Fatalf("one cluster down failed the push: %v", err)
	}
	t.Logf("push with one of three clusters down answered in %s", time.Since(start).Round(time.Millisecond))
	for _, o := range res.Targets {
		// Requested now, or coalesced with the pushes just before (within 2 s).
		if o.Cluster == "west" && o.Result != gitops.ResultError || o.Cluster != "west" && !o.Requested() {
			t.Fatalf("%s: %s (%s)", o.Target, o.Result, o.Error)
		}
	}
	waitStates(t, rec, down, contextOf("west", gitops.KindKustomization), gitops.StateError)
	// The status says what kind of failure, and a reference to the log line: no internal
	// address of the API server.
	if d := rec.find(down, contextOf("west", gitops.KindKustomization)).Description; !strings.HasPrefix(d, "not requested: cluster west ") ||
		!strings.Contains(d, "(ref ") || strings.Contains(d, "127.0.0.1") || strings.Contains(d, "https://") {
		t.Fatalf("description %q", d)
	}
	for _, o := range res.Targets {
		if o.Cluster == "west" && (strings.Contains(o.Error, "127.0.0.1") || !strings.Contains(o.Error, "(ref ")) {
			t.Fatalf("answer's reason %q", o.Error)
		}
	}
	waitStates(t, rec, down, contextOf("east", gitops.KindKustomization), gitops.StatePending)

	// The sender's retry within the grace, once the cluster is back, requests what the first
	// delivery could not: the target then gets the reporter's statuses and no error.
	retried := newSHA()
	if res, err = r.Request(ctx, pushOf(repo, "refs/heads/main", retried)); err != nil ||
		!slices.ContainsFunc(res.Targets, func(o gitops.Outcome) bool { return o.Cluster == "west" && o.Result == gitops.ResultError }) {
		t.Fatalf("west down: %v %v", targets(res.Targets), err)
	}
	sent := time.Now()
	if err := westProxy.Restore(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retry requests west", func() bool {
		res, err = r.Request(ctx, pushOf(repo, "refs/heads/main", retried))
		return err == nil && !slices.ContainsFunc(res.Targets, func(o gitops.Outcome) bool { return o.Cluster == "west" && !o.Requested() })
	})
	t.Logf("retry requested west %s after the first delivery", time.Since(sent).Round(time.Millisecond))
	time.Sleep(time.Until(sent.Add(6 * time.Second))) // past the grace
	waitStates(t, rec, retried, contextOf("west", gitops.KindKustomization), gitops.StatePending)

	// Removing a Secret removes its cluster (and stops its cache and reporter).
	if err := kube.Client.Delete(ctx, eastSecret); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "east removed", func() bool { return set.Get("east") == nil })
	waitFor(t, "push without east", func() bool {
		res, err = r.Request(ctx, pushOf(repo, "refs/heads/main", newSHA()))
		return err == nil && len(res.Targets) == 4
	})
	for _, o := range res.Targets {
		if o.Cluster == "east" {
			t.Fatalf("removed cluster requested: %s", o.Target)
		}
	}

	// Adding it back under another name and region takes effect without a restart.
	eastSecret = secret("cluster-east", "east-2", "eu-central", "kubeconfig", east.Kubeconfig)
	if err := kube.Client.Create(ctx, eastSecret); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "east-2 ready", func() bool { c := set.Get("east-2"); return c != nil && c.Ready() })
	again := newSHA()
	waitFor(t, "push reaches east-2", func() bool {
		res, err = r.Request(ctx, pushOf(repo, "refs/heads/main", again))
		return err == nil && slices.ContainsFunc(res.Targets, func(o gitops.Outcome) bool { return o.Cluster == "east-2" })
	})
	waitStates(t, rec, again, contextOf("east-2", gitops.KindKustomization), gitops.StatePending)
}

// A push overtaken before its delivery was verified (Head set) requests nothing: each
// object it feeds is owed a warning, which the leader's backlog posts once, however often
// the push is delivered.
func TestOvertakenPush(t *testing.T) {
	integration(t)
	ctx := t.Context()
	rec := &recorder{}
	p := newPipeline(t)
	pushes := &gitops.PushStore{Client: kube.Client, Reader: kube.Client, Namespace: p.ns}
	set := gitops.NewClusterSet(local)
	r := &gitops.Requester{Clusters: set, Backlog: pushes}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&gitops.Backlog{Store: pushes, Clusters: set, Poster: rec, Lookup: rec, ResultTimeout: time.Minute}).Start(runCtx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	before := map[string]string{}
	for _, o := range []client.Object{&sourcev1.GitRepository{}, &kustomizev1.Kustomization{}} {
		if err := kube.Client.Get(ctx, p.gr, o); err != nil {
			t.Fatal(err)
		}
		before[fmt.Sprintf("%T", o)] = o.GetResourceVersion()
	}
	old, head := newSHA(), newSHA()
	push := pushOf(p.repo, "refs/heads/main", old)
	push.Head = head
	for range 3 {
		res, err := r.Request(ctx, push)
		if err != nil || len(res.Targets) != 2 || res.Targets[0].Result != gitops.ResultSuperseded || !res.Targets[0].Reported() {
			t.Fatalf("overtaken push: %v %v", targets(res.Targets), err)
		}
	}
	for _, kind := range []string{gitops.KindGitRepository, gitops.KindKustomization} {
		waitStates(t, rec, old, p.ctx(kind), gitops.StateWarning)
		if d := rec.find(old, p.ctx(kind)).Description; d != "superseded by "+head[:12] {
			t.Fatalf("description %q", d)
		}
	}
	for _, o := range []client.Object{&sourcev1.GitRepository{}, &kustomizev1.Kustomization{}} {
		if err := kube.Client.Get(ctx, p.gr, o); err != nil {
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
	for _, kind := range []string{gitops.KindGitRepository, gitops.KindKustomization} {
		waitStates(t, rec, old, p.ctx(kind), gitops.StateWarning)
	}
}
