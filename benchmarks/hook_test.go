package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
	"github.com/openova-io/flux-webhook/server"
	"github.com/openova-io/flux-webhook/webhook"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

const (
	hookKey = "bench-hook-key-0123456789abcdef-0123456789"
	// noMatchRepo is the repository of the push payload below, a real Gitea push of one
	// commit (5.8 KB): no Flux object of the region follows it.
	noMatchRepo = "gitea-admin/payloads"
	serviceNS   = "flux-system"
)

// noMatchPush returns the payload of a push that matches nothing, and the token an Actions
// workflow of its repository presents (scoped to it, derived from the hook key).
func noMatchPush(b *testing.B) (body []byte, token string) {
	b.Helper()
	body, err := os.ReadFile("../webhook/gitea/testdata/gitea-push-branch.json")
	if err != nil {
		b.Fatal(err)
	}
	scope, err := credentials.RepositoryScope(noMatchRepo)
	if err != nil {
		b.Fatal(err)
	}
	return body, credentials.DeriveToken([]byte(hookKey), scope)
}

// serviceLogger is the service's logger (--log-encoding json, --log-level info), writing
// to w.
func serviceLogger(w io.Writer) logr.Logger {
	return crzap.New(crzap.WriteTo(w), crzap.Level(zapcore.InfoLevel), crzap.StacktraceLevel(zapcore.PanicLevel), crzap.JSONEncoder())
}

// BenchmarkHookHandler measures /hook for a push that matches nothing, with no network: the
// server's handler (server.Server.HookHandler) called through httptest.NewRecorder, with a
// real intake (webhook.Intake without a forge: --verify-claims=false) and a real
// request.Requester over a cluster whose cache holds the region's objects (the largest
// FLUX_WEBHOOK_BENCH_OBJECTS), authenticated by a repository-scoped Bearer token, each
// request a delivery of its own (X-Gitea-Delivery). log=json logs as the service does
// (JSON, info: one line per request) to io.Discard; log=discard logs nothing. The requests
// and recorders are made before the timer starts.
func BenchmarkHookHandler(b *testing.B) {
	f := regionKube(b, maxObjects())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := startCluster(ctx, "region", limited(f.kube))
	if err != nil {
		b.Fatal(err)
	}
	if err := cached(ctx, c, f.n); err != nil {
		b.Fatal(err)
	}
	local, err := client.New(limited(f.kube), client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	keys := &credentials.Keyring{}
	if err := keys.Set(credentials.HookKey, hookKey); err != nil {
		b.Fatal(err)
	}
	set := cluster.NewSet(c)
	store := &record.PushStore{Client: local, Reader: local, Namespace: serviceNS}
	body, token := noMatchPush(b)
	for _, lg := range []struct {
		name string
		log  logr.Logger
	}{{"log=json", serviceLogger(io.Discard)}, {"log=discard", logr.Discard()}} {
		b.Run(fmt.Sprintf("objects=%d/%s", f.n, lg.name), func(b *testing.B) {
			srv := &server.Server{Keys: keys, Forge: gitea.Events{}, Log: lg.log,
				Intake:  &webhook.Intake{Requester: &request.Requester{Clusters: set, Store: store}},
				Awaiter: &observe.Awaiter{Clusters: set}}
			h := srv.HookHandler()
			newReq := func(i int) *http.Request {
				r := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Authorization", "Bearer "+token)
				r.Header.Set("X-Gitea-Event", "push")
				r.Header.Set("X-Gitea-Delivery", fmt.Sprintf("actions-%d-%d", b.N, i))
				return r
			}
			first := httptest.NewRecorder()
			h.ServeHTTP(first, newReq(-1))
			if first.Code != http.StatusOK || !strings.Contains(first.Body.String(), `"result":"no-match"`) {
				b.Fatalf("answer %d %s, want 200 no-match", first.Code, first.Body)
			}
			reqs := make([]*http.Request, b.N)
			recs := make([]*httptest.ResponseRecorder, b.N)
			for i := range b.N {
				reqs[i], recs[i] = newReq(i), httptest.NewRecorder()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				h.ServeHTTP(recs[i], reqs[i])
			}
			b.StopTimer()
			for _, rec := range recs {
				if rec.Code != http.StatusOK {
					b.Fatalf("answer %d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

var fluxBin struct {
	once sync.Once
	path string
	err  error
}

// BenchmarkHookLoopback measures, over loopback, the real binary (flux-webhook serve against
// the region's API server, --verify-claims without a Gitea: off) answering /hook for a push
// that matches nothing, next to /readyz of the same process, in the same run: an op is one
// of each, one at a time (which goes first alternates), on kept-alive connections; -benchtime
// sets how many. Metrics: p50 and p99 of each, in microseconds, and the service's RSS and
// live heap (its /metrics) with the region's objects cached. B/op and allocs/op are the
// benchmark's client's.
func BenchmarkHookLoopback(b *testing.B) {
	ctx := b.Context()
	svc := startRegionService(b)
	hookURL, readyURL, metricsURL := svc.hookURL, svc.readyURL, svc.metricsURL
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	body, token := noMatchPush(b)
	n := 0
	hook := func() (time.Duration, error) {
		n++
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hookURL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Gitea-Event", "push")
		req.Header.Set("X-Gitea-Delivery", fmt.Sprintf("actions-%d-%d", time.Now().UnixNano(), n))
		return timed(httpc, req, `"result":"no-match"`)
	}
	ready := func() (time.Duration, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, readyURL, nil)
		return timed(httpc, req, "")
	}
	// The service answers /readyz once its caches synced; its cache holds every object.
	for range 20 {
		if _, err := hook(); err != nil {
			b.Fatal(err)
		}
		if _, err := ready(); err != nil {
			b.Fatal(err)
		}
	}
	var hooks, readys []time.Duration
	b.ResetTimer()
	for i := range b.N {
		first, second := hook, ready
		if i%2 == 1 {
			first, second = ready, hook
		}
		d1, err := first()
		if err != nil {
			b.Fatal(err)
		}
		d2, err := second()
		if err != nil {
			b.Fatal(err)
		}
		if i%2 == 1 {
			d1, d2 = d2, d1
		}
		hooks, readys = append(hooks, d1), append(readys, d2)
	}
	b.StopTimer()
	rss, heap := scrape(b, httpc, metricsURL)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
	slices.Sort(hooks)
	slices.Sort(readys)
	b.ReportMetric(us(pct(hooks, 50)), "hook-p50-µs")
	b.ReportMetric(us(pct(hooks, 99)), "hook-p99-µs")
	b.ReportMetric(us(pct(readys, 50)), "readyz-p50-µs")
	b.ReportMetric(us(pct(readys, 99)), "readyz-p99-µs")
	b.ReportMetric(rss/mib, "service-rss-MiB")
	b.ReportMetric(heap/mib, "service-heap-live-MiB")
	b.Logf("%d objects cached; %d of each request: /hook p50 %s p99 %s, /readyz p50 %s p99 %s; service RSS %.1f MiB, live heap %.1f MiB",
		svc.f.n, len(hooks), pct(hooks, 50), pct(hooks, 99), pct(readys, 50), pct(readys, 99), rss/mib, heap/mib)
}

// regionService is the real binary serving on loopback against the region's API server,
// filled to the largest FLUX_WEBHOOK_BENCH_OBJECTS.
type regionService struct {
	f                                       *filled
	hookAddr, hookURL, readyURL, metricsURL string
}

// startRegionService starts the binary (flux-webhook serve, --verify-claims without a Gitea:
// off, no leader election) with the hook key, the record key and the Secrets given
// (name → value, each a --<name>-secret of the service's namespace), until the benchmark
// ends.
func startRegionService(b *testing.B, secrets ...string) regionService {
	b.Helper()
	f := regionKube(b, maxObjects())
	ctx := b.Context()
	fluxBin.once.Do(func() { fluxBin.path, fluxBin.err = testenv.BuildFlux(context.Background(), dir) })
	if fluxBin.err != nil {
		b.Fatal(fluxBin.err)
	}
	cl, err := client.New(unlimited(f.kube), client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	secrets = append([]string{"hook-key", hookKey, "record-key", recordKey}, secrets...)
	objs := []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: serviceNS}}}
	var flags []string
	for i := 0; i+1 < len(secrets); i += 2 {
		name := "flux-webhook-" + secrets[i]
		objs = append(objs, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: serviceNS, Name: name}, Data: map[string][]byte{"token": []byte(secrets[i+1])}})
		flags = append(flags, "--"+secrets[i]+"-secret", serviceNS+"/"+name)
	}
	for _, o := range objs {
		if err := cl.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			b.Fatal(err)
		}
	}
	ports, err := testenv.FreePorts(4)
	if err != nil {
		b.Fatal(err)
	}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	svc := regionService{f: f, hookAddr: addr(0), hookURL: "http://" + addr(0) + "/hook", readyURL: "http://" + addr(2) + "/readyz", metricsURL: "http://" + addr(3) + "/metrics"}
	testenv.NewService(b, "flux-webhook", fluxBin.path, svc.readyURL, append([]string{"serve", "--kubeconfig", f.kube.Kubeconfig,
		"--listen", addr(0), "--platform-listen", addr(1), "--health-listen", addr(2), "--metrics-listen", addr(3),
		"--namespace", serviceNS, "--cluster-name", "region", "--leader-elect=false"}, flags...)...)
	return svc
}

// timed sends req and reads the whole answer, which must be a 200 (containing want).
func timed(c *http.Client, req *http.Request, want string) (time.Duration, error) {
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(want)) {
		return 0, fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	return took, nil
}

// pct returns the p-th percentile of sorted durations.
func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// scrape reads the service's RSS and live heap from its /metrics.
func scrape(b *testing.B, c *http.Client, url string) (rss, heap float64) {
	b.Helper()
	m := metricsOf(b, c, url)
	return m["process_resident_memory_bytes"], m["go_gc_heap_live_bytes"]
}

// metricsOf reads the series without labels of the service's /metrics, by name.
func metricsOf(b *testing.B, c *http.Client, url string) map[string]float64 {
	b.Helper()
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out
}
