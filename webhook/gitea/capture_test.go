package gitea

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

var capture = flag.Bool("capture", false, "capture push payloads from a real Gitea into testdata/")

// TestCapturePayloads records what a real Gitea sends for a branch push, a tag push and a
// branch deletion, as JSON and as form, into testdata/gitea-*. Run with -capture.
func TestCapturePayloads(t *testing.T) {
	if !*capture {
		t.Skip("run with -capture to refresh testdata/gitea-*")
	}
	ctx := t.Context()
	g := testenv.NewGitea(t)
	repo, err := g.CreateRepo(ctx, "payloads")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		got  = map[string][]byte{}
		hdrs = map[string]http.Header{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ref struct {
			Ref   string `json:"ref"`
			After string `json:"after"`
		}
		ct, raw := "json", body
		if r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" {
			form, _ := url.ParseQuery(string(body))
			ct, raw = "form", []byte(form.Get("payload"))
		}
		_ = json.Unmarshal(raw, &ref)
		// Gitea sends a push event for branch and tag pushes, and separate create and
		// delete events (not a push with a zero "after") for new and deleted references.
		kind := r.Header.Get("X-Gitea-Event")
		if kind == "push" {
			kind = "push-branch"
			if strings.HasPrefix(ref.Ref, "refs/tags/") {
				kind = "push-tag"
			}
		}
		t.Logf("delivery: %s %s ref=%s", kind, ct, ref.Ref)
		mu.Lock()
		got[kind+"."+ct] = body
		hdrs[kind+"."+ct] = r.Header.Clone()
		mu.Unlock()
	}))
	defer srv.Close()
	for _, ct := range []string{"json", "form"} {
		if _, err := repo.AddHook(ctx, testenv.Hook{URL: srv.URL + "/hook", Secret: "capture-secret", ContentType: ct,
			Events: []string{"push", "create", "delete"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := repo.WriteFile("app.yaml", "a: 1\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	for _, step := range [][]string{{"main"}, {"main:refs/heads/feature"}, {"refs/tags/v1.0.0"}, {":refs/heads/feature"}} {
		if step[0] == "refs/tags/v1.0.0" {
			if err := repo.Tag(ctx, "v1.0.0"); err != nil {
				t.Fatal(err)
			}
		}
		if err := repo.Push(ctx, step...); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 8 && time.Since(start) > 3*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("captured %d of 8 payloads", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, body := range got {
		if err := os.WriteFile(filepath.Join("testdata", "gitea-"+name), body, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes, headers %v", name, len(body), headerNames(hdrs[name]))
	}
	readme := fmt.Sprintf(`# Captured Gitea payloads

gitea-*.json and gitea-*.form are request bodies a real Gitea %s sent to a native
repository webhook (content type json and form): gitea-push-branch and gitea-push-tag
(X-Gitea-Event: push), gitea-create (a new branch or tag; X-Gitea-Event: create) and
gitea-delete (a deleted branch; X-Gitea-Event: delete: Gitea sends no push event for a
deletion). Regenerate them with:

    go test ./webhook/gitea -run TestCapturePayloads -capture

The delivery headers seen: %v
`, g.Version, headerNames(hdrs["push-branch.json"]))
	if err := os.WriteFile(filepath.Join("testdata", "README.md"), []byte(readme), 0o644); err != nil {
		t.Fatal(err)
	}
}

func headerNames(h http.Header) []string {
	var out []string
	for k := range h {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
