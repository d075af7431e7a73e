package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// A tenant, cluster-admin in its cluster, writes what it likes into its Flux objects: the
// cache keeps only what flux-webhook reads, each within its bound, whatever that is (seen
// before: 300 Kustomizations given a 200 KiB annotation each grew the service by 94 MiB).
// On the real API server, through the cache the service keeps (cluster.CacheOptions).
func TestTenantObjectsBounded(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	ns := fluxtest.Namespace(t)
	blob := strings.Repeat("x", 200<<10)
	newK := func(name string, edit func(k *kustomizev1.Kustomization)) *kustomizev1.Kustomization {
		k := fluxtest.Kustomization(ns, name, "", "tenant-source")
		k.Labels = map[string]string{"app.kubernetes.io/part-of": "tenant"}
		k.Annotations = map[string]string{meta.ReconcileRequestAnnotation: "2026-12-07T10:00:00Z", "tenant.example.com/note": "kept by nobody",
			"kubectl.kubernetes.io/last-applied-configuration": `{"spec":{}}`}
		k.Finalizers = []string{"finalizers.fluxcd.io"}
		if edit != nil {
			edit(k)
		}
		return k
	}
	objs := []*kustomizev1.Kustomization{
		newK("plain", nil),
		newK("blob", func(k *kustomizev1.Kustomization) { k.Annotations["tenant.example.com/blob"] = blob }),
		newK("labels", func(k *kustomizev1.Kustomization) {
			for i := range 1000 {
				k.Labels[fmt.Sprintf("tenant.example.com/label-%04d", i)] = strings.Repeat("v", 63)
			}
		}),
		newK("record", func(k *kustomizev1.Kustomization) {
			k.Annotations[record.Annotation] = `{"current":{"token":"` + strings.Repeat("r", 100<<10) + `"}}`
			k.Annotations[record.MACAnnotation] = strings.Repeat("m", 20<<10)
			k.Annotations[meta.ReconcileRequestAnnotation] = strings.Repeat("t", 10<<10)
		}),
		newK("huge-spec", func(k *kustomizev1.Kustomization) { k.Spec.Path = "./" + strings.Repeat("p", 64<<10) }),
		newK("huge-status", nil),
	}
	strippedBefore := fluxtest.Counter(t, "flux_webhook_cache_stripped_total", "cluster", "local", "reason", "object")
	for _, o := range objs {
		if err := fluxtest.Kube.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", o.Name, err)
		}
	}
	// A status the tenant writes too: a 32 KiB Ready message.
	hs := objs[len(objs)-1]
	apimeta.SetStatusCondition(&hs.Status.Conditions, metav1.Condition{Type: meta.ReadyCondition, Status: metav1.ConditionFalse,
		Reason: "Tenant", Message: strings.Repeat("s", 32<<10)})
	if err := fluxtest.Kube.Client.Status().Update(ctx, hs); err != nil {
		t.Fatal(err)
	}

	cached := func(name string) *kustomizev1.Kustomization {
		k := &kustomizev1.Kustomization{}
		fluxtest.WaitFor(t, "the cache has "+name, func() bool {
			err := fluxtest.Local.GetCache().Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, k)
			return err == nil && (name != "huge-status" || k.Spec.Path == "")
		})
		return k
	}
	for _, o := range objs {
		k := cached(o.Name)
		for key, v := range k.Annotations {
			switch key {
			case meta.ReconcileRequestAnnotation, record.Annotation, record.MACAnnotation:
				if len(v) > cluster.MaxRequestedAtBytes && key == meta.ReconcileRequestAnnotation || len(v) > 100 && o.Name == "record" {
					t.Errorf("%s: annotation %s kept at %d bytes", o.Name, key, len(v))
				}
			default:
				t.Errorf("%s: annotation %s kept: flux-webhook never reads it", o.Name, key)
			}
		}
		size := 0
		for key, v := range k.Labels {
			size += len(key) + len(v)
		}
		if size > cluster.MaxLabelBytes || len(k.Labels) == 0 {
			t.Errorf("%s: %d labels of %d bytes kept", o.Name, len(k.Labels), size)
		}
		if len(k.Finalizers) > 0 {
			t.Errorf("%s: finalizers kept", o.Name)
		}
		switch o.Name {
		case "huge-spec", "huge-status":
			// Larger than the cache keeps of an object: its metadata only.
			if k.Spec.Path != "" || len(k.Status.Conditions) > 0 || k.Spec.SourceRef.Name != "" {
				t.Errorf("%s: spec or status kept of an object over %d bytes", o.Name, cluster.MaxCachedObjectBytes)
			}
			if k.UID == "" || k.ResourceVersion == "" {
				t.Errorf("%s: metadata not kept", o.Name)
			}
		default:
			if k.Spec.SourceRef.Name != "tenant-source" || k.Spec.Path == "" {
				t.Errorf("%s: spec lost (%+v)", o.Name, k.Spec.SourceRef)
			}
		}
	}
	// A record too long to be one flux-webhook wrote reads as none it wrote: rejected, not
	// trusted, whatever it said.
	if _, err := fluxtest.Local.OpenRecord(kustomizev1.KustomizationKind, cached("record")); err == nil {
		t.Fatal("a cut record opened")
	} else if rej := (*record.RejectedError)(nil); !errors.As(err, &rej) {
		t.Fatalf("a cut record: %v", err)
	}
	if got := fluxtest.Counter(t, "flux_webhook_cache_stripped_total", "cluster", "local", "reason", "object"); got < strippedBefore+2 {
		t.Fatalf("stripped objects counted %v, want at least %v", got, strippedBefore+2)
	}
}

// A tenant that creates more Flux objects than a registered cluster may have cached is not
// cached at all: counted before its objects are listed (and as they come, once cached), the
// cluster is refused as an unsafe kubeconfig is (log, metric, an Event on its registration
// Secret), and counted again later.
func TestClusterObjectCap(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	tenant := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	ns := fluxtest.Namespace(t)
	const max = 5
	tenantNS := "apps"
	if err := tenant.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenantNS}}); err != nil {
		t.Fatal(err)
	}
	create := func(from, to int) {
		for i := from; i < to; i++ {
			if err := tenant.Client.Create(ctx, fluxtest.Kustomization(tenantNS, fmt.Sprintf("app-%d", i), "", "platform")); err != nil {
				t.Fatal(err)
			}
		}
	}
	create(0, max+1)
	kubeconfig, err := os.ReadFile(tenant.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vc-tenant", Labels: map[string]string{cluster.ClusterLabel: "tenant"}},
		Data: map[string][]byte{"config": kubeconfig}}
	if err := fluxtest.Kube.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	refusedBefore := fluxtest.Counter(t, "flux_webhook_clusters_refused_total", "reason", "too-many-objects")
	set := cluster.NewSet(fluxtest.Local)
	cs, err := kubernetes.NewForConfig(fluxtest.Kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	local, _ := cluster.ParseKubeconfigPolicy([]string{cluster.KubeconfigLocalAddress}) // the tenant's API server is on loopback
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&cluster.Secrets{Client: cs, Namespace: ns, Clusters: set, QPS: 50, Burst: 100, Policy: local, Keys: fluxtest.RecordKeys, MaxObjects: max,
			TooManyRetry: time.Second, Events: fluxtest.Local.GetEventRecorder(cluster.EventSource), Log: logr.Discard()}).Start(runCtx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	refusals := func() []string {
		var evs eventsv1.EventList
		if err := fluxtest.Kube.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs.Items {
			if e.Regarding.Name == secret.Name && e.Reason == "ClusterRefused" {
				out = append(out, e.Note)
			}
		}
		return out
	}
	overCap := func(what string) {
		t.Helper()
		fluxtest.WaitFor(t, what, func() bool {
			for _, note := range refusals() {
				if strings.Contains(note, "too many Flux objects") {
					return set.Get("tenant") == nil
				}
			}
			return false
		})
	}

	// Over the cap from the start: counted before any object is listed, never cached.
	overCap("the tenant refused for its objects")
	if got := fluxtest.Counter(t, "flux_webhook_clusters_refused_total", "reason", "too-many-objects"); got <= refusedBefore {
		t.Fatal("refusal not counted")
	}
	// Back under the cap, it is counted again and registered.
	for i := range 2 {
		if err := tenant.Client.Delete(ctx, fluxtest.Kustomization(tenantNS, fmt.Sprintf("app-%d", i), "", "platform")); err != nil {
			t.Fatal(err)
		}
	}
	fluxtest.WaitFor(t, "the tenant registered under the cap", func() bool { c := set.Get("tenant"); return c != nil && c.Ready() })
	// Counted at the cluster's first probe once its caches synced.
	fluxtest.WaitFor(t, "the cache's objects counted", func() bool { c := set.Get("tenant"); return c != nil && c.Objects() == max-1 })
	// Over it again while cached: counted as the objects come (at the next probe), and let
	// go of; refused as before (the Event the same one, its series counted on).
	refused := fluxtest.Counter(t, "flux_webhook_clusters_refused_total", "reason", "too-many-objects")
	create(max+1, max+3)
	fluxtest.WaitFor(t, "the tenant let go of over the cap", func() bool {
		return set.Get("tenant") == nil && fluxtest.Counter(t, "flux_webhook_clusters_refused_total", "reason", "too-many-objects") > refused
	})
	if len(refusals()) == 0 {
		t.Fatal("no Event on the cluster's Secret")
	}
}
