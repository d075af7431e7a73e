package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	dto "github.com/prometheus/client_model/go"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/webhook"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// silentFlux accepts every push and never hears from Flux.
type silentFlux struct{ stubRequester }

func (f *silentFlux) Await(ctx context.Context, p gitops.Push, r gitops.Result, d time.Duration) <-chan api.TargetResult {
	return (&blockingRequester{}).Await(ctx, p, r, d)
}

// A waiting stream ends as soon as the server shuts down, with a line saying why, and
// abnormally: the sender must not take the unknown outcome for a success.
func TestWaitEndsOnShutdown(t *testing.T) {
	var logs bytes.Buffer
	req := &silentFlux{stubRequester{out: []api.Outcome{{Result: api.ResultRequested}}}}
	srv := newServer(req, &logs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()

	body := payload(t, "gitea-push-branch.json")
	r, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+ln.Addr().String()+"/hook?wait=true", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(first, "accepted: ") {
		t.Fatalf("first line %q, %v", first, err)
	}
	start := time.Now()
	cancel()
	rest, err := io.ReadAll(br)
	if err == nil {
		t.Fatalf("stream ended normally after shutdown: %q", rest)
	}
	if !strings.Contains(string(rest), "interrupted: flux-webhook is shutting down") {
		t.Fatalf("no interruption line: %q", rest)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stream held %s after shutdown", took)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer is a log sink the server writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitingServer serves /hook over req with the shared test keys, logging into logs.
func waitingServer(t *testing.T, req requester, logs *lockedBuffer, lim limits) string {
	t.Helper()
	s := &Server{Keys: testKeys(true), Forge: gitea.Events{}, Intake: &webhook.Intake{Requester: req}, Awaiter: req,
		Log: funcr.New(func(prefix, args string) { fmt.Fprintln(logs, prefix, args) }, funcr.Options{}), lim: lim}
	srv := httptest.NewServer(s.HookHandler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// waitFor posts a push with ?wait=true and returns the open stream.
func waitFor(t *testing.T, ctx context.Context, url, accept string) *http.Response {
	t.Helper()
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/hook?wait=true", bytes.NewReader(payload(t, "gitea-push-branch.json")))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+secret)
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp
}

// While Flux is silent, a waiting stream says so every heartbeatInterval, in text and in
// NDJSON, so that a proxy's idle timeout does not cut a slow deploy.
func TestWaitHeartbeat(t *testing.T) {
	target := api.Target{Cluster: "local", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}
	req := &silentFlux{stubRequester{out: []api.Outcome{{Target: target, Result: api.ResultRequested}}}}
	url := waitingServer(t, req, &lockedBuffer{}, limits{heartbeatInterval: 10 * time.Millisecond})
	for _, tc := range []struct {
		accept string
		check  func(line string) error
	}{
		{"", func(line string) error {
			if !regexp.MustCompile(`^waiting: 0 of 1 answered \(\d+s\)$`).MatchString(line) {
				return fmt.Errorf("not a heartbeat line")
			}
			return nil
		}},
		{mimeNDJSON, func(line string) error {
			var l api.StreamLine
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				return err
			}
			if l.Event != "heartbeat" || l.OK != nil || l.HookResponse != nil || l.TargetResult != nil {
				return fmt.Errorf("not a heartbeat event: %+v", l)
			}
			return nil
		}},
	} {
		t.Run("accept="+tc.accept, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			resp := waitFor(t, ctx, url, tc.accept)
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			var lines []string
			for len(lines) < 3 && sc.Scan() {
				lines = append(lines, sc.Text())
			}
			if len(lines) < 3 {
				t.Fatalf("stream ended after %q: %v", lines, sc.Err())
			}
			if !strings.Contains(lines[0], "accepted") {
				t.Fatalf("first line %q", lines[0])
			}
			for _, l := range lines[1:] {
				if err := tc.check(l); err != nil {
					t.Fatalf("%q: %v", l, err)
				}
			}
		})
	}
}

// failingFlux answers every target with a failure at once.
type failingFlux struct{ stubRequester }

func (f *failingFlux) Await(_ context.Context, _ gitops.Push, r gitops.Result, _ time.Duration) <-chan api.TargetResult {
	ch := make(chan api.TargetResult, len(r.Targets))
	for _, o := range r.Targets {
		ch <- api.TargetResult{Target: o.Target, Status: api.Status{State: api.StateFailure, Description: "dry-run failed"}}
	}
	close(ch)
	return ch
}

// A stream that ends as a failure (its 200 already sent) is counted in the request metrics
// and logged like every other request, then aborted.
func TestFailedStreamIsCountedAndLogged(t *testing.T) {
	target := api.Target{Cluster: "local", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}
	req := &failingFlux{stubRequester{out: []api.Outcome{{Target: target, Result: api.ResultRequested}}}}
	logs := &lockedBuffer{}
	url := waitingServer(t, req, logs, limits{})
	counted := func() float64 {
		var m dto.Metric
		if err := httpRequests.WithLabelValues("/hook", "200").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	before := counted()
	resp := waitFor(t, t.Context(), url, "")
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || !strings.Contains(string(body), "summary: 0 success, 1 failure") {
		t.Fatalf("a failed stream ended normally: %q, %v", body, err)
	}
	// The count and the log line come before the connection is aborted.
	if got := counted() - before; got != 1 {
		t.Fatalf("flux_webhook_http_requests_total{route=/hook,code=200} grew by %v, want 1", got)
	}
	if !regexp.MustCompile(`"msg"="request" .*"route"="/hook" "status"=200 .*"streamFailed"=true`).MatchString(logs.String()) {
		t.Fatalf("no access log line for the failed stream:\n%s", logs.String())
	}
}
