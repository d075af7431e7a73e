package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// The commits of the fake Gitea: main's head (the testdata payloads' after), the commit of
// tag v1, and one main has moved on from.
const (
	mainHead = "0d81d02ec37935798c915e905529535b4a9c82f5"
	tagged   = "1111111111111111111111111111111111111111"
	earlier  = "2222222222222222222222222222222222222222"
)

// fakeGitea answers the intake as Gitea would for pushedRepo, and counts the calls.
type fakeGitea struct {
	mu    sync.Mutex
	calls int
	down  bool
}

func (f *fakeGitea) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeGitea) call() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return errors.New("dial tcp 10.0.0.1:3000: connection refused")
	}
	return nil
}

func (f *fakeGitea) Repository(_ context.Context, fullName string) (*webhook.Repository, error) {
	if err := f.call(); err != nil {
		return nil, err
	}
	if !strings.EqualFold(fullName, pushedRepo) {
		return nil, webhook.ErrNotFound
	}
	return &webhook.Repository{FullName: pushedRepo, DefaultBranch: "main", URLs: []string{"http://127.0.0.1:35585/gitea-admin/payloads.git",
		"root@127.0.0.1:gitea-admin/payloads.git", "http://127.0.0.1:35585/gitea-admin/payloads"}}, nil
}

func (f *fakeGitea) RefCommits(_ context.Context, _, ref string) ([]string, error) {
	if err := f.call(); err != nil {
		return nil, err
	}
	switch ref {
	case "refs/heads/main", "refs/heads/feature":
		return []string{mainHead}, nil
	case "refs/tags/v1":
		return []string{tagged}, nil
	}
	return nil, webhook.ErrNotFound
}

func (f *fakeGitea) CommitExists(_ context.Context, _, sha string) (bool, error) {
	return sha == mainHead || sha == tagged || sha == earlier, f.call()
}

func (f *fakeGitea) RecentCommits(context.Context, string, string, int) ([]string, error) {
	return []string{mainHead, earlier}, f.call()
}

func (f *fakeGitea) Artifact(context.Context, string, string) (*webhook.Artifact, error) {
	return nil, webhook.ErrNotFound
}

// newTargetServer is newServer whose intake asks forge (none when nil).
func newTargetServer(req requester, forge webhook.Forge, logs *bytes.Buffer) *Server {
	s := newServer(req, logs)
	in := &webhook.Intake{Requester: req}
	if forge != nil {
		in.Forge = forge
	}
	s.Intake = in
	return s
}

// POST /hook/<owner>/<repo>[/<ref>][?sha=] with no body: the push Gitea says the reference is
// at, accepted as a push event of it would be; and what the path may not be.
func TestHookTarget(t *testing.T) {
	push := payload(t, "gitea-push-branch.json")
	requested := []api.Outcome{{Target: api.Target{Cluster: "local", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}, Result: api.ResultRequested}}
	bearer := map[string]string{"Authorization": "Bearer " + secret}
	shared := map[string]string{"Authorization": "Bearer " + sharedValue}
	other := map[string]string{"Authorization": "Bearer " + credentials.DeriveToken([]byte(hookKey), mustScope(credentials.RepositoryScope("gitea-admin/other")))}
	base := "/hook/" + pushedRepo
	tests := []struct {
		name      string
		path, ct  string
		body      []byte
		headers   map[string]string
		noForge   bool
		giteaDown bool
		code      int
		has       string // in the result, or the error for error answers
		ref, sha  string // of the requested push
		calls     int    // to Gitea
	}{
		{name: "the platform's one-liner: the default branch", path: base, headers: bearer, code: 202, has: "accepted", ref: "refs/heads/main", sha: mainHead, calls: 2},
		{name: "a branch", path: base + "/feature", headers: bearer, code: 202, has: "accepted", ref: "refs/heads/feature", sha: mainHead, calls: 2},
		{name: "a tag, tried as a branch first", path: base + "/v1", headers: bearer, code: 202, has: "accepted", ref: "refs/tags/v1", sha: tagged, calls: 3},
		{name: "a full reference", path: base + "/refs/tags/v1", headers: bearer, code: 202, has: "accepted", ref: "refs/tags/v1", sha: tagged, calls: 2},
		{name: "the owner's spelling in another case", path: "/hook/Gitea-Admin/Payloads", headers: bearer, code: 202, has: "accepted", ref: "refs/heads/main", sha: mainHead, calls: 2},
		{name: "a content type but no body", path: base, ct: "application/json", headers: bearer, code: 202, has: "accepted", ref: "refs/heads/main", sha: mainHead, calls: 2},
		{name: "a body of white space is none", path: base, body: []byte(" \r\n"), headers: bearer, code: 202, has: "accepted", ref: "refs/heads/main", sha: mainHead, calls: 2},
		{name: "the pinned commit", path: base + "/main?sha=" + mainHead, headers: bearer, code: 202, has: "accepted", ref: "refs/heads/main", sha: mainHead, calls: 2},
		{name: "a pinned commit main moved on from: superseded", path: base + "?sha=" + earlier, headers: bearer, code: 202, has: "accepted", ref: "refs/heads/main", sha: earlier, calls: 4},
		{name: "a pinned commit main never had", path: base + "?sha=" + tagged, headers: bearer, code: 403, has: "is not among the last", calls: 6},
		{name: "the shared token", path: base, headers: shared, code: 202, has: "accepted", ref: "refs/heads/main", sha: mainHead, calls: 2},
		{name: "a token of another repository: Gitea not asked", path: base, headers: other, code: 403, has: "may not push for gitea-admin/payloads"},
		{name: "another repository than the token's: Gitea not asked", path: "/hook/gitea-admin/other", headers: bearer, code: 403, has: "may not push for gitea-admin/other"},
		{name: "no such repository", path: "/hook/gitea-admin/nothing", headers: shared, code: 404, has: "gitea has no repository gitea-admin/nothing", calls: 1},
		{name: "no such branch or tag", path: base + "/nope", headers: bearer, code: 404, has: "gitea-admin/payloads has no branch or tag nope", calls: 3},
		{name: "no such reference", path: base + "/refs/heads/nope", headers: bearer, code: 404, has: "has no reference refs/heads/nope", calls: 2},
		{name: "gitea unreachable", path: base, headers: bearer, giteaDown: true, code: 503, has: "gitea unavailable", calls: 1},
		{name: "no gitea configured", path: base, headers: bearer, noForge: true, code: 400, has: "POST /hook with the push event as the body"},
		{name: "sha given twice", path: base + "?sha=" + mainHead + "&sha=" + mainHead, headers: bearer, code: 400, has: "sha given more than once"},
		{name: "sha not a commit", path: base + "?sha=HEAD", headers: bearer, code: 400, has: "sha is not a commit id"},
		{name: "sha in upper case", path: base + "?sha=" + strings.ToUpper(mainHead), headers: bearer, code: 400, has: "sha is not a commit id"},
		{name: "no repository", path: "/hook/gitea-admin", headers: bearer, code: 400, has: "no repository"},
		{name: "an escaped slash", path: "/hook/gitea-admin%2Fpayloads/main", headers: bearer, code: 400, has: "percent-escaped"},
		{name: "an escaped slash in the reference", path: base + "/refs%2Fheads%2Fmain", headers: bearer, code: 400, has: "percent-escaped"},
		{name: "a traversal", path: base + "/../../api/v1/reconcile", headers: bearer, code: 400, has: "dot segment"},
		{name: "an escaped traversal", path: base + "/%2e%2e/x", headers: bearer, code: 400, has: "percent-escaped"},
		{name: "an empty segment", path: "/hook/gitea-admin//payloads", headers: bearer, code: 400, has: "empty path segment"},
		{name: "a token in the path", path: "/hook/" + secret, headers: bearer, code: 400, has: "holds a flux-webhook token"},
		{name: "a signature over the empty body", path: base, headers: map[string]string{"X-Gitea-Signature": sign(nil)}, code: 401, has: "unauthorized"},
		{name: "no credentials", path: base, code: 401, has: "unauthorized"},

		// A body: the push event, which the path must agree with.
		{name: "the push event on its repository's path", path: base, ct: "application/json", body: push, headers: bearer, code: 202, has: "accepted", ref: "refs/heads/feature", sha: mainHead, calls: 2},
		{name: "the push event on its reference's path", path: base + "/feature?sha=" + mainHead, ct: "application/json", body: push, headers: bearer, code: 202, has: "accepted", ref: "refs/heads/feature", sha: mainHead, calls: 2},
		{name: "the push event on another repository's path", path: "/hook/gitea-admin/other", ct: "application/json", body: push, headers: shared, code: 400, has: "the path names gitea-admin/other, the payload's repository is gitea-admin/payloads"},
		{name: "the push event on another reference's path", path: base + "/main", ct: "application/json", body: push, headers: bearer, code: 400, has: "the path names the reference main"},
		{name: "the push event with another sha", path: "/hook?sha=" + earlier, ct: "application/json", body: push, headers: bearer, code: 400, has: "the payload's commit is " + mainHead},

		// Plain /hook without a push: say what to send.
		{name: "an empty body on /hook", path: "/hook", headers: bearer, code: 400, has: "empty body: send POST /hook/<owner>/<repo>"},
		{name: "an empty body on /hook/", path: "/hook/", headers: bearer, code: 400, has: "empty body: send POST /hook/<owner>/<repo>"},
		{name: "a body without a content type", path: "/hook", body: push, headers: bearer, code: 400, has: "without Content-Type: send POST /hook/<owner>/<repo>"},
		{name: "a body of another content type", path: "/hook", ct: "text/plain", body: push, headers: bearer, code: 415, has: "want application/json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			stub := &stubRequester{out: requested}
			forge := &fakeGitea{down: tt.giteaDown}
			var f webhook.Forge = forge
			if tt.noForge {
				f = nil
			}
			srv := httptest.NewServer(newTargetServer(stub, f, &logs).HookHandler())
			defer srv.Close()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+tt.path, bytes.NewReader(tt.body))
			if tt.body == nil {
				req.Body = nil // as curl -X POST sends it: no body, no Content-Length
			}
			if tt.ct != "" {
				req.Header.Set("Content-Type", tt.ct)
			}
			for k, v := range tt.headers {
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
			got, _ := body["result"].(string)
			if tt.code >= 400 {
				got, _ = body["error"].(string)
			}
			if resp.StatusCode != tt.code || !strings.Contains(got, tt.has) {
				t.Fatalf("%d %v, want %d saying %q", resp.StatusCode, body, tt.code, tt.has)
			}
			if tt.code == 503 && resp.Header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
			if n := forge.count(); n != tt.calls {
				t.Fatalf("%d calls to Gitea, want %d", n, tt.calls)
			}
			if want := tt.ref != ""; want != (len(stub.calls) == 1) {
				t.Fatalf("requested %+v", stub.calls)
			}
			if tt.ref != "" {
				p := stub.calls[0]
				if p.Repository != pushedRepo || p.Ref != tt.ref || p.SHA != tt.sha || len(p.URLs) != 3 || p.Delivery == "" {
					t.Fatalf("requested %+v, want %s at %s", p, tt.ref, tt.sha)
				}
				if body["repository"] != pushedRepo || body["ref"] != tt.ref || body["sha"] != tt.sha || body["delivery"] != p.Delivery {
					t.Fatalf("answer %v", body)
				}
			}
			if strings.Contains(logs.String(), secret) || strings.Contains(fmt.Sprint(body), secret) {
				t.Fatalf("the token leaked: logs %s answer %v", logs.String(), body)
			}
			if !strings.Contains(logs.String(), `"route"="/hook/*"`) && strings.HasPrefix(tt.path, "/hook/") {
				t.Fatalf("the access log does not name the route:\n%s", logs.String())
			}
		})
	}
}

// The short form waits like the long one, and its repeat (same delivery id, path and query)
// gets the earlier answer without Gitea or Kubernetes being asked again.
func TestHookTargetWaitsAndRepeats(t *testing.T) {
	var logs bytes.Buffer
	stub := &stubRequester{out: []api.Outcome{{Result: api.ResultRequested}}}
	forge := &fakeGitea{}
	srv := httptest.NewServer(newTargetServer(stub, forge, &logs).HookHandler())
	defer srv.Close()
	post := func(path, delivery string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		if delivery != "" {
			req.Header.Set("X-Gitea-Delivery", delivery)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := post("/hook/"+pushedRepo+"?wait=true", "")
	first, _, _ := bufio.NewReader(strings.NewReader(body)).ReadLine()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(first), "accepted: gitea-admin/payloads refs/heads/main 0d81d02ec379") ||
		!strings.Contains(body, "summary: 0 success") {
		t.Fatalf("waiting: %d %q", resp.StatusCode, body)
	}
	resp, body = post("/hook/"+pushedRepo+"/main", "run-7")
	calls := forge.count()
	again, bodyAgain := post("/hook/"+pushedRepo+"/main", "run-7")
	if resp.StatusCode != 202 || again.StatusCode != 202 || body != bodyAgain || again.Header.Get("X-Delivery-Replayed") != "true" || forge.count() != calls {
		t.Fatalf("repeat: %d %s, then %d %s (replayed %q), %d Gitea calls after %d", resp.StatusCode, body, again.StatusCode, bodyAgain,
			again.Header.Get("X-Delivery-Replayed"), forge.count(), calls)
	}
	// The same delivery id with another commit pinned is another request.
	if other, _ := post("/hook/"+pushedRepo+"/main?sha="+earlier, "run-7"); other.Header.Get("X-Delivery-Replayed") != "" {
		t.Fatal("another sha answered as a repeat")
	}
	if len(stub.calls) != 3 {
		t.Fatalf("%d requests, want 3 (the repeat absorbed)", len(stub.calls))
	}
}

// The short form over arbitrary paths and queries: nothing is a 5xx, nothing reaches the
// domain but a target of the token's repository, and no answer or log holds the token.
func FuzzHookTarget(f *testing.F) {
	for _, p := range []string{pushedRepo, pushedRepo + "/main", pushedRepo + "/refs/tags/v1", "gitea-admin%2Fpayloads", pushedRepo + "/%2e%2e",
		"../api", secret, "gitea-admin/other", pushedRepo + "/a%23b", pushedRepo + "/" + secret} {
		f.Add(p, "")
		f.Add(p, "sha="+mainHead)
	}
	var logs bytes.Buffer
	req := &countingRequester{}
	forge := &fakeGitea{}
	s := &Server{Keys: testKeys(false), Forge: gitea.Events{}, Intake: &webhook.Intake{Requester: req, Forge: forge}, Awaiter: req,
		Log: funcr.New(func(prefix, args string) { fmt.Fprintln(&logs, prefix, args) }, funcr.Options{})}
	h := s.HookHandler()
	f.Fuzz(func(t *testing.T, raw, query string) {
		logs.Reset()
		before := req.calls.Load()
		r := httptest.NewRequest(http.MethodPost, "/hook/x", nil)
		r.RequestURI = "/hook/" + raw // as sent
		r.URL.RawQuery = query
		r.Header.Set("Authorization", "Bearer "+secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%q: %d %s", raw, w.Code, w.Body)
		}
		if req.calls.Load() != before {
			if w.Code != http.StatusAccepted && w.Code != http.StatusOK {
				t.Fatalf("%q: domain called, answer %d", raw, w.Code)
			}
			if t2, err := (gitea.Events{}).Target(targetPath(r), r.URL.Query()); err != nil || !strings.EqualFold(t2.Repository, pushedRepo) {
				t.Fatalf("%q: requested for %+v %v", raw, t2, err)
			}
		}
		if bytes.Contains(w.Body.Bytes(), []byte(secret)) || strings.Contains(logs.String(), secret) {
			t.Fatalf("%q: token in the answer: %s", raw, w.Body)
		}
		var m map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatalf("%q: answer %d is not JSON: %q", raw, w.Code, w.Body)
		}
	})
}
