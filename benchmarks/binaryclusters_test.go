package benchmarks

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// clusterCounts are the registered clusters of BenchmarkBinaryClusters
// (FLUX_WEBHOOK_BENCH_CLUSTERS, default 10,50,200).
func clusterCounts() []int { return intList("FLUX_WEBHOOK_BENCH_CLUSTERS", []int{10, 50, 200}) }

// perRegistered is how many Flux objects each registered cluster holds: a GitRepository of
// the pushed repository and the Kustomizations built from it, as a tenant's vcluster holds
// a platform repository's.
const perRegistered = 10

// pushTimeout bounds the wait for one push to reach every registered cluster's objects.
const pushTimeout = 5 * time.Minute

// upstreams is how many API servers the registered clusters share.
const upstreams = 2

// BenchmarkBinaryClusters measures what one registered cluster costs the flux-webhook binary,
// with 10, 50 and 200 registered: each a kubeconfig Secret whose server is a proxy of its
// own (TLS verified, a bearer token) in front of one of two shared API servers, which shows
// it the Flux objects of its namespace only (as a tenant's vcluster shows its own), 10 of
// them fed by the pushed repository. The service is started with the clusters registered,
// and measured: VmRSS and VmHWM, goroutines, open watches (the proxies'), its requests to
// the registered clusters while idle (a minute), then one push by HTTP until every object of
// every cluster carries its requestedAt, and its requests meanwhile and until it is quiet,
// then VmRSS and VmHWM again (pushed-rss-MiB, pushed-hwm-MiB: the peak around the push).
// Metrics per registered cluster: the growth over the smallest count of RSS, goroutines and
// watches, idle requests per minute, requests per push.
func BenchmarkBinaryClusters(b *testing.B) {
	needKube(b)
	counts := clusterCounts()
	local := startKubes(b, 1)[0]
	defer local.Stop()
	shared := startKubes(b, upstreams)
	defer func() {
		for _, k := range shared {
			_ = k.Stop()
		}
	}()
	ca := newBenchCA(b)
	var proxies []*apiProxy
	watch := watchRequested(b, shared, gitRepositories, kustomizations)
	defer watch.stop()
	type point struct {
		clusters                      int
		rss, hwm, goroutines, watches float64
	}
	var first *point
	for _, count := range counts {
		for i := len(proxies); i < count; i++ {
			k := shared[i%upstreams]
			ns := fmt.Sprintf("reg-%03d", i)
			if err := tenantObjects(b.Context(), k.Client, ns); err != nil {
				b.Fatal(err)
			}
			p := newAPIProxy(b, k, ns, ca)
			proxies = append(proxies, p)
			register(b, local, ns, p.kubeconfig(b, ca))
		}
		b.Run(fmt.Sprintf("clusters=%d", count), func(b *testing.B) {
			for range b.N {
				svc := startService(b, local, local.Kubeconfig, "--cluster-name", "local")
				names := []string{"local"}
				for i := range count {
					names = append(names, fmt.Sprintf("reg-%03d", i))
				}
				svc.waitClustersUp(b, names, 15*time.Minute)
				time.Sleep(memorySettle)
				rss, hwm := svc.memory(b)
				svc.profiles(b, "rest")
				m := svc.scrapeAll(b)
				p := point{clusters: count, rss: rss, hwm: hwm, goroutines: sum(m, "go_goroutines")}
				for _, px := range proxies {
					p.watches += float64(px.watches.Load())
				}
				for _, px := range proxies {
					px.take()
				}
				time.Sleep(idleWindow)
				idle := map[string]int{}
				for _, px := range proxies[:count] {
					addCounts(idle, px.take())
				}

				// Logged before the push: what a registered cluster costs at rest stands whatever
				// the push does.
				b.Logf("%d registered clusters at rest: VmRSS %.1f MiB, VmHWM %.1f MiB, %.0f goroutines, %.0f watches; idle, per cluster and minute: %s",
					count, rss/mib, hwm/mib, p.goroutines, p.watches, formatCounts(idle, float64(count)*idleWindow.Minutes()))
				after := commit("clusters", count, time.Now().UnixNano())
				watch.expect(count*perRegistered, watch.newValue())
				start := time.Now()
				answer := svc.post(b, pushPayload(b, commit("clusters-before", after), after))
				hook := time.Since(start)
				done := watch.await(b, pushTimeout)
				if answer.targets() != count*perRegistered {
					b.Fatalf("the push matched %d objects, want %d", answer.targets(), count*perRegistered)
				}
				// All at once: one after the other, 200 clusters' quiet took 10 minutes, and
				// their periodic requests with it.
				var quieted sync.WaitGroup
				for _, px := range proxies[:count] {
					quieted.Go(func() { quiet(px, 3*time.Second) })
				}
				quieted.Wait()
				push := map[string]int{}
				for _, px := range proxies[:count] {
					addCounts(push, px.take())
				}
				// After the push: each cluster's event broadcasters started with its first Event.
				pushRSS, pushHWM := svc.memory(b)
				svc.profiles(b, "pushed")
				svc.Stop()

				c := float64(count)
				b.ReportMetric(rss/mib, "rss-MiB")
				b.ReportMetric(hwm/mib, "hwm-MiB")
				b.ReportMetric(pushRSS/mib, "pushed-rss-MiB")
				b.ReportMetric(pushHWM/mib, "pushed-hwm-MiB")
				b.ReportMetric(p.goroutines, "goroutines")
				b.ReportMetric(p.watches, "watches")
				b.ReportMetric(float64(calls(idle))/c/idleWindow.Minutes(), "idle-calls/cluster/min")
				b.ReportMetric(float64(calls(push))/c, "push-calls/cluster")
				b.ReportMetric(float64(done.Sub(start).Milliseconds()), "push-ms")
				b.ReportMetric(float64(hook.Milliseconds()), "hook-ms")
				if first != nil && count > first.clusters {
					d := c - float64(first.clusters)
					b.ReportMetric((rss-first.rss)/d/1024, "rss-KiB/cluster")
					b.ReportMetric((p.goroutines-first.goroutines)/d, "goroutines/cluster")
					b.ReportMetric((p.watches-first.watches)/d, "watches/cluster")
				}
				if first == nil {
					first = &p
				}
				b.Logf("%d registered clusters: VmRSS %.1f MiB, VmHWM %.1f MiB, %.0f goroutines, %.0f watches; idle, per cluster and minute: %s; "+
					"one push of %d objects (%d per cluster): 202 in %s, all requested in %s; its requests per cluster: %s; after it VmRSS %.1f MiB, VmHWM %.1f MiB",
					count, rss/mib, hwm/mib, p.goroutines, p.watches, formatCounts(idle, c*idleWindow.Minutes()),
					count*perRegistered, perRegistered, hook.Round(time.Millisecond), done.Sub(start).Round(time.Millisecond), formatCounts(push, c),
					pushRSS/mib, pushHWM/mib)
			}
		})
	}
	unregister(b, local)
}

// tenantObjects creates, in namespace ns, what a tenant's vcluster holds of the platform
// repository: its GitRepository and perRegistered-1 Kustomizations built from it, each with
// a Flux status.
func tenantObjects(ctx context.Context, cl client.Client, ns string) error {
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	objs := []client.Object{gitRepository(ns, "platform", "https://"+forgeHost+"/"+platformRepo+".git")}
	for i := 1; i < perRegistered; i++ {
		objs = append(objs, kustomization(ns, fmt.Sprintf("app-%02d", i), ns, "platform"))
	}
	return createAll(ctx, cl, objs)
}
