package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// serviceExitBound is how soon the service promises to exit after SIGTERM (the README's
// "Shutdown": in-flight requests get 20 s, the whole stop 25 s).
const serviceExitBound = 25 * time.Second

// What the rendered Deployment and PodDisruptionBudget allow for a stop, and what the
// image's binary takes: a pod is stopped well inside its termination grace period — the
// preStop sleep, then the service's exit after SIGTERM with a request still in flight (a
// waiting /hook stream, held until the service gives up on it), measured — and the leader
// releases its Lease as it exits, so the other replica takes over at once rather than after
// the lease duration. The budget keeps one of the replicas serving through a drain, and a
// single replica gets no budget that would block drains.
func TestShutdownFitsGracePeriod(t *testing.T) {
	integration(t)
	type plan struct {
		grace, preStop time.Duration
		replicas       int64
		minAvailable   int64 // -1: no budget
	}
	planOf := func(t *testing.T, stream []byte) plan {
		t.Helper()
		objs := decode(t, stream)
		var dep appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(findKind(t, objs, "Deployment").Object, &dep); err != nil {
			t.Fatal(err)
		}
		pod := dep.Spec.Template.Spec
		p := plan{grace: time.Duration(ptrOr(pod.TerminationGracePeriodSeconds, 30)) * time.Second,
			replicas: int64(ptrOr(dep.Spec.Replicas, 1)), minAvailable: -1}
		if l := pod.Containers[0].Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
			p.preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		}
		for _, o := range objs {
			if o.GetKind() == "PodDisruptionBudget" {
				var pdb policyv1.PodDisruptionBudget
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &pdb); err != nil {
					t.Fatal(err)
				}
				p.minAvailable = int64(pdb.Spec.MinAvailable.IntValue())
			}
		}
		return p
	}
	plans := map[string]plan{}
	for _, r := range render(t) {
		plans[r.name] = planOf(t, r.out)
	}
	one := filepath.Join(t.TempDir(), "one.json")
	if err := os.WriteFile(one, []byte(`{"replicaCount": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	plans["chart-one-replica"] = planOf(t, helmTemplate(t, catalystNS, one))
	for name, p := range plans {
		switch {
		case p.grace < p.preStop+serviceExitBound+5*time.Second:
			t.Errorf("%s: terminationGracePeriodSeconds %s leaves no room for the preStop sleep (%s), the service's exit (%s) and a margin of 5 s", name, p.grace, p.preStop, serviceExitBound)
		case p.preStop <= 0:
			t.Errorf("%s: no preStop sleep: the pod would stop accepting while endpoints still send to it", name)
		case p.replicas > 1 && (p.minAvailable < 1 || p.minAvailable >= p.replicas):
			t.Errorf("%s: %d replicas, PodDisruptionBudget minAvailable %d: want one serving and one evictable", name, p.replicas, p.minAvailable)
		case p.replicas == 1 && p.minAvailable >= 1:
			t.Errorf("%s: one replica with minAvailable %d: every node drain would block", name, p.minAvailable)
		}
	}
	base := plans["base"]

	// The binary, as the leader, with a waiting /hook stream in flight.
	ctx, c := t.Context(), env.kube.Client
	ns := "shutdown-" + randomHex(3)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// The keys the contract requires, each at least 32 bytes, no two alike; the push comes as
	// a native Gitea webhook signed with the webhook key.
	webhookKey := "webhook-" + randomHex(24)
	for name, value := range map[string]string{"flux-webhook-hook-key": "hook-" + randomHex(24),
		"flux-webhook-webhook-key": webhookKey, "flux-webhook-record-key": "record-" + randomHex(24)} {
		if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Data: map[string][]byte{"token": []byte(value)}}); err != nil {
			t.Fatal(err)
		}
	}
	repoURL := "https://gitea.example.eu/" + ns + "/app.git"
	gr := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}, Spec: sourcev1.GitRepositorySpec{
		URL: repoURL, Interval: metav1.Duration{Duration: time.Hour}, Reference: &sourcev1.GitRepositoryRef{Branch: "main"}}}
	if err := c.Create(ctx, gr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, gr) })

	ports, err := testenv.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logPath := filepath.Join(dir, "flux-webhook.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// No Gitea here: --verify-claims=false, so that the push is not checked against one.
	cmd := exec.Command(imageBinary(t), "serve", "--kubeconfig", env.kube.Kubeconfig, "--namespace", ns,
		"--hook-key-secret", ns+"/flux-webhook-hook-key", "--webhook-key-secret", ns+"/flux-webhook-webhook-key",
		"--record-key-secret", ns+"/flux-webhook-record-key", "--verify-claims=false", "--cluster-name", "shutdown",
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("service log:\n%s", tailBytes(b, 6000))
		}
	})
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !ok() {
			select {
			case err := <-exited:
				t.Fatalf("%s: the service exited: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within a minute", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("ready", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	waitFor("elected leader", func() bool {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte("elected leader"))
	})
	// The guide's §14, of the binary as the Deployment runs it (no log flag: its defaults):
	// /healthz and /readyz on the health port, Prometheus' exposition on /metrics, and logs
	// as structured JSON, one object per line.
	for _, u := range []string{fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[1]), fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[2])} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || (strings.HasSuffix(u, "/metrics") && !bytes.Contains(b, []byte("# TYPE flux_webhook_build_info gauge"))) {
			t.Fatalf("GET %s: %d %.300s", u, resp.StatusCode, b)
		}
	}
	logs, _ := os.ReadFile(logPath)
	for _, line := range bytes.Split(bytes.TrimSpace(logs), []byte("\n")) {
		var entry map[string]any
		if err := json.Unmarshal(line, &entry); err != nil || entry["level"] == nil || entry["msg"] == nil {
			t.Fatalf("a log line that is no structured JSON: %q", line)
		}
	}

	body, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "after": strings.Repeat("5", 40), "before": strings.Repeat("0", 40),
		"repository": map[string]any{"full_name": ns + "/app", "clone_url": repoURL},
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/hook?wait=true&timeout=10m", ports[0]), bytes.NewReader(body))
	mac := hmac.New(sha256.New, []byte(webhookKey))
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", "push")
	req.Header.Set("X-Gitea-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	stream := bufio.NewReader(resp.Body)
	if line, err := stream.ReadString('\n'); err != nil || !strings.HasPrefix(line, "accepted:") {
		t.Fatalf("/hook?wait=true answered %d %q, %v", resp.StatusCode, line, err)
	}
	streamEnded := make(chan time.Time, 1)
	go func() {
		_, _ = io.Copy(io.Discard, stream)
		streamEnded <- time.Now()
	}()

	// SIGTERM, as the kubelet sends it after the preStop sleep.
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	select {
	case err := <-exited:
		took = time.Since(start)
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(base.grace - base.preStop):
		t.Fatalf("still running %s after SIGTERM: the kubelet would SIGKILL it now (grace %s, preStop %s)", base.grace-base.preStop, base.grace, base.preStop)
	}
	ended := "still open"
	select {
	case at := <-streamEnded:
		ended = fmt.Sprintf("ended %s after SIGTERM", at.Sub(start).Round(time.Millisecond))
	case <-time.After(time.Second):
	}
	if took > serviceExitBound {
		t.Errorf("exited %s after SIGTERM, more than the %s the service promises", took, serviceExitBound)
	}

	lease := &coordinationv1.Lease{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "flux-webhook"}, lease); err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("the Lease is still held by %s after exit: the other replica would wait out the lease", *h)
	}
	t.Logf("exited %s after SIGTERM with a waiting stream in flight (the stream %s), Lease released; grace %s: preStop %s, exit %s, %s to spare",
		took.Round(time.Millisecond), ended, base.grace, base.preStop, took.Round(time.Millisecond), (base.grace - base.preStop - took).Round(time.Millisecond))
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
