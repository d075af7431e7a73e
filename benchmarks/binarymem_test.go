package benchmarks

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// memorySettle is how long after /readyz the service's memory is read: its caches synced,
// the first probes and discoveries done.
const memorySettle = 10 * time.Second

// BenchmarkBinaryMemory measures the memory of the flux-webhook binary (`flux-webhook serve`
// with its default flags) started on a cluster that already holds its Flux objects: the
// resident set (VmRSS) memorySettle after /readyz, its high-water mark since the start
// (VmHWM: the initial lists are where the peak is), and the live heap (go_gc_heap_live_bytes).
// objects=20 and the largest FLUX_WEBHOOK_BENCH_OBJECTS: one GitRepository and Kustomizations
// with a Flux status (an inventory of 50, a history of 3, patches, post-build
// substitutions), as BenchmarkBinaryFanOut's clusters hold them.
//
// hostile=…: what a tenant, cluster-admin in a registered cluster, can make one object cost,
// side by side in one run on one API server: 300 Kustomizations that match nothing, plain,
// then each given one 200 KiB annotation (58.6 MiB in all), then each also given 1,000
// labels, a 32 KiB Ready message and a 64 KiB path; the service is started on each in turn.
// Metric rss-B/obj: the growth over the plain objects, per object.
func BenchmarkBinaryMemory(b *testing.B) {
	needKube(b)
	d, err := os.MkdirTemp(dir, "memory-")
	if err != nil {
		b.Fatal(err)
	}
	k, err := testenv.StartKube(context.Background(), testenv.KubeOptions{Dir: d, CRDs: true})
	if err != nil {
		b.Fatal(err)
	}
	defer k.Stop()
	f := newFilled(k, fanOutObject)
	for _, n := range []int{20, maxObjects()} {
		if err := f.fill(context.Background(), n); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			for range b.N {
				rss, hwm, heap := serviceMemory(b, k)
				b.ReportMetric(rss/mib, "rss-MiB")
				b.ReportMetric(hwm/mib, "hwm-MiB")
				b.ReportMetric(heap/mib, "heap-live-MiB")
				b.Logf("%d Flux objects: VmRSS %.1f MiB, VmHWM %.1f MiB, live heap %.1f MiB", n, rss/mib, hwm/mib, heap/mib)
			}
		})
	}

	// The tenant's objects, on an API server of their own.
	d, err = os.MkdirTemp(dir, "hostile-")
	if err != nil {
		b.Fatal(err)
	}
	h, err := testenv.StartKube(context.Background(), testenv.KubeOptions{Dir: d, CRDs: true})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Stop()
	const hostile = 300
	tenant := newFilled(h, func(i int) client.Object {
		// Built from a GitRepository no push matches.
		return kustomization("tenant", fmt.Sprintf("app-%03d", i), "tenant", "nothing")
	})
	if err := tenant.fill(context.Background(), hostile); err != nil {
		b.Fatal(err)
	}
	var plain float64
	for _, variant := range []string{"plain", "annotation", "everything"} {
		if variant != "plain" {
			if err := inflate(b.Context(), h, hostile, variant); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("objects=%d/hostile=%s", hostile, variant), func(b *testing.B) {
			for range b.N {
				rss, hwm, heap := serviceMemory(b, h)
				if variant == "plain" {
					plain = rss
				}
				b.ReportMetric(rss/mib, "rss-MiB")
				b.ReportMetric(hwm/mib, "hwm-MiB")
				b.ReportMetric(heap/mib, "heap-live-MiB")
				b.ReportMetric((rss-plain)/hostile, "rss-B/obj")
				b.Logf("%d Kustomizations, %s: VmRSS %.1f MiB (%+.0f B per object over plain), VmHWM %.1f MiB, live heap %.1f MiB",
					hostile, variant, rss/mib, (rss-plain)/hostile, hwm/mib, heap/mib)
			}
		})
	}
}

// serviceMemory starts the service on k, waits memorySettle after it is ready, and returns
// its VmRSS, VmHWM and live heap; the service is stopped before it returns.
func serviceMemory(b *testing.B, k *testenv.Kube) (rss, hwm, heap float64) {
	svc := startService(b, k, k.Kubeconfig, "--cluster-name", "local")
	defer svc.Stop()
	time.Sleep(memorySettle)
	st := svc.status(b)
	m := svc.scrapeAll(b)
	svc.profiles(b, "settled")
	heap = sum(m, "go_gc_heap_live_bytes")
	// Where the resident set is: the binary's mapped pages (RssFile) and the process's own
	// memory (RssAnon): the Go heap in use, goroutine stacks, and what the runtime holds.
	b.Logf("VmRSS %.1f MiB = RssFile %.1f (the binary's pages) + RssAnon %.1f; heap in use %.1f MiB (live %.1f), heap idle not returned %.1f MiB, stacks %.1f MiB, goroutines %.0f",
		st["VmRSS"]/mib, st["RssFile"]/mib, st["RssAnon"]/mib, m["go_memstats_heap_inuse_bytes"]/mib, heap/mib,
		(m["go_memstats_heap_idle_bytes"]-m["go_memstats_heap_released_bytes"])/mib, m["go_memstats_stack_inuse_bytes"]/mib, m["go_goroutines"])
	return st["VmRSS"], st["VmHWM"], heap
}

// inflate gives the tenant's n Kustomizations what a tenant can write into them: a 200 KiB
// annotation ("annotation"), and besides 1,000 labels, a 32 KiB Ready message and a 64 KiB
// path ("everything").
func inflate(ctx context.Context, k *testenv.Kube, n int, variant string) error {
	big := strings.Repeat("x", 200<<10)
	for i := range n {
		o := &kustomizev1.Kustomization{}
		if err := k.Client.Get(ctx, client.ObjectKey{Namespace: "tenant", Name: fmt.Sprintf("app-%03d", i)}, o); err != nil {
			return err
		}
		ann := o.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann["tenant.example.com/blob"] = big
		o.SetAnnotations(ann)
		if variant == "everything" {
			labels := o.GetLabels()
			for j := range 1000 {
				labels[fmt.Sprintf("tenant.example.com/label-%04d", j)] = strings.Repeat("v", 63)
			}
			o.SetLabels(labels)
			o.Spec.Path = "./" + strings.Repeat("p", 64<<10)
		}
		if err := k.Client.Update(ctx, o); err != nil {
			return fmt.Errorf("inflate %s: %w", o.Name, err)
		}
		if variant == "everything" {
			for j := range o.Status.Conditions {
				if o.Status.Conditions[j].Type == meta.ReadyCondition {
					o.Status.Conditions[j].Message = strings.Repeat("m", 32<<10)
				}
			}
			o.Status.Conditions = append(o.Status.Conditions, metav1.Condition{Type: meta.StalledCondition, Status: metav1.ConditionFalse,
				Reason: "Tenant", Message: strings.Repeat("s", 32<<10), LastTransitionTime: since})
			if err := k.Client.Status().Update(ctx, o); err != nil {
				return fmt.Errorf("inflate status of %s: %w", o.Name, err)
			}
		}
	}
	return nil
}
