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
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/jobs"
)

// blockingRequester holds every Request until release is closed.
type blockingRequester struct {
	stubRequester
	entered chan struct{}
	release chan struct{}
}

func (b *blockingRequester) Accept(ctx context.Context, p gitops.Push) (gitops.Result, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.stubRequester.Accept(ctx, p)
}

// Await answers nothing until the sender leaves, as a target Flux never answers.
func (b *blockingRequester) Await(ctx context.Context, _ gitops.Push, _ gitops.Result, _ time.Duration) <-chan api.TargetResult {
	ch := make(chan api.TargetResult)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

type answerOf struct {
	code       int
	body       string
	retryAfter string
	err        error
}

func post(t *testing.T, client *http.Client, url string, body []byte, headers map[string]string) answerOf {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answerOf{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answerOf{code: resp.StatusCode, body: string(b), retryAfter: resp.Header.Get("Retry-After")}
}

func jsonError(t *testing.T, a answerOf) string {
	t.Helper()
	var e api.ErrorResponse
	if err := json.Unmarshal([]byte(a.body), &e); err != nil || e.Error == "" {
		t.Fatalf("answer %d is not a JSON error: %q", a.code, a.body)
	}
	return e.Error
}

var requested = []api.Outcome{{Target: api.Target{Cluster: "local", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}, Result: api.ResultRequested}}

// Over maxInFlight, a request waits for a slot up to inFlightWait, then gets 503 with
// Retry-After; a slot that frees up within the wait is taken.
func TestInFlightLimit(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	req := &blockingRequester{stubRequester: stubRequester{out: requested}, entered: make(chan struct{}, 10), release: make(chan struct{})}
	var logs bytes.Buffer
	s := newServer(req, &logs)
	s.lim = limits{maxInFlight: 2, inFlightWait: 300 * time.Millisecond}
	srv := httptest.NewServer(s.HookHandler())
	defer srv.Close()
	bearer := map[string]string{"Authorization": "Bearer " + secret}

	answers := make(chan answerOf, 3)
	for range 2 {
		go func() { answers <- post(t, srv.Client(), srv.URL+"/hook", push, bearer) }()
		<-req.entered
	}
	start := time.Now()
	a := post(t, srv.Client(), srv.URL+"/hook", push, bearer)
	if a.code != http.StatusServiceUnavailable || a.retryAfter != overloadRetryAfter {
		t.Fatalf("third request: %d %q (Retry-After %q)", a.code, a.body, a.retryAfter)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond || waited > 2*time.Second {
		t.Fatalf("answered 503 after %s, want after the 300ms wait", waited)
	}
	if msg := jsonError(t, a); !strings.Contains(msg, "too many requests in flight") {
		t.Fatalf("error %q", msg)
	}
	// A request that finds the replica full gets in when a slot frees during its wait.
	go func() { answers <- post(t, srv.Client(), srv.URL+"/hook", push, bearer) }()
	time.Sleep(100 * time.Millisecond)
	close(req.release)
	for range 3 {
		if a := <-answers; a.code != http.StatusAccepted {
			t.Fatalf("held request: %d %s", a.code, a.body)
		}
	}
	if n := len(req.calls); n != 3 {
		t.Fatalf("domain called %d times, want 3", n)
	}
}

// Bodies in flight share a byte budget: a body that does not fit waits up to inFlightWait,
// then gets 503; a smaller one that fits is served; a body of unknown length reserves the
// route's limit.
func TestBodyBytesBudget(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	s := newServer(&stubRequester{out: requested}, &bytes.Buffer{})
	s.lim = limits{maxBodyBytesInFlight: 4 << 20, inFlightWait: 200 * time.Millisecond}
	srv := httptest.NewServer(s.HookHandler())
	defer srv.Close()
	bearer := map[string]string{"Authorization": "Bearer " + secret}

	// A sender of 3 MiB that is slow to send it holds 3 MiB of the 4.
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n{", secret, 3<<20)
	time.Sleep(100 * time.Millisecond)

	big := append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), 2<<20)...), `"}`...)
	if a := post(t, srv.Client(), srv.URL+"/hook", big, bearer); a.code != http.StatusServiceUnavailable || a.retryAfter != overloadRetryAfter {
		t.Fatalf("2 MiB body with 1 MiB free: %d %s", a.code, a.body)
	}
	if a := post(t, srv.Client(), srv.URL+"/hook", push, bearer); a.code != http.StatusAccepted {
		t.Fatalf("small body with 1 MiB free: %d %s", a.code, a.body)
	}
	// Unknown length: the route's 3 MiB is reserved, which does not fit either.
	r, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", io.MultiReader(bytes.NewReader(push)))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+secret)
	resp, err := srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("chunked body with 1 MiB free: %d", resp.StatusCode)
	}
	c.Close() // the slow sender leaves: its 3 MiB are given back
	waitUntil(t, func() bool { return post(t, srv.Client(), srv.URL+"/hook", big, bearer).code == http.StatusBadRequest })
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
	}
}

// A waiting stream gives its in-flight slot back once the push is accepted, and holds one
// of maxWaiting slots instead: over that, a waiting push is refused before it is requested.
func TestWaitingStreamsHoldTheirOwnSlots(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	req := &blockingRequester{stubRequester: stubRequester{out: requested}, entered: make(chan struct{}, 10),
		release: make(chan struct{})}
	close(req.release)
	var logs bytes.Buffer
	s := newServer(req, &logs)
	s.lim = limits{maxInFlight: 1, maxWaiting: 1, inFlightWait: 100 * time.Millisecond}
	srv := httptest.NewServer(s.HookHandler())
	defer srv.Close()
	bearer := map[string]string{"Authorization": "Bearer " + secret}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/hook?wait=true", bytes.NewReader(push))
	r.Header.Set("Authorization", "Bearer "+secret)
	r.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "accepted: ") {
		t.Fatalf("stream: %q %v", line, err)
	}
	<-req.entered
	// The stream is open: a plain push still gets the only in-flight slot...
	if a := post(t, srv.Client(), srv.URL+"/hook", push, bearer); a.code != http.StatusAccepted {
		t.Fatalf("push while a stream is open: %d %s", a.code, a.body)
	}
	<-req.entered
	// ...and a second waiting push is refused before the domain is asked.
	a := post(t, srv.Client(), srv.URL+"/hook?wait=true", push, bearer)
	if a.code != http.StatusServiceUnavailable || a.retryAfter == "" {
		t.Fatalf("second stream: %d %s", a.code, a.body)
	}
	if n := len(req.calls); n != 2 {
		t.Fatalf("domain called %d times, want 2", n)
	}
}

// clientFrom returns an HTTP client whose connections come from the given loopback address.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
}

// After authFailureBurst failures from one address, its failures are answered 429 with
// Retry-After instead of 401; a request that authenticates is never limited, from that
// address or behind a forged X-Forwarded-For; other addresses keep their own budget; the
// platform API shares it.
func TestFailedAuthenticationIsRateLimitedPerAddress(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	var logs bytes.Buffer
	stub := &stubRequester{out: requested}
	s := newServer(stub, &logs)
	s.Platform = stubPlatform{}
	s.lim = limits{authFailureBurst: 3, authFailureRate: 0.001}
	srv := httptest.NewServer(s.HookHandler())
	defer srv.Close()
	api := httptest.NewServer(s.PlatformHandler())
	defer api.Close()
	attacker, other := clientFrom("127.0.0.7"), clientFrom("127.0.0.8")
	wrong := map[string]string{"Authorization": "Bearer wrong"}

	for i := range 3 {
		if a := post(t, attacker, srv.URL+"/hook", push, wrong); a.code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i+1, a.code, a.body)
		}
	}
	for _, h := range []map[string]string{wrong, {"Authorization": "Bearer wrong", "X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}, nil} {
		a := post(t, attacker, srv.URL+"/hook", push, h)
		if a.code != http.StatusTooManyRequests || a.retryAfter == "" || a.retryAfter == "0" {
			t.Fatalf("over the budget (%v): %d %s Retry-After %q", h, a.code, a.body, a.retryAfter)
		}
		if msg := jsonError(t, a); !strings.Contains(msg, "too many failed authentications") {
			t.Fatalf("error %q", msg)
		}
	}
	if a := post(t, attacker, api.URL+"/api/v1/reconcile", []byte(`{"region":"x"}`), map[string]string{"Authorization": "Bearer wrong"}); a.code != http.StatusTooManyRequests {
		t.Fatalf("platform API from the same address: %d %s", a.code, a.body)
	}
	if a := post(t, attacker, srv.URL+"/hook", push, map[string]string{"Authorization": "Bearer " + secret}); a.code != http.StatusAccepted {
		t.Fatalf("the right token from a limited address: %d %s", a.code, a.body)
	}
	if a := post(t, attacker, api.URL+"/api/v1/reconcile", []byte(`{"region":"x"}`), map[string]string{"Authorization": "Bearer " + platformKey}); a.code != http.StatusAccepted {
		t.Fatalf("the platform token from a limited address: %d %s", a.code, a.body)
	}
	if a := post(t, other, srv.URL+"/hook", push, wrong); a.code != http.StatusUnauthorized {
		t.Fatalf("another address: %d %s", a.code, a.body)
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), platformKey) {
		t.Fatalf("token in the logs:\n%s", logs.String())
	}
}

type stubPlatform struct{}

func (stubPlatform) Reconcile(context.Context, api.Selector) (*api.JobStatus, error) {
	return &api.JobStatus{Job: api.Job{ID: "0123456789abcdef"}}, nil
}

func (stubPlatform) Status(context.Context, string) (*api.JobStatus, error) {
	return nil, jobs.ErrJobNotFound
}

// The failure table stays within maxTrackedAddresses however many addresses fail; an IPv6
// sender is one client per /64, so rotating its addresses neither resets its budget nor adds
// entries; each kind of credential has its own budget.
func TestAuthLimiterMemoryIsBounded(t *testing.T) {
	a := newAuthLimiter(limits{maxTrackedAddresses: 100}.withDefaults())
	now := time.Now()
	for i := range 5000 {
		a.fail(bearerCredential, fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), now)
	}
	if n := a.table.len(); n != 100 {
		t.Fatalf("%d addresses tracked, want 100", n)
	}
	if clientKey("2001:db8:1:2::1") != clientKey("2001:db8:1:2:ffff::9") || clientKey("2001:db8:1:2::1") == clientKey("2001:db8:1:3::1") {
		t.Fatal("IPv6 clients are not keyed by /64")
	}
	if clientKey("::ffff:192.0.2.1") != clientKey("192.0.2.1") || clientKey("192.0.2.1") == clientKey("192.0.2.2") {
		t.Fatal("IPv4 clients are not keyed by address")
	}
	for i := range authFailureBurst {
		if _, limited := a.fail(bearerCredential, "192.0.2.1", now); limited {
			t.Fatalf("limited after %d failures", i)
		}
	}
	d, limited := a.fail(bearerCredential, "192.0.2.1", now)
	if !limited || d < time.Second || d > 3*time.Second {
		t.Fatalf("after the burst: limited %v, retry after %s", limited, d)
	}
	if a.over(signatureCredential, "192.0.2.1", now) {
		t.Fatal("Bearer failures spent the budget of signatures")
	}

	// 1,000 addresses of one /64, each failing once: one entry, its budget spent.
	v6 := newAuthLimiter(limits{maxTrackedAddresses: 100}.withDefaults())
	limitedAt := 0
	for i := range 1000 {
		if _, limited := v6.fail(bearerCredential, fmt.Sprintf("2001:db8:7:7:%x:%x::1", i>>8, i&0xff), now); limited && limitedAt == 0 {
			limitedAt = i + 1
		}
	}
	if n := v6.table.len(); n != 1 || limitedAt != authFailureBurst+1 {
		t.Fatalf("rotating within one /64: %d entries, limited from failure %d", n, limitedAt)
	}
	if _, limited := v6.fail(bearerCredential, "2001:db8:7:8::1", now); limited {
		t.Fatal("another /64 limited")
	}
}

// A repeated delivery (same X-Gitea-Delivery, same body) gets the earlier answer, status and
// body, without the domain being asked again; anything else is a new request.
func TestDeliveryReplay(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	var logs bytes.Buffer
	stub := &stubRequester{out: requested}
	s := newServer(stub, &logs)
	srv := httptest.NewServer(s.HookHandler())
	defer srv.Close()
	sig := func(b []byte) map[string]string {
		return map[string]string{"X-Gitea-Signature": sign(b), "X-Gitea-Delivery": "d-1"}
	}
	first := post(t, srv.Client(), srv.URL+"/hook", push, sig(push))
	again := post(t, srv.Client(), srv.URL+"/hook", push, sig(push))
	if first.code != http.StatusAccepted || again.code != first.code || again.body != first.body {
		t.Fatalf("replay: %d %s, first %d %s", again.code, again.body, first.code, first.body)
	}
	if len(stub.calls) != 1 {
		t.Fatalf("domain called %d times for one delivery", len(stub.calls))
	}
	// The same delivery id with another body, or a replay that does not authenticate, is
	// not the delivery.
	other := bytes.Replace(push, []byte(`"after": "0d81d02ec37935798c915e905529535b4a9c82f5"`), []byte(`"after": "1d81d02ec37935798c915e905529535b4a9c82f5"`), 1)
	if a := post(t, srv.Client(), srv.URL+"/hook", other, sig(other)); a.code != http.StatusAccepted || len(stub.calls) != 2 {
		t.Fatalf("same id, other body: %d, %d calls", a.code, len(stub.calls))
	}
	if a := post(t, srv.Client(), srv.URL+"/hook", push, map[string]string{"X-Gitea-Delivery": "d-1", "X-Gitea-Signature": sign(other)}); a.code != http.StatusUnauthorized {
		t.Fatalf("unauthenticated replay: %d %s", a.code, a.body)
	}
	// Without a delivery id of the sender's, every request is new.
	bearer := map[string]string{"Authorization": "Bearer " + secret}
	post(t, srv.Client(), srv.URL+"/hook", push, bearer)
	post(t, srv.Client(), srv.URL+"/hook", push, bearer)
	if len(stub.calls) != 4 {
		t.Fatalf("domain called %d times, want 4", len(stub.calls))
	}
	// A failure is not kept: the retry is asked again.
	stub.err = fmt.Errorf("%w: down", cluster.ErrUnavailable)
	if a := post(t, srv.Client(), srv.URL+"/hook", push, map[string]string{"X-Gitea-Signature": sign(push), "X-Gitea-Delivery": "d-2"}); a.code != http.StatusServiceUnavailable {
		t.Fatalf("outage: %d", a.code)
	}
	stub.err = nil
	if a := post(t, srv.Client(), srv.URL+"/hook", push, map[string]string{"X-Gitea-Signature": sign(push), "X-Gitea-Delivery": "d-2"}); a.code != http.StatusAccepted || len(stub.calls) != 6 {
		t.Fatalf("retry after the outage: %d, %d calls", a.code, len(stub.calls))
	}
}

func TestLRU(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLRU[string, int](10, time.Minute, func() time.Time { return now })
	l.add("a", 1, 4)
	l.add("b", 2, 4)
	if _, ok := l.get("a"); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	l.add("c", 3, 4) // over 10: b goes
	if _, ok := l.get("b"); ok {
		t.Fatal("b kept over the budget")
	}
	if _, ok := l.get("a"); !ok {
		t.Fatal("a evicted though recently used")
	}
	l.add("huge", 4, 11)
	if _, ok := l.get("huge"); ok || l.len() != 2 {
		t.Fatal("an entry over the whole budget was kept")
	}
	now = now.Add(time.Minute)
	if _, ok := l.get("a"); ok {
		t.Fatal("a kept past its ttl")
	}
}

// startServer runs s.Start on a loopback listener until the test ends.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// readAll reads what the server sends until it closes the connection, and when.
func readAll(t *testing.T, c net.Conn, limit time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	b, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %s", limit)
	}
	return string(b), time.Since(start)
}

// Slow senders are cut: headers that do not arrive within readHeaderTimeout close the
// connection, a body that does not arrive within readTimeout gets 408, an idle keep-alive
// connection is closed after idleTimeout.
func TestSlowClientsAreCut(t *testing.T) {
	s := newServer(&stubRequester{out: requested}, &bytes.Buffer{})
	s.Log = logr.Discard()
	s.lim = limits{readHeaderTimeout: 300 * time.Millisecond, readTimeout: 600 * time.Millisecond, idleTimeout: 400 * time.Millisecond}
	addr := startServer(t, s)

	t.Run("headers", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "POST /hook HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		go func() { // a byte every 100 ms, never the end of the headers
			for range 20 {
				time.Sleep(100 * time.Millisecond)
				if _, err := c.Write([]byte("X")); err != nil {
					return
				}
			}
		}()
		got, after := readAll(t, c, 3*time.Second)
		// net/http answers before any handler exists: nothing, or its own plain 400.
		if (got != "" && !strings.HasPrefix(got, "HTTP/1.1 400 Bad Request\r\n")) || after > 1500*time.Millisecond {
			t.Fatalf("after %s: %q", after, got)
		}
		t.Logf("slow headers: connection closed after %s with %q", after.Round(10*time.Millisecond), got)
	})
	t.Run("body", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n{", secret)
		got, after := readAll(t, c, 3*time.Second)
		if !strings.HasPrefix(got, "HTTP/1.1 408 ") || !strings.Contains(got, `{"error":"request body not received in time`) || after > 2*time.Second {
			t.Fatalf("after %s: %q", after, got)
		}
	})
	t.Run("idle", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(3 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF || time.Since(start) > 1500*time.Millisecond {
			t.Fatalf("idle connection: %v after %s", err, time.Since(start))
		}
	})
}

// What a sender gets at the edges net/http itself enforces or that only a raw connection can
// produce: headers over maxHeaderBytes (431, net/http's own text/plain answer), a chunked
// body over the limit (413), a body shorter than its Content-Length (400).
func TestRequestEdges(t *testing.T) {
	s := newServer(&stubRequester{out: requested}, &bytes.Buffer{})
	s.Log = logr.Discard()
	addr := startServer(t, s)
	raw := func(req string, body io.Reader) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var wg sync.WaitGroup
		wg.Go(func() {
			fmt.Fprint(c, req)
			if body != nil {
				_, _ = io.Copy(c, body)
			}
			_ = c.(*net.TCPConn).CloseWrite()
		})
		got, _ := readAll(t, c, 5*time.Second)
		wg.Wait()
		return got
	}
	big := strings.Repeat("a", maxHeaderBytes+8<<10)
	got := raw("POST /hook HTTP/1.1\r\nHost: x\r\nX-Big: "+big+"\r\n\r\n", nil)
	if !strings.HasPrefix(got, "HTTP/1.1 431 Request Header Fields Too Large\r\n") || !strings.Contains(got, "Content-Type: text/plain") {
		t.Fatalf("big header: %.200q", got)
	}
	got = raw(fmt.Sprintf("POST /hook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", secret),
		io.MultiReader(strings.NewReader(fmt.Sprintf("%x\r\n", maxBodyBytes+1)), strings.NewReader(strings.Repeat(" ", maxBodyBytes+1)), strings.NewReader("\r\n0\r\n\r\n")))
	if !strings.HasPrefix(got, "HTTP/1.1 413 ") || !strings.Contains(got, `{"error":"request body over 3 MiB"}`) {
		t.Fatalf("chunked body over the limit: %.300q", got)
	}
	got = raw(fmt.Sprintf("POST /hook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ref\":", secret), nil)
	if !strings.HasPrefix(got, "HTTP/1.1 400 ") || !strings.Contains(got, `{"error":"malformed payload: reading body: body shorter than its Content-Length"}`) {
		t.Fatalf("truncated body: %.300q", got)
	}
}

// What maxInFlight's memory reasoning relies on: a request of the largest body allocates
// about that body once (JSON) or twice (form), not the several copies a decoder would make.
func TestLargestBodyMemory(t *testing.T) {
	h := newServer(&stubRequester{out: requested}, &bytes.Buffer{}).HookHandler()
	push := payload(t, "gitea-push-branch.json")
	padded := func(n int) []byte {
		return bytes.Replace(push, []byte(`"ref"`), []byte(`"x":"`+strings.Repeat("a", n-len(push)-20)+`","ref"`), 1)
	}
	big := padded(maxBodyBytes)
	form := []byte("payload=" + url.QueryEscape(string(padded(maxBodyBytes*9/10))))
	for _, tt := range []struct {
		ct   string
		body []byte
		max  float64 // allocated, in bodies
	}{{"application/json", big, 1.2}, {"application/x-www-form-urlencoded", form, 2.2}} {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		r := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(tt.body))
		r.Header.Set("Content-Type", tt.ct)
		r.Header.Set("Authorization", "Bearer "+secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		runtime.ReadMemStats(&m1)
		bodies := float64(m1.TotalAlloc-m0.TotalAlloc) / float64(len(tt.body))
		t.Logf("%s body of %d bytes: answered %d, allocated %.2f times the body", tt.ct, len(tt.body), w.Code, bodies)
		if w.Code != http.StatusAccepted {
			t.Fatalf("%s: %d %s", tt.ct, w.Code, w.Body)
		}
		if bodies > tt.max {
			t.Errorf("%s: allocated %.2f times the body, want at most %.1f", tt.ct, bodies, tt.max)
		}
	}
}

// trickle opens a connection from ip and sends a request's headers, then one byte of a body
// announced as much larger: a sender that never finishes.
func trickle(t *testing.T, from, addr string, headers string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: 100000\r\n\r\n{", headers)
	return c
}

// answerWithin reads the status line the server sends on c within d, "" if none.
func answerWithin(c net.Conn, d time.Duration) string {
	_ = c.SetReadDeadline(time.Now().Add(d))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// A request without credentials, or with a Bearer token that does not verify, is answered
// from its headers: 401 at once, its body never read, no in-flight slot or body bytes taken.
// Hundreds of them, trickling, leave room for a delivery that authenticates.
func TestUnauthenticatedRequestsTakeNothing(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	s := newServer(&stubRequester{out: requested}, &bytes.Buffer{})
	s.lim = limits{maxInFlight: 2, maxBodyBytesInFlight: 1 << 20, inFlightWait: 100 * time.Millisecond, authFailureBurst: 1 << 20}
	addr := startServer(t, s)
	for i, h := range []string{"", "Authorization: Bearer wrong\r\n", "Authorization: Basic " + secret + "\r\n"} {
		c := trickle(t, "127.0.0.1", addr, h)
		if got := answerWithin(c, 2*time.Second); !strings.HasPrefix(got, "HTTP/1.1 401") {
			t.Fatalf("case %d: %q, want 401 before the body", i, got)
		}
	}
	var conns []net.Conn
	for i := range 300 {
		conns = append(conns, trickle(t, fmt.Sprintf("127.0.1.%d", i%250+1), addr, ""))
	}
	for range 5 {
		if a := post(t, http.DefaultClient, "http://"+addr+"/hook", push, map[string]string{"Authorization": "Bearer " + secret}); a.code != http.StatusAccepted {
			t.Fatalf("a delivery among 300 unauthenticated senders: %d %s", a.code, a.body)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

// A signed request is read before it is authenticated, but only within the pool of signed
// reads, a few per client address, for a short while, and not at all from an address over
// its failure budget.
func TestSignedReadsAreBounded(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	s := newServer(&stubRequester{out: requested}, &bytes.Buffer{})
	s.lim = limits{maxSignedReads: 4, maxSignedReadsPerClient: 2, signedReadTimeout: 2 * time.Second,
		authFailureBurst: 2, authFailureRate: 0.001, inFlightWait: 300 * time.Millisecond}
	addr := startServer(t, s)
	sig := "X-Gitea-Signature: " + sign([]byte("other")) + "\r\n"
	held := func() int { return len(s.signedReads.pool.ch) }
	// Two trickling signed requests fill 127.0.2.1's share; a third is refused unread.
	start := time.Now()
	first := trickle(t, "127.0.2.1", addr, sig)
	trickle(t, "127.0.2.1", addr, sig)
	waitUntil(t, func() bool { return held() == 2 })
	if got := answerWithin(trickle(t, "127.0.2.1", addr, sig), time.Second); !strings.HasPrefix(got, "HTTP/1.1 503") {
		t.Fatalf("third signed read from one address: %q", got)
	}
	// Another address takes the rest of the pool; then a signed delivery waits for a place,
	// and gets 503 when none frees up in time.
	trickle(t, "127.0.2.2", addr, sig)
	trickle(t, "127.0.2.2", addr, sig)
	waitUntil(t, func() bool { return held() == 4 })
	if a := post(t, clientFrom("127.0.2.3"), "http://"+addr+"/hook", push, map[string]string{"X-Gitea-Signature": sign(push)}); a.code != http.StatusServiceUnavailable || a.retryAfter == "" {
		t.Fatalf("signed delivery with the pool full: %d %s", a.code, a.body)
	}
	// Bearer deliveries never need the pool.
	if a := post(t, clientFrom("127.0.2.1"), "http://"+addr+"/hook", push, map[string]string{"Authorization": "Bearer " + secret}); a.code != http.StatusAccepted {
		t.Fatalf("bearer delivery with the pool full: %d %s", a.code, a.body)
	}
	// A trickling body gets its deadline: 408, and its place back.
	if got := answerWithin(first, 5*time.Second); !strings.HasPrefix(got, "HTTP/1.1 408") || time.Since(start) > 4*time.Second {
		t.Fatalf("trickling signed read after %s: %q", time.Since(start), got)
	}
	waitUntil(t, func() bool { return held() == 0 })
	if a := post(t, clientFrom("127.0.2.3"), "http://"+addr+"/hook", push, map[string]string{"X-Gitea-Signature": sign(push)}); a.code != http.StatusAccepted {
		t.Fatalf("signed delivery once the trickles were cut: %d %s", a.code, a.body)
	}
	// Wrong Bearer tokens spend their own budget: a signed delivery from that address is
	// read and served.
	bad := clientFrom("127.0.2.4")
	for range 3 {
		post(t, bad, "http://"+addr+"/hook", push, map[string]string{"Authorization": "Bearer wrong"})
	}
	if a := post(t, bad, "http://"+addr+"/hook", push, map[string]string{"Authorization": "Bearer wrong"}); a.code != http.StatusTooManyRequests {
		t.Fatalf("bearer failures over the budget: %d", a.code)
	}
	if a := post(t, bad, "http://"+addr+"/hook", push, map[string]string{"X-Gitea-Signature": sign(push)}); a.code != http.StatusAccepted {
		t.Fatalf("a signed delivery from an address over its Bearer budget: %d %s", a.code, a.body)
	}
	// Wrong signatures spend theirs: over it, they get 429, and the address's signed
	// requests are read one at a time; a correct signature still passes.
	for range 2 {
		post(t, bad, "http://"+addr+"/hook", push, map[string]string{"X-Gitea-Signature": sign([]byte("other"))})
	}
	if a := post(t, bad, "http://"+addr+"/hook", push, map[string]string{"X-Gitea-Signature": sign([]byte("other"))}); a.code != http.StatusTooManyRequests {
		t.Fatalf("signature failures over the budget: %d %s", a.code, a.body)
	}
	slow := trickle(t, "127.0.2.4", addr, sig)
	waitUntil(t, func() bool { return held() == 1 })
	if got := answerWithin(trickle(t, "127.0.2.4", addr, sig), time.Second); !strings.HasPrefix(got, "HTTP/1.1 503") {
		t.Fatalf("a second signed read from a limited address: %q", got)
	}
	slow.Close()
	waitUntil(t, func() bool { return held() == 0 })
	if a := post(t, bad, "http://"+addr+"/hook", push, map[string]string{"X-Gitea-Signature": sign(push)}); a.code != http.StatusAccepted {
		t.Fatalf("a correct signature from an address over its budget of signatures: %d %s", a.code, a.body)
	}
}

// Behind trusted proxies, the client is the address the proxy wrote into X-Forwarded-For:
// one client's failures do not limit another behind the same proxy. A peer that is no
// trusted proxy is its own client whatever its headers say.
func TestTrustedProxies(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	var logs bytes.Buffer
	s := newServer(&stubRequester{out: requested}, &logs)
	s.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}
	s.lim = limits{authFailureBurst: 2, authFailureRate: 0.001}
	addr := startServer(t, s)
	proxy, other := clientFrom("127.0.0.9"), clientFrom("127.0.0.10")
	wrong := func(xff string) map[string]string {
		return map[string]string{"Authorization": "Bearer wrong", "X-Forwarded-For": xff}
	}
	for range 2 {
		post(t, proxy, "http://"+addr+"/hook", push, wrong("198.51.100.1"))
	}
	if a := post(t, proxy, "http://"+addr+"/hook", push, wrong("198.51.100.1")); a.code != http.StatusTooManyRequests {
		t.Fatalf("a client behind the proxy over its budget: %d", a.code)
	}
	// What the client wrote left of what the proxy appended is not read.
	if a := post(t, proxy, "http://"+addr+"/hook", push, wrong("203.0.113.50, 198.51.100.1")); a.code != http.StatusTooManyRequests {
		t.Fatalf("a client prepending its own X-Forwarded-For: %d", a.code)
	}
	if a := post(t, proxy, "http://"+addr+"/hook", push, wrong("198.51.100.2")); a.code != http.StatusUnauthorized {
		t.Fatalf("another client behind the same proxy: %d", a.code)
	}
	// An untrusted peer naming clients: each is still the peer.
	for i := range 2 {
		post(t, other, "http://"+addr+"/hook", push, wrong(fmt.Sprintf("198.51.100.%d", 10+i)))
	}
	if a := post(t, other, "http://"+addr+"/hook", push, wrong("198.51.100.20")); a.code != http.StatusTooManyRequests {
		t.Fatalf("an untrusted peer rotating X-Forwarded-For: %d", a.code)
	}
	if !strings.Contains(logs.String(), `"198.51.100.2"`) || strings.Contains(logs.String(), "198.51.100.20") {
		t.Fatalf("logged client addresses:\n%s", logs.String())
	}
	for _, tt := range []struct {
		in   []string
		want string
		bad  bool
	}{
		{in: []string{"10.0.0.0/8", "192.0.2.7", "fd00::/8", " 2001:db8::1 "}, want: "[10.0.0.0/8 192.0.2.7/32 fd00::/8 2001:db8::1/128]"},
		{in: []string{"::ffff:10.1.0.0/112"}, want: "[10.1.0.0/16]"},
		{in: []string{"10.0.0.1/8"}, want: "[10.0.0.0/8]"},
		{in: []string{"nginx"}, bad: true},
		{in: []string{"fe80::1%eth0"}, bad: true},
	} {
		got, err := ParseTrustedProxies(tt.in)
		if (err != nil) != tt.bad || (!tt.bad && fmt.Sprint(got) != tt.want) {
			t.Errorf("%q: %v %v, want %s", tt.in, got, err, tt.want)
		}
	}
}

// A signed request not yet authenticated holds of the bodies' budget what it has read (its
// buffer), not what it announces: 64 senders announcing 1 MiB and trickling leave the budget
// to requests with a Bearer token; together, unauthenticated reads hold at most their share.
func TestSignedReadsReserveWhatTheyRead(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	s := newServer(&stubRequester{out: requested}, &bytes.Buffer{})
	s.lim = limits{maxBodyBytesInFlight: 8 << 20, maxSignedBodyBytes: 1 << 20, signedReadTimeout: 10 * time.Second,
		inFlightWait: 300 * time.Millisecond}
	addr := startServer(t, s)
	sig := "X-Gitea-Signature: " + sign([]byte("other")) + "\r\n"
	var conns []net.Conn
	for i := range 64 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.3.%d", i/4+1))}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n{", sig, 1<<20)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	waitUntil(t, func() bool { return len(s.signedReads.pool.ch) == 32 })
	// 32 of them fit the 1 MiB share (32 KiB each); the others wait for room, then 503.
	if got := s.signedBodyBytes.TryAcquire(1); got {
		t.Fatal("the share of unauthenticated reads is not full")
	}
	// A Bearer request of 3 MiB fits what is left of the 8 MiB (reserving what they
	// announce, eight of them would have taken it all).
	big := append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), 3<<20-100)...), `"}`...)
	if a := post(t, http.DefaultClient, "http://"+addr+"/hook", big, map[string]string{"Authorization": "Bearer " + secret}); a.code != http.StatusBadRequest {
		t.Fatalf("3 MiB Bearer body beside 64 trickling signed reads: %d %.200s", a.code, a.body)
	}
	if a := post(t, http.DefaultClient, "http://"+addr+"/hook", push, map[string]string{"Authorization": "Bearer " + secret}); a.code != http.StatusAccepted {
		t.Fatalf("a Bearer push beside 64 trickling signed reads: %d %s", a.code, a.body)
	}
	for _, c := range conns {
		c.Close()
	}
	waitUntil(t, func() bool { return len(s.signedReads.pool.ch) == 0 })
	// A signed body bigger than a step is read whole, and its bytes leave the share once
	// its signature verifies.
	padded := bytes.Replace(push, []byte(`"ref"`), []byte(`"x":"`+strings.Repeat("a", 200<<10)+`","ref"`), 1)
	if a := post(t, http.DefaultClient, "http://"+addr+"/hook", padded, map[string]string{"X-Gitea-Signature": sign(padded)}); a.code != http.StatusAccepted {
		t.Fatalf("a signed push of 200 KiB: %d %s", a.code, a.body)
	}
	if !s.signedBodyBytes.TryAcquire(1 << 20) {
		t.Fatal("the share of unauthenticated reads was not given back")
	}
	s.signedBodyBytes.Release(1 << 20)
	// Chunked, it is read whole too, and refused over the limit.
	r, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/hook", io.MultiReader(bytes.NewReader(padded)))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Gitea-Signature", sign(padded))
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a chunked signed push: %d", resp.StatusCode)
	}
}

// The platform API takes a Bearer token only: a signature over its (empty) body would be a
// constant anyone who saw it once could replay.
func TestPlatformTakesBearerOnly(t *testing.T) {
	s := newServer(&stubRequester{}, &bytes.Buffer{})
	s.Platform = stubPlatform{}
	api := httptest.NewServer(s.PlatformHandler())
	defer api.Close()
	get := func(h map[string]string) int {
		req, _ := http.NewRequest(http.MethodGet, api.URL+"/api/v1/reconcile/0123456789abcdef", nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, h := range []map[string]string{
		{"X-Gitea-Signature": hmacHex(platformKey, nil)},
		{"X-Hub-Signature-256": "sha256=" + hmacHex(platformKey, nil)},
		{"Authorization": "Bearer " + secret},
		{},
	} {
		if code := get(h); code != http.StatusUnauthorized {
			t.Fatalf("%v: %d, want 401", h, code)
		}
	}
	if code := get(map[string]string{"Authorization": "Bearer " + platformKey}); code != http.StatusNotFound {
		t.Fatalf("the platform token: %d, want the job's 404", code)
	}
	// /hook is not served on the platform API's address, nor the API on /hook's.
	if a := post(t, http.DefaultClient, api.URL+"/hook", payload(t, "gitea-push-branch.json"), map[string]string{"Authorization": "Bearer " + secret}); a.code != http.StatusNotFound {
		t.Fatalf("/hook on the platform address: %d", a.code)
	}
	hook := httptest.NewServer(s.HookHandler())
	defer hook.Close()
	if a := post(t, http.DefaultClient, hook.URL+"/api/v1/reconcile", []byte(`{"all":true}`), map[string]string{"Authorization": "Bearer " + platformKey}); a.code != http.StatusNotFound {
		t.Fatalf("the platform API on /hook's address: %d", a.code)
	}
}
