package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// The end-to-end tests run the real flux-webhook binary against a real API server with the
// Flux CRDs, the real source-controller and kustomize-controller, a real Gitea and its
// Actions runner, Deployments rolled out by the real kube-controller-manager and
// kube-scheduler on a node kwok simulates, and the real Flagger, all on loopback, started
// once for the package.
var e2e struct {
	kube   *testenv.Kube
	proxy  *testenv.Proxy // the service reaches the API server through it
	gitea  *testenv.Gitea
	runner *testenv.Runner
	flux   *testenv.Flux
	// workloads roll Deployments out (kube-controller-manager, kube-scheduler, kwok);
	// flagger analyses canaries, asking prometheus (the test's query API) for metrics.
	workloads   *testenv.Workloads
	flagger     *testenv.Flagger
	prometheus  *testenv.Prometheus
	bin         string
	dir         string
	hookURL     string // http://127.0.0.1:PORT
	platformURL string // the platform API's, http://127.0.0.1:PORT
	ready       string // readiness URL
	metrics     string // the service's Prometheus endpoint, http://127.0.0.1:PORT/metrics
	service     *testenv.Service
	// hookKey is the current hook key (the scoped tokens are derived from it, tokenFor);
	// webhookKey the native webhooks' HMAC key.
	hookKey, webhookKey string
	// giteaToken is the Gitea API token the service posts statuses with.
	giteaToken string
	// answers records every response the tests get (bodies and headers), for the secret
	// sweep that ends the suite.
	answers *recorder
}

const (
	fluxNS           = "flux-system"
	appsNS           = "e2e-apps"
	copiesNS         = "e2e-copies"            // where per-cluster apps apply their copy
	clustersNS       = "flux-webhook-clusters" // where kubeconfig Secrets register clusters
	hookKeySecret    = "flux-webhook-hook-key"
	webhookKeySecret = "flux-webhook-webhook-key"
	recordKeySecret  = "flux-webhook-record-key"
	recordKey        = "e2e-record-key-0123456789abcdef-01234567"
	giteaSecret      = "flux-webhook-gitea"
	platformSecret   = "flux-webhook-platform"
	platformToken    = "e2e-platform-token-fedcba9876543210"
	firstHookKey     = "e2e-hook-key-0123456789abcdef-0123456789"
	firstWebhookKey  = "e2e-webhook-key-0123456789abcdef-0123456"
	region           = "eu-central"
	repoAuth         = "gitea-auth"
	clusterName      = "e2e"
	resultWindow     = 3 * time.Minute
	// trustedProxy is the loopback address the tests send from when they play the proxy in
	// front of the service (--trusted-proxies).
	trustedProxy = "127.0.0.77"
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runE2E(m))
}

func runE2E(m *testing.M) int {
	if testenv.Light() {
		return m.Run()
	}
	// Every HTTP client of the tests that does not bring its own transport (httpClient, the
	// CLI, the Gitea SDK) goes through the recorder.
	e2e.answers = newRecorder(http.DefaultTransport)
	http.DefaultTransport = e2e.answers
	testenv.SetLogger()
	ctx := context.Background()
	var err error
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "e2e setup:", err); return 1 }
	if e2e.dir, err = os.MkdirTemp("", "flux-webhook-e2e-"); err != nil {
		return fail(err)
	}
	defer os.RemoveAll(e2e.dir)
	if e2e.bin, err = testenv.BuildFlux(ctx, e2e.dir); err != nil {
		return fail(err)
	}
	if e2e.kube, err = testenv.StartKube(ctx, testenv.KubeOptions{Dir: filepath.Join(e2e.dir, "kube"), CRDs: true}); err != nil {
		return fail(err)
	}
	defer e2e.kube.Stop()
	if e2e.gitea, err = testenv.StartGitea(ctx, filepath.Join(e2e.dir, "gitea")); err != nil {
		return fail(err)
	}
	defer e2e.gitea.Stop()
	if e2e.flux, err = testenv.StartFlux(ctx, e2e.kube.Kubeconfig, filepath.Join(e2e.dir, "flux")); err != nil {
		return fail(err)
	}
	defer e2e.flux.Stop()
	if e2e.workloads, err = testenv.StartWorkloads(ctx, e2e.kube, filepath.Join(e2e.dir, "workloads")); err != nil {
		return fail(err)
	}
	defer e2e.workloads.Stop()
	if e2e.prometheus, err = testenv.StartPrometheus(); err != nil {
		return fail(err)
	}
	defer e2e.prometheus.Stop()
	// Before the service starts: it serves the Canary kind from the start.
	if e2e.flagger, err = testenv.StartFlagger(ctx, e2e.kube, filepath.Join(e2e.dir, "flagger")); err != nil {
		return fail(err)
	}
	defer e2e.flagger.Stop()
	if e2e.runner, err = testenv.StartRunner(ctx, e2e.gitea, filepath.Join(e2e.dir, "runner")); err != nil {
		return fail(err)
	}
	defer e2e.runner.Stop()
	if e2e.proxy, err = testenv.StartProxy(e2e.kube.APIAddr()); err != nil {
		return fail(err)
	}
	defer e2e.proxy.Cut()
	if err := setupCluster(ctx); err != nil {
		return fail(err)
	}
	if err := startService(ctx); err != nil {
		return fail(err)
	}
	defer e2e.service.Stop()
	code := m.Run()
	// No secret may have surfaced anywhere during the whole suite.
	if err := sweepSecrets(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "e2e secret sweep: FAIL:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "e2e secret sweep: no secret in the service's logs, /metrics, Events, Flux objects or", e2e.answers.count(), "answers")
	// Every metric the shipped alerts and dashboard read is one the service exposes: a
	// histogram or counter appears once observed, so only the whole suite (no -run) exposes all.
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		fmt.Fprintln(os.Stderr, "e2e monitored metrics: not checked (-run selects part of the suite)")
	} else if err := checkMonitoredMetrics(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e monitored metrics: FAIL:", err)
		return 1
	}
	return code
}

// setupCluster creates the namespaces and the Secrets External Secrets would sync.
func setupCluster(ctx context.Context) error {
	giteaToken, err := e2e.gitea.CreateToken(ctx, "flux-webhook", giteaTokenScopes...)
	if err != nil {
		return err
	}
	c := e2e.kube.Client
	for _, ns := range []string{fluxNS, appsNS, copiesNS, clustersNS} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	e2e.hookKey, e2e.webhookKey = firstHookKey, firstWebhookKey
	e2e.giteaToken = giteaToken
	// The hook key as External Secrets syncs it: a Secret owned by a Ready ExternalSecret.
	owner, err := readyExternalSecret(ctx, hookKeySecret)
	if err != nil {
		return err
	}
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: hookKeySecret, OwnerReferences: []metav1.OwnerReference{owner}},
			Data: map[string][]byte{"token": []byte(firstHookKey)}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: webhookKeySecret}, Data: map[string][]byte{"token": []byte(firstWebhookKey)}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: recordKeySecret}, Data: map[string][]byte{"token": []byte(recordKey)}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: giteaSecret}, Data: map[string][]byte{"token": []byte(giteaToken)}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: platformSecret}, Data: map[string][]byte{"token": []byte(platformToken)}},
		// What source-controller authenticates to the private repositories with.
		{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: repoAuth}, Data: map[string][]byte{
			"username": []byte(e2e.gitea.AdminUser), "password": []byte(e2e.gitea.Token)}},
	} {
		if err := c.Create(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// serviceArgs are the service's arguments, on the given ports: /hook, the platform API,
// health, metrics.
// readyExternalSecret creates, in fluxNS, the ExternalSecret that syncs the Secret name,
// Ready as External Secrets would report it, and returns the Secret's owner reference.
func readyExternalSecret(ctx context.Context, name string) (metav1.OwnerReference, error) {
	es := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
		"metadata": map[string]any{"namespace": fluxNS, "name": name},
		"spec": map[string]any{
			"refreshInterval": "1m",
			"secretStoreRef":  map[string]any{"kind": "ClusterSecretStore", "name": "openbao"},
			"target":          map[string]any{"name": name},
			"data":            []any{map[string]any{"secretKey": "token", "remoteRef": map[string]any{"key": "flux-webhook/" + name, "property": "token"}}},
		},
	}}
	if err := e2e.kube.Client.Create(ctx, es); err != nil {
		return metav1.OwnerReference{}, err
	}
	es.Object["status"] = map[string]any{"refreshTime": time.Now().UTC().Format(time.RFC3339), "conditions": []any{map[string]any{
		"type": "Ready", "status": "True", "reason": "SecretSynced", "message": "secret synced",
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}}
	if err := e2e.kube.Client.Status().Update(ctx, es); err != nil {
		return metav1.OwnerReference{}, err
	}
	return metav1.OwnerReference{APIVersion: "external-secrets.io/v1", Kind: "ExternalSecret", Name: name, UID: es.GetUID()}, nil
}

// checkMonitoredMetrics checks that each metric name the chart's alerts and dashboard use
// is in the service's /metrics after the suite.
func checkMonitoredMetrics() error {
	names, err := testenv.MonitoredMetrics("../..")
	if err != nil {
		return err
	}
	resp, err := http.Get(e2e.metrics)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var missing []string
	for _, n := range names {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `[{ ]`).Match(b) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the alerts or the dashboard read metrics the service does not expose: %v", missing)
	}
	fmt.Fprintf(os.Stderr, "e2e monitored metrics: all %d names the alerts and dashboard read are exposed\n", len(names))
	return nil
}

func serviceArgs(kubeconfig string, ports []int, extra ...string) []string {
	return append([]string{"serve",
		"--kubeconfig", kubeconfig,
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--platform-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", ports[3]),
		"--namespace", fluxNS,
		"--hook-key-secret", fluxNS + "/" + hookKeySecret,
		"--webhook-key-secret", fluxNS + "/" + webhookKeySecret,
		"--record-key-secret", fluxNS + "/" + recordKeySecret,
		"--cluster-secrets-namespace", clustersNS,
		// What the shipped manifests set: a cluster registered under an organization's name
		// follows that organization's repositories (TestTenantFollowsOnlyGrantedRepositories).
		"--cluster-default-repositories", "{cluster}/*",
		"--token-grace", "3s",
		"--gitea-url", e2e.gitea.URL,
		"--gitea-token-secret", fluxNS + "/" + giteaSecret,
		"--cluster-name", clusterName,
		"--region", region,
		"--platform-token-secret", fluxNS + "/" + platformSecret,
		"--result-timeout", resultWindow.String(),
		// Pushes of more than 2 Flux objects get one status per cluster (newClusterApp's).
		"--status-auto-threshold", "2",
		// Quicker takeover than the 15 s default, for the kill tests; still loose enough for
		// two busy cores to renew in time.
		"--leader-election-lease-duration", "8s",
		"--leader-election-renew-deadline", "6s",
		"--leader-election-retry-period", "1s",
		// The registered clusters' API servers listen on loopback, which a kubeconfig may
		// name only when allowed.
		"--insecure-kubeconfig", "local-address",
		// The suite's stand-in for an ingress controller: requests from it are their
		// X-Forwarded-For client's.
		"--trusted-proxies", trustedProxy,
	}, extra...)
}

func startService(ctx context.Context) error {
	ports, err := testenv.FreePorts(4)
	if err != nil {
		return err
	}
	kubeconfig, err := e2e.proxy.KubeconfigVia(ctx, e2e.kube.Kubeconfig, e2e.dir, "kubeconfig-via-proxy")
	if err != nil {
		return err
	}
	e2e.hookURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	e2e.platformURL = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	e2e.ready = fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[2])
	e2e.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[3])
	s, err := testenv.StartService(ctx, "flux-webhook", e2e.dir, e2e.bin, e2e.ready, serviceArgs(kubeconfig, ports)...)
	if err != nil {
		return err
	}
	e2e.service = s
	return nil
}

func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: needs the real parts (run without -short)")
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(e2e.service.Log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("flux-webhook log (tail):\n%s", b)
		}
	})
}

var httpClient = &http.Client{Timeout: 30 * time.Second}
