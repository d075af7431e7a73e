package main

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf, as a collector
// serves it): it keeps every span exported to it, and the raw requests, for the secret
// sweep. The suite's service exports to it (OTEL_EXPORTER_OTLP_ENDPOINT, set in TestMain).
type otlpReceiver struct {
	URL string
	srv *http.Server

	mu    sync.Mutex
	spans []receivedSpan
	raw   [][]byte
}

// receivedSpan is a span and the service.name of the resource that sent it.
type receivedSpan struct {
	*tracepb.Span
	service string
}

func startOTLPReceiver() (*otlpReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &otlpReceiver{URL: "http://" + ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.export)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *otlpReceiver) Close() { _ = r.srv.Close() }

func (r *otlpReceiver) export(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "content type "+ct, http.StatusUnsupportedMediaType)
		return
	}
	var in coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.raw = append(r.raw, b)
	for _, rs := range in.GetResourceSpans() {
		service := attrString(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, receivedSpan{s, service})
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans received of one trace.
func (r *otlpReceiver) trace(id []byte) []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []receivedSpan
	for _, s := range r.spans {
		if bytes.Equal(s.TraceId, id) {
			out = append(out, s)
		}
	}
	return out
}

// received returns every request body received, for the secret sweep.
func (r *otlpReceiver) received() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Join(r.raw, nil)
}

func attrString(attrs []*commonpb.KeyValue, key string) string {
	for _, a := range attrs {
		if a.GetKey() == key {
			v := a.GetValue()
			if s := v.GetStringValue(); s != "" {
				return s
			}
			return fmt.Sprint(v.GetIntValue())
		}
	}
	return ""
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// One push is one trace, on the real binary exporting over OTLP/HTTP to the test's receiver:
// a caller's W3C traceparent is continued by /hook's server span; the intake's span is its
// child; the leader's worker, which requests the push later from its push record, continues
// the same trace (request.cluster); the reporter, later still and from the objects' records,
// posts each status in a span of it (report.status: pending, then success, per object).
// Every span carries the delivery id; nothing of another push is in the trace.
func TestPushTrace(t *testing.T) {
	integration(t)
	a := newApp(t, "traced-"+randomSuffix(), "main")
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "traced"), "traced")
	traceID, callerSpan := randomBytes(t, 16), randomBytes(t, 8)
	delivery := "trace-" + hex.EncodeToString(randomBytes(t, 8))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e2e.hookURL+"/hook", bytes.NewReader(a.pushEvent(sha)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+a.token())
	req.Header.Set("X-Gitea-Delivery", delivery)
	req.Header.Set("traceparent", fmt.Sprintf("00-%x-%x-01", traceID, callerSpan))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push: %d %s", resp.StatusCode, b)
	}
	a.waitAllFinal(t, sha, "success")

	contexts := []string{a.context("GitRepository"), a.context("Kustomization")}
	// posted reports which states were posted in the trace, by status context.
	posted := func(spans []receivedSpan) map[string][]string {
		out := map[string][]string{}
		for _, s := range spans {
			if s.Name == "report.status" {
				c := attrString(s.Attributes, "flux_webhook.status.context")
				out[c] = append(out[c], attrString(s.Attributes, "flux_webhook.status.state"))
			}
		}
		return out
	}
	var spans []receivedSpan
	waitFor(t, 30*time.Second, "the push's spans exported", func() bool {
		spans = e2e.traces.trace(traceID)
		p := posted(spans)
		for _, c := range contexts {
			if !slices.Contains(p[c], "pending") || !slices.Contains(p[c], "success") {
				return false
			}
		}
		return true
	})

	byName := map[string][]receivedSpan{}
	for _, s := range spans {
		byName[s.Name] = append(byName[s.Name], s)
		if got := attrString(s.Attributes, "flux_webhook.delivery"); got != delivery {
			t.Errorf("span %s: delivery %q, want %q (another push's span in the trace?)", s.Name, got, delivery)
		}
		if s.service != "flux-webhook" {
			t.Errorf("span %s from service %q", s.Name, s.service)
		}
	}
	one := func(name string) receivedSpan {
		t.Helper()
		if len(byName[name]) != 1 {
			t.Fatalf("%d %q spans in the trace, want 1 (names: %v)", len(byName[name]), name, spanNames(spans))
		}
		return byName[name][0]
	}
	server, intake, worker := one("POST /hook"), one("intake.accept"), one("request.cluster")
	if !bytes.Equal(server.ParentSpanId, callerSpan) || server.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("server span: parent %x kind %v, want the caller's %x, server", server.ParentSpanId, server.Kind, callerSpan)
	}
	if code := attrString(server.Attributes, "http.response.status_code"); code != "202" {
		t.Errorf("server span: status code %s", code)
	}
	if !bytes.Equal(intake.ParentSpanId, server.SpanId) {
		t.Errorf("intake span's parent %x, want the server span %x", intake.ParentSpanId, server.SpanId)
	}
	if !bytes.Equal(worker.ParentSpanId, intake.SpanId) || attrString(worker.Attributes, "k8s.cluster.name") != clusterName ||
		attrString(worker.Attributes, "vcs.ref.head.revision") != sha {
		t.Errorf("worker span: parent %x (want the intake's %x), attributes %v", worker.ParentSpanId, intake.SpanId, worker.Attributes)
	}
	for _, s := range byName["report.status"] {
		if !bytes.Equal(s.ParentSpanId, worker.SpanId) {
			t.Errorf("report.status %s: parent %x, want the worker's %x", attrString(s.Attributes, "flux_webhook.status.state"), s.ParentSpanId, worker.SpanId)
		}
		if s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("report.status failed: %s", s.Status.GetMessage())
		}
	}
	if unknown := slices.DeleteFunc(spanNames(spans), func(n string) bool {
		return slices.Contains([]string{"POST /hook", "intake.accept", "request.cluster", "report.status"}, n)
	}); len(unknown) > 0 {
		t.Errorf("unexpected spans in the trace: %v", unknown)
	}
	t.Logf("trace %x: %s", traceID, describeTrace(spans))
}

func spanNames(spans []receivedSpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

// describeTrace lists the spans as a tree, each with its duration and the state it posted.
func describeTrace(spans []receivedSpan) string {
	children := map[string][]receivedSpan{}
	ids := map[string]bool{}
	for _, s := range spans {
		ids[string(s.SpanId)] = true
	}
	var roots []receivedSpan
	for _, s := range spans {
		if ids[string(s.ParentSpanId)] {
			children[string(s.ParentSpanId)] = append(children[string(s.ParentSpanId)], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s receivedSpan, depth int)
	walk = func(s receivedSpan, depth int) {
		d := time.Duration(s.EndTimeUnixNano - s.StartTimeUnixNano).Round(100 * time.Microsecond)
		fmt.Fprintf(&b, "\n%s%s %s", strings.Repeat("  ", depth+1), s.Name, d)
		if st := attrString(s.Attributes, "flux_webhook.status.state"); st != "" {
			fmt.Fprintf(&b, " %s %s", attrString(s.Attributes, "flux_webhook.status.context"), st)
		}
		kids := children[string(s.SpanId)]
		slices.SortFunc(kids, func(x, y receivedSpan) int { return int(x.StartTimeUnixNano - y.StartTimeUnixNano) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

// A push without a traceparent starts its own trace at /hook, which the leader's worker and
// reporter continue as for a caller's; a push whose statuses are per cluster (over the
// suite's --status-auto-threshold) has the cluster's statuses, posted from its push record,
// in its trace too.
func TestPushTraceStartsAtHook(t *testing.T) {
	integration(t)
	a := newClusterApp(t, "traced-root-"+randomSuffix())
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "traced-root"), "traced-root")
	resp, body := hookPost(t, a.pushEvent(sha), a.token())
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push: %d %v", resp.StatusCode, body)
	}
	delivery, _ := body["delivery"].(string)
	a.waitAllFinal(t, sha, "success")
	var server receivedSpan
	waitFor(t, 30*time.Second, "the push's server span", func() bool {
		e2e.traces.mu.Lock()
		defer e2e.traces.mu.Unlock()
		for _, s := range e2e.traces.spans {
			if s.Name == "POST /hook" && attrString(s.Attributes, "flux_webhook.delivery") == delivery {
				server = s
				return true
			}
		}
		return false
	})
	if len(server.ParentSpanId) != 0 {
		t.Fatalf("a push without traceparent: the server span has a parent %x", server.ParentSpanId)
	}
	var spans []receivedSpan
	waitFor(t, 30*time.Second, "the cluster's statuses in its trace", func() bool {
		spans = e2e.traces.trace(server.TraceId)
		var states []string
		for _, s := range spans {
			if s.Name == "report.status" && attrString(s.Attributes, "flux_webhook.status.context") == clusterContext {
				states = append(states, attrString(s.Attributes, "flux_webhook.status.state"))
			}
		}
		return slices.Contains(states, "pending") && slices.Contains(states, "success")
	})
	for _, s := range spans {
		if got := attrString(s.Attributes, "flux_webhook.delivery"); got != delivery {
			t.Errorf("span %s: delivery %q, want %q", s.Name, got, delivery)
		}
	}
	t.Logf("trace %x: %s", server.TraceId, describeTrace(spans))
}
