package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
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
