package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The command line is an interface people script against: its help, errors and exit codes
// are kept in golden files (go test ./cmd/flux-webhook -run TestCLI -update rewrites them).
func TestCLI(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
	}{
		{"help", []string{"--help"}, nil, 0},
		{"no-args", nil, nil, 0},
		{"serve-help", []string{"serve", "--help"}, nil, 0},
		{"version", []string{"version"}, nil, 0},
		{"unknown-command", []string{"deploy"}, nil, 2},
		{"unknown-flag", []string{"serve", "--bogus"}, nil, 2},
		{"missing-hook-credentials", []string{"serve"}, nil, 2},
		{"bad-hook-key-secret", []string{"serve", "--hook-key-secret", "just-a-name"}, nil, 2},
		{"token-help", []string{"token", "--help"}, nil, 0},
		{"token-no-scope", []string{"token", "--hook-key-file", "/dev/null"}, nil, 2},
		{"token-both-scopes", []string{"token", "--hook-key-file", "/dev/null", "--repository", "a/b", "--organization", "a"}, nil, 2},
		{"token-bad-repository", []string{"token", "--hook-key-file", "/dev/null", "--repository", "a/../b"}, nil, 2},
		{"token-no-key", []string{"token", "--repository", "acme/app"}, nil, 2},
		{"token-weak-key", []string{"token", "--hook-key-file", "testdata/weak-key.txt", "--repository", "acme/app"}, nil, 1},
		{"token-repository", []string{"token", "--hook-key-file", "testdata/hook-key.txt", "--repository", "Acme/App"}, nil, 0},
		{"token-organization", []string{"token", "--hook-key-file", "testdata/hook-key.txt", "--organization", "acme"}, nil, 0},
		{"webhook-key-is-hook-key", []string{"serve", "--hook-key-secret", "ns/name", "--webhook-key-secret", "ns/name"}, nil, 2},
		{"reconcile-http-server", []string{"reconcile", "--server", "http://fw.example.com", "--token-file", "/dev/null"}, nil, 2},
		{"bad-duration", []string{"serve", "--hook-key-secret", "ns/name", "--result-timeout", "soon"}, nil, 2},
		{"negative-duration", []string{"serve", "--hook-key-secret", "ns/name", "--result-timeout", "-1m"}, nil, 2},
		{"bad-cluster-name", []string{"serve", "--hook-key-secret", "ns/name", "--cluster-name", "EU_1"}, nil, 2},
		{"bad-default-repositories", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--cluster-default-repositories", "acme/*,,{cluster}"}, nil, 2},
		{"gitea-url-without-token", []string{"serve", "--hook-key-secret", "ns/name", "--gitea-url", "https://gitea.example.com"}, nil, 2},
		{"bad-status-target-url", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--gitea-url", "https://gitea.example.com", "--gitea-token-secret", "ns/g", "--status-target-url", "https://grafana.example.com/d/flux?var-app={app}"}, nil, 2},
		{"relative-status-target-url", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--gitea-url", "https://gitea.example.com", "--gitea-token-secret", "ns/g", "--status-target-url", "/{repository}/commit/{commit}"}, nil, 2},
		{"status-target-url-without-gitea", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--status-target-url", "https://grafana.example.com/d/flux"}, nil, 2},
		{"bad-gitea-url", []string{"serve", "--hook-key-secret", "ns/name", "--gitea-url", "gitea.example.com", "--gitea-token-secret", "ns/g"}, nil, 2},
		{"bad-listen", []string{"serve", "--hook-key-secret", "ns/name", "--listen", "8080"}, nil, 2},
		{"bad-log-level", []string{"serve", "--hook-key-secret", "ns/name", "--log-level", "loud"}, nil, 2},
		{"env-invalid", []string{"serve"}, map[string]string{"FLUX_WEBHOOK_TOKEN_GRACE": "forever"}, 2},
		{"env-sets-flag", []string{"serve", "--cluster-name", "Bad"}, map[string]string{"FLUX_WEBHOOK_HOOK_KEY_SECRET": "ns/name"}, 2},
		{"no-kubeconfig", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--kubeconfig", "/nonexistent/kubeconfig"}, nil, 1},
		{"missing-record-key", []string{"serve", "--hook-key-secret", "ns/name"}, nil, 2},
		{"bad-insecure-kubeconfig", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--insecure-kubeconfig", "exec,everything"}, nil, 2},
		{"bad-trusted-proxies", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--trusted-proxies", "10.0.0.0/8,ingress-nginx"}, nil, 2},
		{"version-extra-arg", []string{"version", "now"}, nil, 2},
		{"bad-region", []string{"serve", "--hook-key-secret", "ns/name", "--region", "EU Central"}, nil, 2},
		{"platform-token-is-hook-token", []string{"serve", "--hook-key-secret", "ns/name", "--platform-token-secret", "ns/name"}, nil, 2},
		{"reconcile-help", []string{"reconcile", "--help"}, nil, 0},
		{"bad-git-url-alias", []string{"serve", "--hook-key-secret", "ns/name", "--git-url-alias", "https://gitea.example.com"}, nil, 2},
		{"reconcile-no-server", []string{"reconcile", "--token-file", "/dev/null"}, nil, 2},
		{"reconcile-no-token", []string{"reconcile", "--server", "https://fw.example.com"}, nil, 2},
		{"reconcile-bad-server", []string{"reconcile", "--server", "fw.example.com", "--token-file", "/dev/null"}, nil, 2},
		{"reconcile-bad-output", []string{"reconcile", "--server", "https://fw.example.com", "--token-file", "/dev/null", "-o", "xml"}, nil, 2},
		{"completion-help", []string{"completion", "--help"}, nil, 0},
		{"completion-no-shell", []string{"completion"}, nil, 2},
		{"completion-unknown-shell", []string{"completion", "tcsh"}, nil, 2},
		{"completion-two-shells", []string{"completion", "bash", "zsh"}, nil, 2},
		{"reconcile-missing-token-file", []string{"reconcile", "--server", "https://fw.example.com", "--token-file", "/nonexistent"}, nil, 1},
		{"enroll-help", []string{"enroll", "--help"}, nil, 0},
		{"enrollment-help", []string{"enrollment", "--help"}, nil, 0},
		{"enroll-no-scope", []string{"enroll", "--hook-key-file", "testdata/hook-key.txt", "--enroll-token-file", "testdata/hook-key.txt", "--url", "https://fw.example.com", "--gitea-url", "https://gitea.example.com"}, nil, 2},
		{"enroll-no-token", []string{"enroll", "--organization", "acme", "--hook-key-file", "testdata/hook-key.txt", "--url", "https://fw.example.com", "--gitea-url", "https://gitea.example.com"}, nil, 2},
		{"enroll-webhook-of-repository", []string{"enroll", "--repository", "acme/app", "--webhook", "--webhook-key-file", "x", "--hook-key-file", "testdata/hook-key.txt", "--enroll-token-file", "x", "--url", "https://fw.example.com", "--gitea-url", "https://gitea.example.com"}, nil, 2},
		{"enroll-bad-url", []string{"enroll", "--organization", "acme", "--hook-key-file", "testdata/hook-key.txt", "--enroll-token-file", "x", "--url", "fw.example.com/hook", "--gitea-url", "https://gitea.example.com"}, nil, 2},
		{"enroll-reserved-secret-name", []string{"enroll", "--organization", "acme", "--secret-name", "GITEA_TOKEN", "--hook-key-file", "testdata/hook-key.txt", "--enroll-token-file", "x", "--url", "https://fw.example.com", "--gitea-url", "https://gitea.example.com"}, nil, 2},
		{"enroll-same-token-as-key", []string{"enroll", "--organization", "acme", "--hook-key-file", "testdata/hook-key.txt", "--enroll-token-file", "testdata/hook-key.txt", "--url", "https://fw.example.com", "--gitea-url", "https://gitea.example.com"}, nil, 1},
		{"enrollment-bad-output", []string{"enrollment", "-o", "xml"}, nil, 2},
		{"serve-enroll-without-token", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--gitea-url", "https://gitea.example.com", "--gitea-token-secret", "ns/g", "--enroll-organization", "acme", "--enroll-url", "https://fw.example.com"}, nil, 2},
		{"serve-enroll-settings-without-scope", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--enroll-url", "https://fw.example.com"}, nil, 2},
		{"serve-enroll-bad-organization", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--gitea-url", "https://gitea.example.com", "--gitea-token-secret", "ns/g", "--enroll-organization", "acme/app"}, nil, 2},
		{"serve-enroll-token-is-gitea-token", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--gitea-url", "https://gitea.example.com", "--gitea-token-secret", "ns/g", "--enroll-organization", "acme", "--enroll-url", "https://fw.example.com", "--enroll-token-secret", "ns/g"}, nil, 2},
		{"serve-enroll-webhook-without-key", []string{"serve", "--hook-key-secret", "ns/name", "--record-key-secret", "ns/record", "--gitea-url", "https://gitea.example.com", "--gitea-token-secret", "ns/g", "--enroll-followed", "--enroll-url", "https://fw.example.com", "--enroll-token-secret", "ns/e", "--enroll-webhook"}, nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, &stdout, &stderr)
			got := fmt.Sprintf("$ flux-webhook %s\nexit %d\n--- stdout\n%s--- stderr\n%s", strings.Join(tt.args, " "), code,
				stdout.String(), stderr.String())
			got = strings.ReplaceAll(got, runtime.Version(), "GOVERSION")
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
			}
			if code != tt.code {
				t.Fatalf("exit %d, want %d", code, tt.code)
			}
			if code != 0 && strings.Count(stderr.String(), "\n") != 1 {
				t.Fatalf("an error is one line on stderr, got:\n%s", stderr.String())
			}
		})
	}
}

// completion writes each shell's script; the scripts ask flux-webhook itself (cobra's
// __complete) for commands, flags and the values of some flags.
func TestCompletion(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash":       "# bash completion V2 for flux-webhook",
		"zsh":        "#compdef flux-webhook",
		"fish":       "complete -c flux-webhook",
		"powershell": "Register-ArgumentCompleter",
	} {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), []string{"completion", shell}, &stdout, &stderr); code != 0 || stderr.Len() > 0 {
			t.Fatalf("completion %s: exit %d: %s", shell, code, stderr.String())
		}
		if !strings.Contains(stdout.String(), marker) {
			t.Errorf("completion %s lacks %q:\n%.300s", shell, marker, stdout.String())
		}
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", ""}, []string{"completion", "reconcile", "serve", "token", "version"}},
		{[]string{"__complete", "completion", ""}, shells},
		{[]string{"__complete", "reconcile", "--output", ""}, outputs},
		{[]string{"__complete", "reconcile", "-o", "y"}, []string{"yaml"}},
		{[]string{"__complete", "reconcile", "-"}, []string{"-n", "-l", "-o"}},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), tc.args, &stdout, &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, stderr.String())
		}
		var got []string
		for _, l := range strings.Split(stdout.String(), "\n") {
			if l != "" && !strings.HasPrefix(l, ":") {
				got = append(got, strings.SplitN(l, "\t", 2)[0])
			}
		}
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("%v: %q not offered: %q", tc.args, w, got)
			}
		}
	}
}

// reconcile against a stub of the platform API: -n and -l reach the selector, and the job's
// final state is one YAML (or JSON) document.
func TestReconcileOutput(t *testing.T) {
	created := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	target := api.Target{Cluster: "fra1", Kind: "Kustomization", Namespace: "apps", Name: "web"}
	job := func(done bool) api.JobStatus {
		st := api.JobStatus{Job: api.Job{ID: "0123456789abcdef", Token: created.Format(time.RFC3339Nano), Created: created,
			Deadline: created.Add(10 * time.Minute), Targets: []api.Target{target}, Requested: true},
			Progress: []api.Progress{{Target: target, State: api.StatePending}}, Counts: map[string]int{api.StatePending: 1}}
		if done {
			st.Progress[0].State, st.Progress[0].Description = api.StateSuccess, "applied main@sha1:0123456789ab"
			st.Counts, st.Done = map[string]int{api.StateSuccess: 1}, true
		}
		return st
	}
	var selectors []api.Selector
	var mu sync.Mutex
	gets := 0 // since the last POST: the first answer is the requested job, the next its end
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		st := job(gets > 0)
		gets++
		if len(selectors) > 0 {
			st.Selector = selectors[len(selectors)-1]
		}
		mu.Unlock()
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/api/v1/reconcile":
			var sel api.Selector
			if err := json.NewDecoder(r.Body).Decode(&sel); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mu.Lock()
			selectors, gets = append(selectors, sel), 0
			mu.Unlock()
			// Saved, not yet requested: the CLI asks again until it is.
			st = job(false)
			st.Selector, st.Requested, st.Targets, st.Progress, st.Counts = sel, false, nil, nil, nil
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodGet && r.URL.Path == "/api/v1/reconcile/"+st.ID:
		default:
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("platform-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"reconcile-yaml", []string{"-n", "apps", "-l", "tier=web", "--wait", "-o", "yaml"}},
		{"reconcile-json", []string{"--namespace", "apps", "--selector", "tier=web", "--wait", "--output", "json"}},
		{"reconcile-yaml-no-wait", []string{"-n", "apps,infra", "-l", "tier=web", "-o", "yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"reconcile", "--server", srv.URL, "--token-file", tokenFile}, tc.args...)
			code := run(t.Context(), args, &stdout, &stderr)
			got := fmt.Sprintf("$ flux-webhook reconcile --server <stub> --token-file <file> %s\nexit %d\n--- stdout\n%s--- stderr\n%s",
				strings.Join(tc.args, " "), code, stdout.String(), stderr.String())
			goldenFile(t, tc.name, got)
			mu.Lock()
			sel := selectors[len(selectors)-1]
			mu.Unlock()
			if len(sel.Namespaces) == 0 || sel.Namespaces[0] != "apps" || sel.LabelSelector != "tier=web" {
				t.Fatalf("selector sent: %+v", sel)
			}
			if code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// A job no replica requests (no leader) ends the CLI after --timeout, with an error that
// says so, instead of waiting for ever.
func TestReconcileNeverRequested(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := api.JobStatus{Job: api.Job{ID: "0123456789abcdef"}}
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusAccepted)
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("platform-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"reconcile", "--server", srv.URL, "--allow-http", "--token-file", tokenFile, "-n", "apps", "--timeout", "1s"}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "job not requested in 1s: job 0123456789abcdef is saved") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

// goldenFile compares got with testdata/<name>.golden (-update rewrites it).
func goldenFile(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
	}
}
