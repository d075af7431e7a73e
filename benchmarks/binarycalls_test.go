package benchmarks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// idleWindow is how long a service's idle requests are counted (FLUX_WEBHOOK_BENCH_IDLE,
// a duration; a minute by default, less in CI).
var idleWindow = func() time.Duration {
	if v := os.Getenv("FLUX_WEBHOOK_BENCH_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			panic(fmt.Sprintf("FLUX_WEBHOOK_BENCH_IDLE=%q: want a positive duration", v))
		}
		return d
	}
	return time.Minute
}()

// BenchmarkBinaryAPICalls counts every request the flux-webhook binary makes to its API
// server, by verb and resource (a counting proxy between them: client-side request
// counting, whatever client of the service makes it), per object of a push: one cluster of
// N objects (a GitRepository and N-1 Kustomizations, N the smallest of 200 and the largest
// FLUX_WEBHOOK_BENCH_OBJECTS), one push by HTTP, then Flux's answer (each object's status
// written as its controller writes it: testenv's status writers, since no controller runs
// here). Phases: idle (a minute before the push), request (the POST until every object
// carries requestedAt), after (until the service is quiet again: its bookkeeping of the
// request), answer (Flux's status writes until the service is quiet: its final reports);
// granularity=auto is the default (statuses per cluster beyond 50 objects),
// granularity=object one status per object.
func BenchmarkBinaryAPICalls(b *testing.B) {
	needKube(b)
	n := min(200, maxObjects())
	for _, granularity := range []string{"auto", "object"} {
		b.Run(fmt.Sprintf("objects=%d/granularity=%s", n, granularity), func(b *testing.B) {
			for range b.N {
				apiCalls(b, n, granularity)
			}
		})
	}
}

func apiCalls(b *testing.B, n int, granularity string) {
	d := b.TempDir()
	k, err := testenv.StartKube(context.Background(), testenv.KubeOptions{Dir: d, CRDs: true})
	if err != nil {
		b.Fatal(err)
	}
	defer k.Stop()
	if err := newFilled(k, fanOutObject).fill(context.Background(), n); err != nil {
		b.Fatal(err)
	}
	watch := watchRequested(b, []*testenv.Kube{k}, gitRepositories, kustomizations)
	defer watch.stop()
	proxy := newAPIProxy(b, k, "", nil)
	svc := startService(b, k, proxy.plainKubeconfig(b, filepath.Join(d, "proxy.kubeconfig")), "--cluster-name", "local",
		"--status-granularity", granularity)
	defer svc.Stop()
	svc.waitClustersUp(b, []string{"local"}, 5*time.Minute)
	quiet(proxy, 3*time.Second)
	proxy.take()
	time.Sleep(idleWindow)
	idle := proxy.take()

	after := commit("calls", granularity, time.Now().UnixNano())
	watch.expect(n, watch.newValue())
	answer := svc.post(b, pushPayload(b, commit("calls-before", after), after))
	watch.await(b, 10*time.Minute)
	request := proxy.take()
	quiet(proxy, 3*time.Second)
	bookkeeping := proxy.take()
	if answer.targets() != n {
		b.Fatalf("the push matched %d objects, want %d", answer.targets(), n)
	}

	// Flux answers: the source fetched the commit, then every Kustomization applied it.
	rev := testenv.GitRevision("main", after)
	ctx := b.Context()
	for i := range n {
		o := fanOutObject(i)
		key := client.ObjectKeyFromObject(o)
		if i == 0 {
			err = testenv.MarkGitRepositoryReady(ctx, k.Client, key, rev, "")
		} else {
			err = testenv.MarkKustomizationApplied(ctx, k.Client, key, rev, "")
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	finals := 1 // the cluster's status
	if granularity == "object" {
		finals = n
	}
	waitLogLines(b, svc.Log, finals, 5*time.Minute, `"msg":"result"`, `"state":"success"`)
	quiet(proxy, 5*time.Second)
	answered := proxy.take()

	per := float64(n)
	b.ReportMetric(float64(writes(request))/per, "request-writes/obj")
	b.ReportMetric(float64(calls(request))/per, "request-calls/obj")
	b.ReportMetric(float64(calls(bookkeeping))/per, "after-calls/obj")
	b.ReportMetric(float64(calls(answered))/per, "answer-calls/obj")
	b.ReportMetric(float64(calls(idle))/idleWindow.Minutes(), "idle-calls/min")
	b.Logf("%d objects, granularity %s; requests per object:\n  request: %s\n  after: %s\n  answer: %s\nidle, per minute: %s",
		n, granularity, formatCounts(request, per), formatCounts(bookkeeping, per), formatCounts(answered, per),
		formatCounts(idle, idleWindow.Minutes()))
	if log, err := os.ReadFile(svc.Log); err == nil && strings.Contains(string(log), `"level":"error"`) {
		b.Logf("the service logged errors: see %s", svc.Log)
	}
}

// periodic are the requests a service makes whatever happens: its lease, its probes, its
// discoveries, the leader's reads of the push records (a list of one label's ConfigMaps every
// second and every 2 s: the aggregator's and the backlog's). They do not count as activity.
// maxQuietWait bounds quiet: a service that never stops calling (a poll this benchmark does
// not count as periodic) is measured as it is then, not waited for.
const maxQuietWait = 30 * time.Second

func periodic(key string) bool {
	return strings.Contains(key, "coordination.k8s.io/leases") || strings.HasSuffix(key, "/readyz") ||
		strings.HasPrefix(key, "GET /api") || strings.HasPrefix(key, "watch ") || key == "list configmaps"
}

func calls(counts map[string]int) int {
	n := 0
	for k, v := range counts {
		if !strings.HasPrefix(k, "watch ") {
			n += v
		}
	}
	return n
}

func writes(counts map[string]int) int {
	n := 0
	for k, v := range counts {
		if verb, _, _ := strings.Cut(k, " "); verb == "create" || verb == "update" || verb == "patch" || verb == "delete" {
			n += v
		}
	}
	return n
}

// quiet waits until the proxy has passed no request but periodic ones for d (at most
// maxQuietWait).
func quiet(p *apiProxy, d time.Duration) {
	deadline := time.Now().Add(maxQuietWait)
	last := -1
	since := time.Now()
	for time.Now().Before(deadline) {
		p.mu.Lock()
		active := 0
		for k, v := range p.counts {
			if !periodic(k) {
				active += v
			}
		}
		p.mu.Unlock()
		if active != last {
			last, since = active, time.Now()
		} else if time.Since(since) >= d {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}
