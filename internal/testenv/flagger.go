package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Flagger is Flagger's controller running as a local process against a Kubernetes API
// server, with the kubernetes provider (blue/green on plain Services, no mesh). With
// Workloads it rolls Deployments out; no traffic reaches a pod: its metric checks ask a
// Prometheus API (Prometheus below), its webhooks and load tester are not used.
type Flagger struct {
	Dir string

	p *proc
}

// flaggerControlLoop is how often Flagger lists the canaries to schedule (10 s by default):
// a canary created by a test is picked up within it.
const flaggerControlLoop = 2 * time.Second

// StartFlagger installs Flagger's CRDs (Canary, MetricTemplate, AlertProvider) from
// $FLUX_WEBHOOK_FLAGGER into k and starts Flagger against it as its admin, with
// -mesh-provider=kubernetes, and waits for its /healthz. Log: dir/flagger.log.
func StartFlagger(ctx context.Context, k *Kube, dir string) (*Flagger, error) {
	f, err := startFlagger(ctx, k, dir)
	if err != nil {
		return nil, fmt.Errorf("start flagger: %w", err)
	}
	return f, nil
}

func startFlagger(ctx context.Context, k *Kube, dir string) (*Flagger, error) {
	fdir, err := Paths().RequireFlagger()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("dir is empty")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := k.InstallCRDs(ctx, filepath.Join(fdir, "crd.yaml")); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	f := &Flagger{Dir: dir}
	// Its HTTP server (metrics, healthz) listens on every interface at -port; only this
	// package's health check connects to it, over loopback. The default metrics server is
	// unused: each MetricTemplate names its own.
	f.p, err = startProc("flagger", filepath.Join(dir, "flagger.log"), dir, nil, filepath.Join(fdir, "flagger"),
		"-kubeconfig="+k.Kubeconfig,
		"-mesh-provider=kubernetes",
		"-metrics-server=http://127.0.0.1:1",
		"-port="+strconv.Itoa(port),
		"-control-loop-interval="+flaggerControlLoop.String(),
		"-enable-leader-election=false",
		"-log-level=info")
	if err != nil {
		return nil, err
	}
	if err := f.p.waitFor(ctx, "flagger /healthz", func(ctx context.Context) error {
		return getOK(ctx, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz")
	}); err != nil {
		f.Stop()
		return nil, err
	}
	return f, nil
}

// NewFlagger starts Flagger for the test in t.TempDir() (see StartFlagger) and stops it in
// t.Cleanup.
func NewFlagger(t testing.TB, k *Kube) *Flagger {
	t.Helper()
	f, err := StartFlagger(t.Context(), k, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, f.Dir, "flagger.log")
		}
		f.Stop()
	})
	return f
}

// Stop stops Flagger.
func (f *Flagger) Stop() {
	if f.p != nil {
		f.p.stop()
	}
}

// Prometheus is the part of Prometheus's HTTP API Flagger's prometheus provider calls,
// on loopback: GET /api/v1/query answers an instant vector of one sample. "vector(1)"
// (Flagger's availability check) is 1; any other query is the value Set for the first
// key it contains, else no sample at all (Flagger's "no values found").
type Prometheus struct {
	URL string // http://127.0.0.1:PORT

	srv    *http.Server
	mu     sync.Mutex
	values map[string]float64
	asked  map[string]int
}

// StartPrometheus serves the query API on a free loopback port until Stop.
func StartPrometheus() (*Prometheus, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	p := &Prometheus{URL: "http://" + l.Addr().String(), values: map[string]float64{}, asked: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/query", p.query)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

// NewPrometheus starts a Prometheus query API for the test and stops it in t.Cleanup.
func NewPrometheus(t testing.TB) *Prometheus {
	t.Helper()
	p, err := StartPrometheus()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// Set makes every query containing key answer value from now on.
func (p *Prometheus) Set(key string, value float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.values[key] = value
}

// Asked returns how many queries containing key were answered.
func (p *Prometheus) Asked(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asked[key]
}

// Stop stops serving.
func (p *Prometheus) Stop() { _ = p.srv.Close() }

func (p *Prometheus) query(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("query"))
	type sample struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	result := []sample{}
	now := float64(time.Now().UnixMilli()) / 1000
	if q == "vector(1)" {
		result = append(result, sample{Metric: map[string]string{}, Value: [2]any{now, "1"}})
	} else {
		p.mu.Lock()
		for key, v := range p.values {
			if strings.Contains(q, key) {
				p.asked[key]++
				result = append(result, sample{Metric: map[string]string{}, Value: [2]any{now, strconv.FormatFloat(v, 'f', -1, 64)}})
				break
			}
		}
		p.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success",
		"data": map[string]any{"resultType": "vector", "result": result}})
}
