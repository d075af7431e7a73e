package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// The test's secrets, each of the 32 bytes or more the keyring wants.
const (
	hookKey     = "test-hook-key-0123456789abcdef-0123456789"
	webhookKey  = "test-webhook-key-0123456789abcdef-0123456"
	sharedValue = "test-shared-token-0123456789abcdef-012345"
	platformKey = "test-platform-token-0123456789abcdef-0123"
	pushedRepo  = "gitea-admin/payloads" // the repository of testdata's push payloads
)

// secret is the scoped token of the pushed repository: what an Actions workflow presents.
var secret = credentials.DeriveToken([]byte(hookKey), mustScope(credentials.RepositoryScope(pushedRepo)))

func mustScope(s credentials.Scope, err error) credentials.Scope {
	if err != nil {
		panic(err)
	}
	return s
}

// testKeys is a keyring with every secret of the tests, the shared token only when shared.
func testKeys(shared bool) *credentials.Keyring {
	k := &credentials.Keyring{}
	for p, v := range map[credentials.Purpose]string{credentials.HookKey: hookKey, credentials.WebhookKey: webhookKey, credentials.PlatformToken: platformKey} {
		if err := k.Set(p, v); err != nil {
			panic(err)
		}
	}
	if shared {
		if err := k.Set(credentials.SharedToken, sharedValue); err != nil {
			panic(err)
		}
	}
	return k
}

// stubRequester stands in for the Flux side: this package only maps HTTP to a domain call
// and back (gitops and cmd/flux-webhook prove the domain on a real API server).
type stubRequester struct {
	mu    sync.Mutex
	calls []gitops.Push
	out   []api.Outcome
	err   error
}

func (s *stubRequester) Await(context.Context, gitops.Push, gitops.Result, time.Duration) <-chan api.TargetResult {
	ch := make(chan api.TargetResult)
	close(ch)
	return ch
}

func (s *stubRequester) Accept(_ context.Context, p gitops.Push) (gitops.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, p)
	return gitops.Result{Targets: s.out}, s.err
}

// sign signs a body as a native Gitea webhook with the webhook key.
func sign(body []byte) string { return hmacHex(webhookKey, body) }

func hmacHex(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func payload(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../webhook/gitea/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type hookRequest struct {
	method, path, ct string
	body             []byte
	headers          map[string]string
}

// newServer returns a server whose domain is a real Intake (without a forge: the payload's
// consistency and the credential's scope are checked) over req. The shared token is on.
func newServer(req requester, logs *bytes.Buffer) *Server {
	return &Server{Keys: testKeys(true), Forge: gitea.Events{}, Intake: &webhook.Intake{Requester: req}, Awaiter: req,
		Log: funcr.New(func(prefix, args string) { fmt.Fprintln(logs, prefix, args) }, funcr.Options{})}
}

// requester is what the tests stand in for the Flux side with.
type requester interface {
	webhook.Requester
	Awaiter
}

func TestHook(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	form := payload(t, "gitea-push-branch.form")
	// Gitea signs the JSON payload, also when it delivers it form-encoded.
	formValues, err := url.ParseQuery(string(form))
	if err != nil {
		t.Fatal(err)
	}
	formJSON := []byte(formValues.Get("payload"))
	requested := []api.Outcome{{Target: api.Target{Cluster: "local", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}, Result: api.ResultRequested}}
	bearer := map[string]string{"Authorization": "Bearer " + secret}
	tests := []struct {
		name    string
		req     hookRequest
		out     []api.Outcome
		err     error
		code    int
		result  string // api.HookResponse.Result, or the error text for error answers
		calls   int
		headers map[string]string
	}{
		{"bearer json", hookRequest{ct: "application/json", body: push, headers: bearer}, requested, nil, 202, "accepted", 1, nil},
		{"gitea signature", hookRequest{ct: "application/json", body: push, headers: map[string]string{"X-Gitea-Signature": sign(push), "X-Gitea-Event": "push"}}, requested, nil, 202, "accepted", 1, nil},
		{"hub signature", hookRequest{ct: "application/json", body: push, headers: map[string]string{"X-Hub-Signature-256": "sha256=" + sign(push)}}, requested, nil, 202, "accepted", 1, nil},
		{"form body", hookRequest{ct: "application/x-www-form-urlencoded", body: form, headers: map[string]string{"X-Gitea-Signature": sign(formJSON)}}, requested, nil, 202, "accepted", 1, nil},
		{"form body signed as sent", hookRequest{ct: "application/x-www-form-urlencoded", body: form, headers: map[string]string{"X-Gitea-Signature": sign(form)}}, nil, nil, 401, "unauthorized", 0, nil},
		{"the push event on its repository's path", hookRequest{path: "/hook/gitea-admin/payloads", ct: "application/json", body: push, headers: bearer}, requested, nil, 202, "accepted", 1, nil},
		{"the push event on another repository's path", hookRequest{path: "/hook/org/app", ct: "application/json", body: push, headers: bearer}, requested, nil, 400, "bad target: the path names org/app, the payload's repository is gitea-admin/payloads", 0, nil},
		{"no match", hookRequest{ct: "application/json", body: push, headers: bearer}, nil, nil, 200, "no-match", 1, nil},
		{"all suspended", hookRequest{ct: "application/json", body: push, headers: bearer}, []api.Outcome{{Result: api.ResultSuspended}}, nil, 200, "no-match", 1, nil},
		{"redelivery", hookRequest{ct: "application/json", body: push, headers: bearer}, []api.Outcome{{Result: api.ResultAlreadyRequested}}, nil, 202, "accepted", 1, nil},
		{"delete event", hookRequest{ct: "application/json", body: payload(t, "gitea-delete.json"), headers: map[string]string{"Authorization": "Bearer " + secret, "X-Gitea-Event": "delete"}}, nil, nil, 200, "ignored", 0, nil},
		{"create event", hookRequest{ct: "application/json", body: payload(t, "gitea-create.json"), headers: map[string]string{"Authorization": "Bearer " + secret, "X-Gitea-Event": "create"}}, nil, nil, 200, "ignored", 0, nil},
		{"branch deletion as a push", hookRequest{ct: "application/json", body: bytes.Replace(push, []byte(`"after": "0d81d02ec37935798c915e905529535b4a9c82f5"`), []byte(`"after": "0000000000000000000000000000000000000000"`), 1), headers: bearer}, nil, nil, 200, "ignored", 0, nil},
		{"organization token", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + credentials.DeriveToken([]byte(hookKey), mustScope(credentials.OrganizationScope("Gitea-Admin")))}}, requested, nil, 202, "accepted", 1, nil},
		{"shared token", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + sharedValue}}, requested, nil, 202, "accepted", 1, nil},
		{"token of another repository", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + credentials.DeriveToken([]byte(hookKey), mustScope(credentials.RepositoryScope("gitea-admin/other")))}}, nil, nil, 403, "forbidden: a scoped token for repo gitea-admin/other may not push for gitea-admin/payloads", 0, nil},
		{"token of another organization", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + credentials.DeriveToken([]byte(hookKey), mustScope(credentials.OrganizationScope("gitea")))}}, nil, nil, 403, "", 0, nil},
		{"token under another hook key", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + credentials.DeriveToken([]byte(webhookKey), mustScope(credentials.RepositoryScope(pushedRepo)))}}, nil, nil, 401, "unauthorized", 0, nil},
		{"the hook key itself as a bearer", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + hookKey}}, nil, nil, 401, "unauthorized", 0, nil},
		{"the webhook key as a bearer", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + webhookKey}}, nil, nil, 401, "unauthorized", 0, nil},
		{"the platform token on /hook", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + platformKey}}, nil, nil, 401, "unauthorized", 0, nil},
		{"signed with the hook key", hookRequest{ct: "application/json", body: push, headers: map[string]string{"X-Gitea-Signature": hmacHex(hookKey, push)}}, nil, nil, 401, "unauthorized", 0, nil},
		{"basic auth", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Basic " + secret}}, nil, nil, 401, "unauthorized", 0, nil},
		{"bearer and a bad signature", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer " + secret, "X-Gitea-Signature": "00"}}, requested, nil, 202, "accepted", 1, nil},
		{"full_name of another repository than its URLs", hookRequest{ct: "application/json", body: bytes.Replace(push, []byte(`"full_name": "gitea-admin/payloads"`), []byte(`"full_name": "gitea-admin/other"`), 1), headers: map[string]string{"X-Gitea-Signature": sign(bytes.Replace(push, []byte(`"full_name": "gitea-admin/payloads"`), []byte(`"full_name": "gitea-admin/other"`), 1))}}, nil, nil, 400, "", 0, nil},
		{"before not a commit id", hookRequest{ct: "application/json", body: bytes.Replace(push, []byte(`"before": "`), []byte(`"before": "xyz`), 1), headers: bearer}, nil, nil, 400, "malformed payload: before is not a commit id", 0, nil},
		{"before of 100 KiB of zeros", hookRequest{ct: "application/json", body: bytes.Replace(push, []byte(`"before": "`), []byte(`"before": "`+strings.Repeat("0", 100<<10)), 1), headers: bearer}, nil, nil, 400, "malformed payload: before is not a commit id", 0, nil},
		{"after of 100 KiB of zeros", hookRequest{ct: "application/json", body: bytes.Replace(push, []byte(`"after": "0d81d02ec37935798c915e905529535b4a9c82f5"`), []byte(`"after": "`+strings.Repeat("0", 100<<10)+`"`), 1), headers: bearer}, nil, nil, 400, "malformed payload: after is not a commit id", 0, nil},
		{"no credentials", hookRequest{ct: "application/json", body: push}, nil, nil, 401, "unauthorized", 0, nil},
		{"wrong bearer", hookRequest{ct: "application/json", body: push, headers: map[string]string{"Authorization": "Bearer nope"}}, nil, nil, 401, "unauthorized", 0, nil},
		{"token in the query string", hookRequest{path: "/hook?token=" + secret, ct: "application/json", body: push}, nil, nil, 401, "unauthorized", 0, nil},
		{"signature of another body", hookRequest{ct: "application/json", body: push, headers: map[string]string{"X-Gitea-Signature": sign(form)}}, nil, nil, 401, "unauthorized", 0, nil},
		{"unauthenticated bad payload", hookRequest{ct: "application/json", body: []byte("{"), headers: nil}, nil, nil, 401, "unauthorized", 0, nil},
		{"malformed json", hookRequest{ct: "application/json", body: []byte(`{"ref":`), headers: bearer}, nil, nil, 400, "malformed payload: truncated JSON", 0, nil},
		{"missing repository", hookRequest{ct: "application/json", body: []byte(`{"ref":"refs/heads/main","after":"0d81d02ec37935798c915e905529535b4a9c82f5"}`), headers: bearer}, nil, nil, 400, "malformed payload: repository is missing", 0, nil},
		{"wrong type", hookRequest{ct: "application/json", body: []byte(`{"ref":["refs/heads/main"]}`), headers: bearer}, nil, nil, 400, "malformed payload: ref must be string, not array", 0, nil},
		{"text/plain", hookRequest{ct: "text/plain", body: push, headers: bearer}, nil, nil, 415, "", 0, nil},
		{"too large", hookRequest{ct: "application/json", body: bytes.Repeat([]byte(" "), maxBodyBytes+1), headers: bearer}, nil, nil, 413, "request body over 3 MiB", 0, nil},
		{"GET", hookRequest{method: http.MethodGet, headers: bearer}, nil, nil, 405, "Method Not Allowed", 0, nil},
		{"PUT", hookRequest{method: http.MethodPut, ct: "application/json", body: push, headers: bearer}, nil, nil, 405, "Method Not Allowed", 0, nil},
		{"unknown path", hookRequest{path: "/hooks", ct: "application/json", body: push, headers: bearer}, nil, nil, 404, "Not Found", 0, nil},
		{"kubernetes unavailable", hookRequest{ct: "application/json", body: push, headers: bearer}, nil, fmt.Errorf("%w: cluster local: connection refused", cluster.ErrUnavailable), 503, "kubernetes api unavailable, retry later", 1, map[string]string{"Retry-After": "10"}},
		{"unexpected error", hookRequest{ct: "application/json", body: push, headers: bearer}, nil, errors.New("boom with detail"), 500, "internal error", 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			stub := &stubRequester{out: tt.out, err: tt.err}
			srv := httptest.NewServer(newServer(stub, &logs).HookHandler())
			defer srv.Close()
			method, path := tt.req.method, tt.req.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/hook"
			}
			req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+path, bytes.NewReader(tt.req.body))
			if tt.req.ct != "" {
				req.Header.Set("Content-Type", tt.req.ct)
			}
			req.Header.Set("X-Gitea-Delivery", "delivery-1")
			for k, v := range tt.req.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("answer is not JSON: %v", err)
			}
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.code, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content type %q", ct)
			}
			got, _ := body["result"].(string)
			if tt.code >= 400 {
				got, _ = body["error"].(string)
			}
			if tt.result != "" && got != tt.result {
				t.Fatalf("answer %v, want %q", body, tt.result)
			}
			for k, v := range tt.headers {
				if resp.Header.Get(k) != v {
					t.Fatalf("header %s = %q, want %q", k, resp.Header.Get(k), v)
				}
			}
			if len(stub.calls) != tt.calls {
				t.Fatalf("domain called %d times, want %d", len(stub.calls), tt.calls)
			}
			if tt.calls > 0 && tt.code != 500 {
				p := stub.calls[0]
				if p.Repository != "gitea-admin/payloads" || p.Delivery != "delivery-1" || len(p.URLs) != 3 || p.SHA != "0d81d02ec37935798c915e905529535b4a9c82f5" {
					t.Fatalf("push %+v", p)
				}
			}
			if tt.code == 202 && body["delivery"] != "delivery-1" {
				t.Fatalf("answer without delivery: %v", body)
			}
			for _, leak := range []string{secret, "boom with detail"} {
				if strings.Contains(logs.String(), secret) || (leak == secret && strings.Contains(fmt.Sprint(body), leak)) ||
					(leak != secret && strings.Contains(fmt.Sprint(body), leak)) {
					t.Fatalf("%q leaked: logs %s body %v", leak, logs.String(), body)
				}
			}
			if !strings.Contains(logs.String(), `"delivery"="delivery-1"`) {
				t.Fatalf("log lines lack the delivery:\n%s", logs.String())
			}
		})
	}
}

func TestHookFormWithBearer(t *testing.T) {
	// Actions may post Gitea's form encoding too; the bearer covers it.
	var logs bytes.Buffer
	stub := &stubRequester{out: []api.Outcome{{Result: api.ResultRequested}}}
	srv := httptest.NewServer(newServer(stub, &logs).HookHandler())
	defer srv.Close()
	form := url.Values{"payload": {string(payload(t, "gitea-push-tag.json"))}}.Encode()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/hook", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 || len(stub.calls) != 1 || stub.calls[0].Ref != "refs/tags/v1.0.0" {
		t.Fatalf("status %d, calls %+v", resp.StatusCode, stub.calls)
	}
	if !validDelivery(stub.calls[0].Delivery) {
		t.Fatalf("no delivery id generated: %q", stub.calls[0].Delivery)
	}
}
