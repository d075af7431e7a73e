package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
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
		{"version-extra-arg", []string{"version", "now"}, nil, 2},
		{"bad-region", []string{"serve", "--hook-key-secret", "ns/name", "--region", "EU Central"}, nil, 2},
		{"platform-token-is-hook-token", []string{"serve", "--hook-key-secret", "ns/name", "--platform-token-secret", "ns/name"}, nil, 2},
		{"reconcile-help", []string{"reconcile", "--help"}, nil, 0},
		{"bad-git-url-alias", []string{"serve", "--hook-key-secret", "ns/name", "--git-url-alias", "https://gitea.example.com"}, nil, 2},
		{"reconcile-no-server", []string{"reconcile", "--token-file", "/dev/null"}, nil, 2},
		{"reconcile-no-token", []string{"reconcile", "--server", "https://fw.example.com"}, nil, 2},
		{"reconcile-bad-server", []string{"reconcile", "--server", "fw.example.com", "--token-file", "/dev/null"}, nil, 2},
		{"reconcile-bad-output", []string{"reconcile", "--server", "https://fw.example.com", "--token-file", "/dev/null", "-o", "yaml"}, nil, 2},
		{"reconcile-missing-token-file", []string{"reconcile", "--server", "https://fw.example.com", "--token-file", "/nonexistent"}, nil, 1},
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
