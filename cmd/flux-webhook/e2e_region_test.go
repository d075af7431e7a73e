package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// /hook?wait=true streams one line per Flux object as Flux answers; curl --fail-with-body
// exits 0 when all succeeded and non-zero when one failed (the stream ends without its
// terminating chunk).
func TestWaitModeWithCurl(t *testing.T) {
	integration(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed: it is what Actions steps use")
	}
	a := newApp(t, "wait-"+randomSuffix(), "main")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("Authorization: Bearer "+a.token()), 0o600); err != nil {
		t.Fatal(err)
	}
	curl := func(sha string, extra ...string) (string, int) {
		t.Helper()
		event := filepath.Join(t.TempDir(), "event.json")
		if err := os.WriteFile(event, a.pushEvent(sha), 0o600); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"--fail-with-body", "--silent", "--show-error", "--no-buffer",
			"-H", "@" + tokenFile, "-H", "Content-Type: application/json", "--data-binary", "@" + event}, extra...)
		args = append(args, e2e.hookURL+"/hook?wait=true&timeout=2m")
		out, err := exec.CommandContext(t.Context(), "curl", args...).CombinedOutput()
		e2e.answers.Add("curl "+e2e.hookURL+"/hook?wait=true", out) // for the secret sweep
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}

	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "waited"), "wait for me")
	out, code := curl(sha)
	t.Logf("curl, text:\n%s", out)
	if code != 0 {
		t.Fatalf("curl exited %d for a successful deploy:\n%s", code, out)
	}
	// Heartbeats (every 20 s while Flux is silent) come between the answers on a slow machine.
	lines := slices.DeleteFunc(strings.Split(strings.TrimSpace(out), "\n"), func(l string) bool { return strings.HasPrefix(l, "waiting: ") })
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "accepted: ") || !strings.HasSuffix(lines[3], ": OK") ||
		!strings.Contains(out, "success  "+a.context("GitRepository")) || !strings.Contains(out, "success  "+a.context("Kustomization")+"  applied main@sha1:"+sha[:12]) {
		t.Fatalf("stream:\n%s", out)
	}

	broken := a.commit(t, "deploy/broken.yaml", configMap("Bad_Name", "x"), "broken")
	out, code = curl(broken, "-H", "Accept: application/x-ndjson")
	t.Logf("curl, ndjson:\n%s (exit %d)", out, code)
	if code == 0 {
		t.Fatalf("curl exited 0 for a failed deploy:\n%s", out)
	}
	var events []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "{") {
			continue // curl's own error line
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not NDJSON: %q", sc.Text())
		}
		if m["event"] == "heartbeat" {
			continue
		}
		events = append(events, m)
	}
	if len(events) != 4 || events[0]["event"] != "accepted" || events[3]["event"] != "summary" || events[3]["ok"] != false {
		t.Fatalf("events %v", events)
	}
	var states []string
	for _, e := range events[1:3] {
		states = append(states, e["kind"].(string)+"="+e["state"].(string))
	}
	slices.Sort(states)
	if !slices.Equal(states, []string{"GitRepository=success", "Kustomization=failure"}) {
		t.Fatalf("states %v", states)
	}
}

// Platform teams reconcile a region across clusters registered by kubeconfig Secrets: the
// CLI prints the targets, a line per target as Flux answers and a summary, and exits 0 only
// if all succeeded. The hook token does not open the platform API, nor the platform token
// /hook.
func TestRegionReconcileCLI(t *testing.T) {
	integration(t)
	ctx := t.Context()
	east := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	// west runs a Flux without helm-controller: a registered cluster works with the kinds it has.
	west := testenv.NewKube(t, testenv.KubeOptions{CRDs: true, WithoutCRDs: []string{"helm.toolkit.fluxcd.io_helmreleases"}})
	// Before their API servers stop (cleanups run last first): unregister both clusters and
	// wait until flux-webhook has let go of them (an API server with a watcher attached takes
	// long to stop).
	t.Cleanup(func() {
		for _, name := range []string{"east", "west"} {
			_ = e2e.kube.Client.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clustersNS, Name: "cluster-" + name}})
		}
		waitFor(t, time.Minute, "clusters removed", func() bool {
			b, _ := os.ReadFile(e2e.service.Log)
			return bytes.Count(b, []byte(`"cluster removed"`)) >= 2
		})
	})
	for name, k := range map[string]*testenv.Kube{"east": east, "west": west} {
		b, err := os.ReadFile(k.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		reg := map[string]string{"east": region, "west": "eu-west"}[name]
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clustersNS, Name: "cluster-" + name,
			Labels: map[string]string{cluster.ClusterLabel: name, cluster.RegionLabel: reg}}, Data: map[string][]byte{"kubeconfig": b}}
		if err := e2e.kube.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		for _, o := range []client.Object{
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fluxNS}},
			&sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "platform", Labels: map[string]string{"tier": "platform"}},
				Spec: sourcev1.GitRepositorySpec{URL: "https://gitea.example.com/org/platform", Interval: metav1.Duration{Duration: time.Hour}}},
			&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "platform", Labels: map[string]string{"tier": "platform"}},
				Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Hour}, Path: "./", Prune: true,
					SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "platform"}}},
		} {
			if err := k.Client.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	// In this cluster, a real app that the real Flux controllers reconcile, labelled too.
	local := newApp(t, "platform-local", "main")
	for _, o := range []client.Object{&sourcev1.GitRepository{}, &kustomizev1.Kustomization{}} {
		if err := e2e.kube.Client.Get(ctx, client.ObjectKey{Namespace: fluxNS, Name: local.name}, o); err != nil {
			t.Fatal(err)
		}
		base := o.DeepCopyObject().(client.Object)
		o.SetLabels(map[string]string{"tier": "platform"})
		if err := e2e.kube.Client.Patch(ctx, o, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := filepath.Join(t.TempDir(), "platform-token")
	if err := os.WriteFile(tokenFile, []byte(platformToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Tokens do not cross: the hook token is refused by the platform API and vice versa.
	for _, c := range []struct{ url, token string }{{e2e.platformURL + "/api/v1/reconcile", local.token()}, {e2e.hookURL + "/hook", platformToken}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(`{"region":"eu-central"}`))
		req.Header.Set("Authorization", "Bearer "+c.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s with the other token: %d, want 401", c.url, resp.StatusCode)
		}
	}

	// Wait until flux-webhook has both registered clusters.
	waitFor(t, time.Minute, "clusters registered", func() bool {
		b, _ := os.ReadFile(e2e.service.Log)
		return bytes.Count(b, []byte(`"cluster caches synced"`)) >= 3
	})

	cli := func(markEast func(), args ...string) (string, int) {
		t.Helper()
		pr, pw := io.Pipe()
		var stderr bytes.Buffer
		code := make(chan int, 1)
		go func() {
			code <- run(ctx, append([]string{"reconcile", "--server", e2e.platformURL, "--token-file", tokenFile}, args...), pw, &stderr)
			pw.Close()
		}()
		var out strings.Builder
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "  east Kustomization") && markEast != nil {
				markEast() // Flux in "east" answers once the CLI has listed its targets
			}
		}
		return out.String() + stderr.String(), <-code
	}
	mark := func(ok bool) func() {
		return func() {
			key := client.ObjectKey{Namespace: fluxNS, Name: "platform"}
			if err := testenv.MarkGitRepositoryReady(ctx, east.Client, key, testenv.GitRevision("main", strings.Repeat("e", 40)), ""); err != nil {
				t.Error(err)
			}
			var err error
			if ok {
				err = testenv.MarkKustomizationApplied(ctx, east.Client, key, testenv.GitRevision("main", strings.Repeat("e", 40)), "")
			} else {
				err = testenv.MarkKustomizationFailed(ctx, east.Client, key, testenv.GitRevision("main", strings.Repeat("e", 40)), "", "ReconciliationFailed", "kustomize build failed: missing resource")
			}
			if err != nil {
				t.Error(err)
			}
		}
	}

	out, code := cli(mark(true), "--region", region, "--selector", "tier=platform", "--wait", "--timeout", "2m")
	golden(t, "reconcile-region-wait", out, code, 0)

	out, code = cli(mark(false), "--cluster", "east", "--kind", "Kustomization", "--with-source=false", "--wait", "--timeout", "1m")
	golden(t, "reconcile-failure", out, code, 1)

	out, code = cli(nil, "--region", "eu-west", "--output", "json")
	var st api.JobStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Targets) != 0 {
		// eu-west's only cluster has no Kustomization or HelmRelease matching by default kinds
		// besides "platform": check the JSON names it.
		if code != 0 || !strings.Contains(out, `"cluster": "west"`) {
			t.Fatalf("json output (exit %d):\n%s", code, out)
		}
	}

	out, code = cli(nil)
	golden(t, "reconcile-empty-selector", out, code, 1)
}

var (
	jobID    = regexp.MustCompile(`\b[0-9a-f]{16}\b`)
	shaLike  = regexp.MustCompile(`\b[0-9a-f]{12,40}\b`)
	duration = regexp.MustCompile(`\d+\.\ds\b`)
)

// golden compares CLI output, with job ids, commits and durations masked and the progress
// lines (whose order depends on which Flux answers first) sorted.
func golden(t *testing.T, name, out string, code, want int) {
	t.Helper()
	out = jobID.ReplaceAllString(out, "<job>")
	out = shaLike.ReplaceAllString(out, "<sha>")
	out = duration.ReplaceAllString(out, "<t>s")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var head, progress, tail []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "✔") || strings.HasPrefix(l, "✗") || strings.HasPrefix(l, "!"):
			progress = append(progress, l)
		case len(progress) == 0:
			head = append(head, l)
		default:
			tail = append(tail, l)
		}
	}
	slices.Sort(progress)
	got := fmt.Sprintf("exit %d\n%s\n", code, strings.Join(slices.Concat(head, progress, tail), "\n"))
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(b) {
		t.Fatalf("%s differs:\n--- got\n%s--- want\n%s", path, got, b)
	}
	if code != want {
		t.Fatalf("exit %d, want %d", code, want)
	}
}
