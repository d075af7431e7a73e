package benchmarks

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// The benchmarks of the binary run flux-webhook as a user runs it: `flux-webhook serve` with
// its flags, against real API servers, a push by HTTP, the result read through the API.
//
//	FLUX_WEBHOOK_BENCH_BINARY  the binary to measure instead of this tree's (built as the
//	                           tests build it): e.g. an older build, for a before and after
//	FLUX_WEBHOOK_BENCH_LOGS    a directory: each run's service log is kept there
//	FLUX_WEBHOOK_BENCH_PPROF   a directory: the service runs with --pprof-listen, and the
//	                           memory benchmarks keep its heap and goroutine profiles there
//	                           (go tool pprof -sample_index=inuse_space <file>), the fan-out
//	                           benchmark a CPU profile of the service's first push
//	                           (FLUX_WEBHOOK_BENCH_CPU seconds of it, 10 unless set)

// clustersNS holds the Secrets that register clusters, on the service's own API server.
const clustersNS = "flux-webhook-clusters"

const hookKeySecret, recordKeySecret = "flux-webhook-hook-key", "flux-webhook-record-key"

// binaryPath returns the binary the benchmarks of the binary run.
func binaryPath(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("FLUX_WEBHOOK_BENCH_BINARY"); p != "" {
		return p
	}
	fluxBin.once.Do(func() { fluxBin.path, fluxBin.err = testenv.BuildFlux(context.Background(), dir) })
	if fluxBin.err != nil {
		b.Fatal(fluxBin.err)
	}
	return fluxBin.path
}

// service is a running flux-webhook process and its addresses.
type service struct {
	*testenv.Service
	hook, ready, metrics string
	pprof                string // base URL of /debug/pprof/, "" when not served
	http                 *http.Client
}

// startService runs the binary on the API server k (--kubeconfig, the service's namespace
// serviceNS with its hook and record keys) with flags added to the ones every run has, and
// waits until it is ready and, unless --leader-elect=false is among flags, leads.
func startService(b *testing.B, k *testenv.Kube, kubeconfig string, flags ...string) *service {
	b.Helper()
	ctx := b.Context()
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: serviceNS}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clustersNS}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: serviceNS, Name: hookKeySecret}, Data: map[string][]byte{"token": []byte(hookKey)}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: serviceNS, Name: recordKeySecret}, Data: map[string][]byte{"token": []byte(recordKey)}},
	} {
		if err := k.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			b.Fatal(err)
		}
	}
	ports, err := testenv.FreePorts(5)
	if err != nil {
		b.Fatal(err)
	}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	s := &service{hook: "http://" + addr(0) + "/hook", ready: "http://" + addr(2) + "/readyz", metrics: "http://" + addr(3) + "/metrics",
		http: &http.Client{Timeout: 30 * time.Second}}
	args := append([]string{"serve", "--kubeconfig", kubeconfig,
		"--listen", addr(0), "--platform-listen", addr(1), "--health-listen", addr(2), "--metrics-listen", addr(3),
		"--namespace", serviceNS, "--hook-key-secret", serviceNS + "/" + hookKeySecret, "--record-key-secret", serviceNS + "/" + recordKeySecret,
		"--cluster-secrets-namespace", clustersNS, "--insecure-kubeconfig", cluster.KubeconfigLocalAddress, // the API servers are on loopback
		"--cluster-default-repositories", "*"}, flags...) // every registered cluster follows the pushed (private) repository
	if os.Getenv("FLUX_WEBHOOK_BENCH_PPROF") != "" {
		args = append(args, "--pprof-listen", addr(4))
		s.pprof = "http://" + addr(4) + "/debug/pprof/"
	}
	s.Service = testenv.NewService(b, "flux-webhook", binaryPath(b), s.ready, args...)
	if d := os.Getenv("FLUX_WEBHOOK_BENCH_LOGS"); d != "" {
		// Registered after NewService's: runs before it, the log still there.
		b.Cleanup(func() {
			s.Stop()
			if log, err := os.ReadFile(s.Log); err == nil {
				_ = os.WriteFile(filepath.Join(d, strings.NewReplacer("/", "_", "=", "-").Replace(b.Name())+".log"), log, 0o644)
			}
		})
	}
	if !strings.Contains(strings.Join(flags, " "), "--leader-elect=false") {
		waitLog(b, s.Log, `elected leader`, 2*time.Minute)
	}
	return s
}

// waitLog waits until the log file holds want.
func waitLog(b *testing.B, path, want string, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if bytes.Contains(log, []byte(want)) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: no %q after %s", path, want, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitLogLines waits until the log file holds n lines that contain every one of want.
func waitLogLines(b *testing.B, path string, n int, timeout time.Duration, want ...string) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for _, line := range strings.Split(string(log), "\n") {
			all := true
			for _, w := range want {
				all = all && strings.Contains(line, w)
			}
			if all {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d lines with %q after %s, want %d", path, got, want, timeout, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// profiles keeps the service's heap and goroutine profiles in FLUX_WEBHOOK_BENCH_PPROF,
// named after the benchmark and label; nothing without it.
func (s *service) profiles(b *testing.B, label string) {
	b.Helper()
	d := os.Getenv("FLUX_WEBHOOK_BENCH_PPROF")
	if d == "" || s.pprof == "" {
		return
	}
	base := strings.NewReplacer("/", "_", "=", "-").Replace(b.Name()) + "-" + label
	for _, p := range []string{"heap", "goroutine"} {
		resp, err := s.http.Get(s.pprof + p)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("%s profile: %v (%s)", p, err, resp.Status)
		}
		if err := os.WriteFile(filepath.Join(d, base+"."+p+".pb.gz"), body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuProfile starts a CPU profile of the service (FLUX_WEBHOOK_BENCH_CPU seconds, 10
// unless set) when FLUX_WEBHOOK_BENCH_PPROF is set, and returns a function that waits for
// it and keeps it there, named after the benchmark and label; a no-op without it.
func (s *service) cpuProfile(b *testing.B, label string) (wait func()) {
	b.Helper()
	d := os.Getenv("FLUX_WEBHOOK_BENCH_PPROF")
	if d == "" || s.pprof == "" {
		return func() {}
	}
	secs := cmp.Or(os.Getenv("FLUX_WEBHOOK_BENCH_CPU"), "10")
	if _, err := strconv.Atoi(secs); err != nil {
		b.Fatalf("FLUX_WEBHOOK_BENCH_CPU=%q: %v", secs, err)
	}
	path := filepath.Join(d, strings.NewReplacer("/", "_", "=", "-").Replace(b.Name())+"-"+label+".cpu.pb.gz")
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(s.pprof + "profile?seconds=" + secs) // longer than s.http's timeout
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s", resp.Status)
		}
		if err == nil {
			err = os.WriteFile(path, body, 0o644)
		}
		done <- err
	}()
	return func() {
		if err := <-done; err != nil {
			b.Fatalf("CPU profile: %v", err)
		}
	}
}

// memory returns the process's resident set and its peak (VmRSS, VmHWM), in bytes.
func (s *service) memory(b *testing.B) (rss, hwm float64) {
	b.Helper()
	v := s.status(b)
	return v["VmRSS"], v["VmHWM"]
}

// status returns the service's /proc/<pid>/status sizes (VmRSS, VmHWM, RssAnon, RssFile…)
// in bytes.
func (s *service) status(b *testing.B) map[string]float64 {
	b.Helper()
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Pid()))
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(f), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			b.Fatal(err)
		}
		out[name] = kb * 1024
	}
	return out
}

// scrapeAll returns every sample of the service's /metrics: name{labels} → value.
func (s *service) scrapeAll(b *testing.B) map[string]float64 {
	b.Helper()
	resp, err := s.http.Get(s.metrics)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds the samples of metric name whose labels contain every one of labels
// (`key="value"`).
func sum(samples map[string]float64, name string, labels ...string) float64 {
	var total float64
	for k, v := range samples {
		n, rest, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// pushPayload returns a Gitea push event of platformRepo's main from before to after, as a
// native webhook or an Actions step posts it (a real payload's shape, its repository's URLs
// those of forgeHost).
func pushPayload(b *testing.B, before, after string) []byte {
	b.Helper()
	raw, err := os.ReadFile("../webhook/gitea/testdata/gitea-push-branch.json")
	if err != nil {
		b.Fatal(err)
	}
	s := strings.NewReplacer("http://127.0.0.1:35585/", "https://"+forgeHost+"/", "root@127.0.0.1:", "git@"+forgeHost+":",
		"gitea-admin/payloads", platformRepo).Replace(string(raw))
	var p map[string]any
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		b.Fatal(err)
	}
	p["ref"], p["before"], p["after"] = "refs/heads/main", before, after
	delete(p, "commits")
	delete(p, "head_commit")
	p["total_commits"] = 0
	repo := p["repository"].(map[string]any)
	owner, name, _ := strings.Cut(platformRepo, "/")
	repo["name"] = name
	if o, ok := repo["owner"].(map[string]any); ok {
		o["login"], o["username"] = owner, owner
	}
	out, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// hookToken is what an Actions workflow of platformRepo presents: its repository token.
func hookToken(b *testing.B) string {
	b.Helper()
	scope, err := credentials.RepositoryScope(platformRepo)
	if err != nil {
		b.Fatal(err)
	}
	return credentials.DeriveToken([]byte(hookKey), scope)
}

// post sends a push to /hook as an Actions step does (Bearer, repository token) and returns
// the answer, which must be 202.
func (s *service) post(b *testing.B, body []byte) hookAnswer {
	b.Helper()
	req, err := http.NewRequestWithContext(b.Context(), http.MethodPost, s.hook, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+hookToken(b))
	req.Header.Set("X-Gitea-Event", "push")
	resp, err := s.http.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		b.Fatalf("POST /hook: %d %s", resp.StatusCode, raw)
	}
	var a hookAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		b.Fatal(err)
	}
	return a
}

// hookAnswer is what a benchmark reads of /hook's answer.
type hookAnswer struct {
	Result   string `json:"result"`
	Clusters []struct {
		Cluster string `json:"cluster"`
		Targets int    `json:"targets"`
	} `json:"clusters"`
}

func (a hookAnswer) targets() int {
	n := 0
	for _, c := range a.Clusters {
		n += c.Targets
	}
	return n
}

// register registers a cluster with the service: a Secret in clustersNS of the API server k
// holding kubeconfig.
func register(b *testing.B, k *testenv.Kube, name string, kubeconfig []byte) {
	b.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: clustersNS}}
	if err := k.Client.Create(b.Context(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clustersNS, Name: "cluster-" + name,
		Labels: map[string]string{cluster.ClusterLabel: name}}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
	if err := k.Client.Create(b.Context(), s); err != nil {
		b.Fatal(err)
	}
}

// unregister removes every cluster Secret of k.
func unregister(b *testing.B, k *testenv.Kube) {
	b.Helper()
	if err := k.Client.DeleteAllOf(context.Background(), &corev1.Secret{}, client.InNamespace(clustersNS), client.HasLabels{cluster.ClusterLabel}); err != nil {
		b.Fatal(err)
	}
}

// waitClustersUp waits until the service says each of the clusters is up (its caches
// synced and its API server answering: flux_webhook_cluster_up 1).
func (s *service) waitClustersUp(b *testing.B, names []string, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := s.scrapeAll(b)
		up := 0
		for _, n := range names {
			if sum(m, "flux_webhook_cluster_up", `cluster="`+n+`"`) == 1 {
				up++
			}
		}
		if up == len(names) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d clusters up after %s", up, len(names), timeout)
		}
		time.Sleep(time.Second)
	}
}
