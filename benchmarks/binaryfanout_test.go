package benchmarks

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// clientLimits are the client limits of a run: the service's defaults (--kube-qps 50
// --kube-burst 300, Flux's own controllers'), and a user's raised ones.
type clientLimits struct {
	qps   float32
	burst int
}

func (l clientLimits) String() string { return fmt.Sprintf("%g-%d", l.qps, l.burst) }

var benchLimits = []clientLimits{{50, 300}, {200, 400}}

// limitedAt returns k's admin config with the given client limits.
func limitedAt(k *testenv.Kube, l clientLimits) *rest.Config {
	cfg := rest.CopyConfig(k.Config)
	cfg.QPS, cfg.Burst = l.qps, l.burst
	return cfg
}

// BenchmarkBinaryFanOut measures a push's fan-out as a user sees it, side by side in one
// run: the flux-webhook binary (`flux-webhook serve --kube-qps Q --kube-burst B
// --cluster-qps Q --cluster-burst B`, its own cluster the first API server, the others
// registered by kubeconfig Secrets, claims not checked with Gitea: no --gitea-url) answering
// one push by HTTP (a Gitea push event, an Actions step's repository token), against a raw
// client-go loop merge-patching requestedAt on the same objects at the same client limits,
// request.DefaultWorkers at once per cluster, sources first. Both are timed from the first
// request (the POST to /hook; the raw loop's first patch) until a metadata watch of every
// API server has seen every object carry the push's requestedAt. Every cluster holds one
// GitRepository of the pushed repository and N-1 Kustomizations built from it, each with
// a Flux status (an inventory of 50, a history of 3): the push feeds N objects per cluster.
//
// Each op runs the binary's push, the raw loop (which changes every object, as Flux's
// status updates would), and the binary's next push (on objects changed since it last
// wrote them); the service runs throughout, started on clusters that hold the objects.
// Metrics: svc-obj/s, raw-obj/s, ratio (service/raw), ratio-again (its next push), hook-ms
// (the 202), and the service's own requests per object during its push (client-go's
// rest_client_requests_total by method: patch/obj, post/obj, put/obj, get/obj).
func BenchmarkBinaryFanOut(b *testing.B) {
	needKube(b)
	servers := serverCounts()
	kubes := startKubes(b, slices.Max(servers))
	defer func() {
		for _, k := range kubes {
			_ = k.Stop()
		}
	}()
	fills := make([]*filled, len(kubes))
	for i, k := range kubes {
		fills[i] = newFilled(k, fanOutObject)
	}
	for _, n := range objectCounts() {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(fills))
		for i, fl := range fills {
			wg.Go(func() { errs[i] = fl.fill(context.Background(), n) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("%d API servers filled to %d objects each in %s", len(kubes), n, time.Since(start).Round(time.Millisecond))
		for _, s := range servers {
			for _, l := range benchLimits {
				b.Run(fmt.Sprintf("objects=%d/clusters=%d/limits=%s", n, s, l), func(b *testing.B) {
					binaryFanOut(b, kubes[:s], n, l)
				})
			}
		}
	}
}

func binaryFanOut(b *testing.B, kubes []*testenv.Kube, n int, l clientLimits) {
	total := n * len(kubes)
	watch := watchRequested(b, kubes, gitRepositories, kustomizations)
	defer watch.stop()
	b.StopTimer()
	flags := []string{"--cluster-name", "c0", "--kube-qps", fmt.Sprint(l.qps), "--kube-burst", fmt.Sprint(l.burst),
		"--cluster-qps", fmt.Sprint(l.qps), "--cluster-burst", fmt.Sprint(l.burst)}
	if n > cluster.DefaultMaxObjects {
		flags = append(flags, "--cluster-max-objects", fmt.Sprint(n))
	}
	svc := startService(b, kubes[0], kubes[0].Kubeconfig, flags...)
	defer unregister(b, kubes[0])
	var names []string
	for i, k := range kubes {
		names = append(names, fmt.Sprintf("c%d", i))
		if i > 0 {
			kc, err := os.ReadFile(k.Kubeconfig)
			if err != nil {
				b.Fatal(err)
			}
			register(b, kubes[0], names[i], kc)
		}
	}
	svc.waitClustersUp(b, names, 5*time.Minute)
	raws := make([]metadata.Interface, len(kubes))
	for i, k := range kubes {
		var err error
		if raws[i], err = metadata.NewForConfig(limitedAt(k, l)); err != nil {
			b.Fatal(err)
		}
	}
	var first, again, raw, hook time.Duration
	var calls, callsAgain map[string]float64
	var retries atomic.Int64
	b.ResetTimer()
	b.StopTimer()
	for i := range b.N {
		settle(b, watch, kubes, n, l)
		profiled := svc.cpuProfile(b, fmt.Sprint("first-", i))
		took, h, c := servicePush(b, svc, watch, total, fmt.Sprint("first", n, len(kubes), l, i, time.Now().UnixNano()))
		profiled()
		first, hook = first+took, hook+h
		calls = addCalls(calls, c)
		settle(b, watch, kubes, n, l)
		raw += rawPush(b, raws, watch, n, &retries)
		settle(b, watch, kubes, n, l)
		took, _, c = servicePush(b, svc, watch, total, fmt.Sprint("again", n, len(kubes), l, i, time.Now().UnixNano()))
		again += took
		callsAgain = addCalls(callsAgain, c)
	}
	rate := func(d time.Duration) float64 { return float64(total*b.N) / d.Seconds() }
	b.ReportMetric(float64(first.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(rate(first), "svc-obj/s")
	b.ReportMetric(rate(raw), "raw-obj/s")
	b.ReportMetric(rate(first)/rate(raw), "ratio")
	b.ReportMetric(rate(again)/rate(raw), "ratio-again")
	b.ReportMetric(float64(hook.Microseconds())/1000/float64(b.N), "hook-ms")
	b.ReportMetric(float64(retries.Load())/float64(b.N), "raw-retries")
	for _, m := range []string{"PATCH", "POST", "PUT", "GET"} {
		b.ReportMetric(calls[m]/float64(total*b.N), strings.ToLower(m)+"/obj")
	}
	per := func(d time.Duration) time.Duration { return (d / time.Duration(b.N)).Round(time.Millisecond) }
	b.Logf("%d objects (%d per cluster, %d clusters), limits %s: service %s (%.1f obj/s, 202 in %s), raw client-go %s (%.1f obj/s): ratio %.3f; service again %s: ratio %.3f; service requests during its push: %v, during its next: %v",
		total, n, len(kubes), l, per(first), rate(first), per(hook), per(raw), rate(raw), rate(first)/rate(raw), per(again), rate(again)/rate(raw), calls, callsAgain)
}

// servicePush posts a push of platformRepo to the service and waits until every object
// carries its requestedAt. It returns the time from the POST to the last object, the time
// to the 202, and the service's requests by method meanwhile (its rest_client_requests_total).
func servicePush(b *testing.B, svc *service, watch *requestedWatch, total int, seed string) (took, hook time.Duration, calls map[string]float64) {
	body := pushPayload(b, commit(seed, "before"), commit(seed))
	watch.expect(total, watch.newValue())
	before := svc.scrapeAll(b)
	b.StartTimer()
	start := time.Now()
	answer := svc.post(b, body)
	hook = time.Since(start)
	done := watch.await(b, 30*time.Minute)
	b.StopTimer()
	if got := answer.targets(); got != total {
		b.Fatalf("the push matched %d objects, want %d", got, total)
	}
	after := svc.scrapeAll(b)
	calls = map[string]float64{}
	for _, m := range []string{"PATCH", "POST", "PUT", "GET", "DELETE"} {
		calls[m] = sum(after, "rest_client_requests_total", `method="`+m+`"`) - sum(before, "rest_client_requests_total", `method="`+m+`"`)
	}
	return done.Sub(start), hook, calls
}

func addCalls(a, b map[string]float64) map[string]float64 {
	if a == nil {
		a = map[string]float64{}
	}
	for k, v := range b {
		a[k] += v
	}
	return a
}

// rawPush patches requestedAt on every object of every cluster, as the raw loop does
// (rawPatch), the clusters at once, and waits until the watch has seen every object carry
// it. It returns the time from the first patch to the last object seen.
func rawPush(b *testing.B, raws []metadata.Interface, watch *requestedWatch, n int, retries *atomic.Int64) time.Duration {
	token := time.Now().UTC().Format(time.RFC3339Nano)
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, meta.ReconcileRequestAnnotation, token)
	watch.expect(n*len(raws), func(v string) bool { return v == token })
	errs := make([]error, len(raws))
	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c, m := range raws {
		wg.Go(func() { errs[c] = rawPatch(context.Background(), m, n, patch, retries) })
	}
	wg.Wait()
	done := watch.await(b, 30*time.Minute)
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return done.Sub(start)
}

// settle waits until the API servers are quiet (no Flux object changed and no Event
// recorded for 2 s: the service's bookkeeping of the last push is done), then until a client
// at limits l has its burst back.
func settle(b *testing.B, watch *requestedWatch, kubes []*testenv.Kube, n int, l clientLimits) {
	b.Helper()
	checks := make([]metadata.Interface, len(kubes))
	for i, k := range kubes {
		var err error
		if checks[i], err = metadata.NewForConfig(unlimited(k)); err != nil {
			b.Fatal(err)
		}
	}
	last := -1
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		count := 0
		for _, m := range checks {
			var list *metav1.PartialObjectMetadataList
			err := try(b.Context(), new(atomic.Int64), func() (err error) {
				list, err = m.Resource(events).List(b.Context(), metav1.ListOptions{})
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			count += len(list.Items)
		}
		if count == last && time.Since(watch.lastChange()) > 2*time.Second {
			break
		}
		last = count
		time.Sleep(time.Second)
	}
	time.Sleep(time.Duration(float64(min(n, l.burst))/float64(l.qps)*float64(time.Second)) + 500*time.Millisecond)
}
