package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// targetPost sends the short form, POST /hook/<path> with no body and only the Bearer token
// (as `curl -X POST -H "Authorization: Bearer ..."` does), and returns the answer.
func targetPost(t *testing.T, path, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e2e.hookURL+"/hook/"+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// The short form against the real binary, Gitea and Flux: the default branch, a repeat, a
// branch and pinned commit waited for, an annotated tag by name, and what Gitea does not
// have. Each gets the answer a push event of the same commit would.
func TestShortFormOnRealGitea(t *testing.T) {
	integration(t)
	a := newApp(t, "short-"+randomSuffix(), "main")
	ctx := t.Context()
	token := a.token()
	type answer struct {
		Repository, Ref, SHA, Result, Reason, Error string
		Targets                                     []struct{ Kind, Result string }
	}
	decode := func(b []byte) answer {
		t.Helper()
		var out answer
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("answer is not JSON: %s", b)
		}
		return out
	}

	// The default branch, as the platform's one-liner names it: statuses on its head.
	first := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "short-1"), "short 1")
	resp, b := targetPost(t, a.repo.FullName, token)
	got := decode(b)
	if resp.StatusCode != http.StatusAccepted || got.Result != "accepted" || got.Repository != a.repo.FullName ||
		got.Ref != "refs/heads/main" || got.SHA != first || len(got.Targets) != 2 {
		t.Fatalf("the default branch: %d %s", resp.StatusCode, b)
	}
	a.waitFinal(t, first, "GitRepository", "success")
	a.waitFinal(t, first, "Kustomization", "success")
	if v := configMapValue(t, a.name); v != "short-1" {
		t.Fatalf("ConfigMap value %q", v)
	}
	// Its repeat is absorbed: nothing patched again, no second pending status.
	resp, b = targetPost(t, a.repo.FullName, token)
	if got := decode(b); resp.StatusCode != http.StatusAccepted || got.SHA != first || got.Targets[0].Result != "already-requested" {
		t.Fatalf("the repeat: %d %s", resp.StatusCode, b)
	}

	// A branch by name with the commit pinned, waited for: the stream ends with the summary.
	second := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "short-2"), "short 2")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e2e.hookURL+"/hook/"+a.repo.FullName+"/main?sha="+second+"&wait=true&timeout=3m", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	wresp, err := (&http.Client{Timeout: 4 * time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := io.ReadAll(wresp.Body)
	wresp.Body.Close()
	if err != nil || wresp.StatusCode != http.StatusOK || !bytes.HasPrefix(lines, []byte("accepted: "+a.repo.FullName+" refs/heads/main "+second[:12])) ||
		!bytes.Contains(lines, []byte("summary: 2 success, 0 failure")) {
		t.Fatalf("waiting: %d %v\n%s", wresp.StatusCode, err, lines)
	}
	a.waitFinal(t, second, "Kustomization", "success")

	// An annotated tag by name: its commit, which no Flux object of the app follows.
	if _, err := a.repo.AnnotatedTag(ctx, "v1.0.0", "release"); err != nil {
		t.Fatal(err)
	}
	if err := a.repo.PushTag(ctx, "v1.0.0"); err != nil {
		t.Fatal(err)
	}
	resp, b = targetPost(t, a.repo.FullName+"/v1.0.0", token)
	if got := decode(b); resp.StatusCode != http.StatusOK || got.Result != "no-match" || got.Ref != "refs/tags/v1.0.0" || got.SHA != second {
		t.Fatalf("the tag: %d %s", resp.StatusCode, b)
	}

	// What Gitea does not have, and what the token does not cover.
	owner, _, _ := strings.Cut(a.repo.FullName, "/")
	for _, tc := range []struct {
		path, token string
		code        int
		errHas      string
	}{
		{a.repo.FullName + "/no-such-branch", token, http.StatusNotFound, a.repo.FullName + " has no branch or tag no-such-branch"},
		{a.repo.FullName + "/refs/heads/no-such-branch", token, http.StatusNotFound, "has no reference refs/heads/no-such-branch"},
		{owner + "/no-such-repository", tokenFor(owner + "/no-such-repository"), http.StatusNotFound, "gitea has no repository " + owner + "/no-such-repository"},
		{owner + "/no-such-repository", token, http.StatusForbidden, "may not push for " + owner + "/no-such-repository"},
		{a.repo.FullName + "?sha=" + strings.Repeat("e", 40), token, http.StatusForbidden, "has no commit"},
	} {
		resp, b := targetPost(t, tc.path, tc.token)
		if got := decode(b); resp.StatusCode != tc.code || !strings.Contains(got.Error, tc.errHas) {
			t.Errorf("%s: %d %s, want %d saying %q", tc.path, resp.StatusCode, b, tc.code, tc.errHas)
		}
	}
	// The access log names the route, never the path.
	logged := false
	sc := bufio.NewScanner(bytes.NewReader(mustRead(t, e2e.service.Log)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.Contains(line, []byte("no-such-branch")) && bytes.Contains(line, []byte(`"msg":"request"`)) {
			t.Fatalf("the access log holds the path: %s", line)
		}
		logged = logged || (bytes.Contains(line, []byte(`"route":"/hook/*"`)) && bytes.Contains(line, []byte(`"status":404`)))
	}
	if !logged {
		t.Fatal("no access log line for /hook/* answered 404")
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
