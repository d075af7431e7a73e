package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// esoKeys are the store's keys of the chart's externalSecrets values: the kubernetes provider
// standing in for OpenBao reads a key as a Secret's name, which OpenBao's paths
// (catalyst/flux-webhook/hook-key) are not, so the tests set the key names as they set the
// store, through the chart's values and patches of the overlay.
var esoKeys = map[string]string{
	"hookKey": "fw-hook-key", "webhookKey": "fw-webhook-key", "giteaToken": "fw-gitea-token",
	"recordKey": "fw-record-key", "platformToken": "fw-platform-token", "sharedToken": "fw-shared-token",
}

// esoRefresh is the ExternalSecrets' refreshInterval where the test rotates a key: ESO reads
// the store again that often.
const esoRefresh = "1s"

// esoTokenGrace is the service's --token-grace in the tests that rotate: how long the
// previous hook key stays valid.
const esoTokenGrace = 4 * time.Second

// The real External Secrets Operator (v0.16.2, hack/testbin.sh eso) syncs the keys of the
// chart's and deploy/'s ExternalSecrets, rendered as shipped with only the store and the key
// names set (the chart's values, patches in the overlay), as external-secrets.io/v1beta1 (the platform's ESO 0.10
// serves only that) and as v1, from a ClusterSecretStore of ESO's kubernetes provider (the
// Secrets of another namespace, read as a ServiceAccount allowed to, stand in for OpenBao).
// For each render, the flux-webhook binary of the image, configured as the rendered
// Deployment configures it, becomes ready from the Secrets ESO wrote. With the chart:
//   - changing the hook key in the store rotates it: ESO syncs it within its refreshInterval,
//     a push with the token `flux-webhook token` prints then is answered 202, one with the
//     previous token 202 within --token-grace and 401 after;
//   - a store that breaks (its reader's access revoked) fails /readyz, naming the store and
//     ESO's reason, while the keys already synced keep working; fixed, it recovers.
func TestExternalSecretsSyncedByESO(t *testing.T) {
	integration(t)
	ctx := t.Context()
	start := time.Now()
	testenv.NewESO(t, env.kube)
	esoUp := time.Since(start)
	start = time.Now()
	store, err := testenv.NewStore(ctx, env.kube, "openbao-test-"+randomHex(3), "openbao-"+randomHex(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ESO's controller up in %s, its store Ready %s later", esoUp.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	giteaToken, err := env.gitea.CreateToken(ctx, "eso-"+randomHex(3), "write:repository", "write:issue", "read:user", "read:package")
	if err != nil {
		t.Fatal(err)
	}
	hookKey := "eso-hook-key-" + randomHex(16)
	for key, value := range map[string]string{
		"hookKey": hookKey, "webhookKey": "eso-webhook-key-" + randomHex(16), "giteaToken": giteaToken,
		"recordKey": "eso-record-key-" + randomHex(16), "platformToken": "eso-platform-token-" + randomHex(16),
		"sharedToken": "eso-shared-token-" + randomHex(16),
	} {
		if err := store.Set(ctx, esoKeys[key], map[string]string{"token": value}); err != nil {
			t.Fatal(err)
		}
	}

	chartValues := func(apiVersion string) string {
		es := map[string]any{"apiVersion": apiVersion, "storeKind": "ClusterSecretStore", "storeName": store.Name, "refreshInterval": esoRefresh}
		for value, key := range esoKeys {
			ref := map[string]any{"key": key}
			if value != "recordKey" {
				ref["property"] = "token"
			}
			es[value] = ref
		}
		return valuesFile(t, map[string]any{"externalSecrets": es})
	}
	for _, tc := range []struct {
		name       string
		render     func(t *testing.T, ns string) []byte
		apiVersion string
		rotate     bool
	}{
		{"chart v1beta1", func(t *testing.T, ns string) []byte {
			return helmTemplate(t, ns, chartValues("external-secrets.io/v1beta1"))
		}, "external-secrets.io/v1beta1", true},
		{"chart v1", func(t *testing.T, ns string) []byte {
			return helmTemplate(t, ns, chartValues("external-secrets.io/v1"))
		}, "external-secrets.io/v1", true},
		{"catalyst overlay v1beta1", func(t *testing.T, _ string) []byte {
			return tool(t, "kustomize", "build", overlayWithStore(t, store.Name, "external-secrets.io/v1beta1"))
		}, "external-secrets.io/v1beta1", false},
		{"catalyst overlay v1", func(t *testing.T, _ string) []byte {
			return tool(t, "kustomize", "build", overlayWithStore(t, store.Name, "external-secrets.io/v1"))
		}, "external-secrets.io/v1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := "eso-" + randomHex(3)
			ensureNamespace(t, ns)
			objs := decode(t, tc.render(t, ns))
			svc := runFromESO(t, objs, ns, tc.apiVersion, store)
			if !tc.rotate {
				return
			}
			hookKey = svc.rotate(t, store, hookKey)
			svc.brokenStore(t, store)
		})
	}
}

// overlayWithStore copies deploy/ and adds to the copy of the Catalyst overlay, as an
// operator would, patches pointing its ExternalSecrets at the store and its key names (and,
// for external-secrets.io/v1, the externalsecrets-v1 component); it returns the overlay's
// directory.
func overlayWithStore(t *testing.T, storeName, apiVersion string) string {
	t.Helper()
	var components []string
	if apiVersion == "external-secrets.io/v1" {
		components = append(components, "../../components/externalsecrets-v1")
	}
	overlay := overlayWith(t, components...)
	patch := func(b *strings.Builder, target, path, value string) {
		fmt.Fprintf(b, "  - target: {group: external-secrets.io, kind: ExternalSecret%s}\n", target)
		fmt.Fprintf(b, "    patch: |-\n      - op: replace\n        path: %s\n        value: %s\n", path, value)
	}
	var b strings.Builder
	b.WriteString("patches:\n")
	patch(&b, "", "/spec/secretStoreRef/name", storeName)
	for value, suffix := range map[string]string{"hookKey": "hook-key", "webhookKey": "webhook-key", "giteaToken": "gitea",
		"platformToken": "platform"} {
		patch(&b, ", name: flux-webhook-"+suffix, "/spec/data/0/remoteRef/key", esoKeys[value])
	}
	patch(&b, ", name: flux-webhook-record-key", "/spec/dataFrom/0/extract/key", esoKeys["recordKey"])
	k := filepath.Join(overlay, "kustomization.yaml")
	y, err := os.ReadFile(k)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(y, []byte("\npatches:")) {
		t.Fatalf("%s/kustomization.yaml has patches: the test's would replace them", catalystDir)
	}
	if err := os.WriteFile(k, append(y, b.String()...), 0o644); err != nil {
		t.Fatal(err)
	}
	return overlay
}

// esoService is the flux-webhook binary running from the Secrets ESO wrote.
type esoService struct {
	ns, health, hookURL, kubeconfig string
	bin                             string
	envs                            map[string]string
	svc                             *testenv.Service
	repo                            *testenv.Repo
}

// runFromESO applies the rendered ExternalSecrets in ns, waits for ESO to sync each (Ready,
// its Secret written and owned by it), then runs the image's binary as the rendered
// Deployment configures it in ns, and waits until it is ready.
func runFromESO(t *testing.T, objs []*unstructured.Unstructured, ns, apiVersion string, store *testenv.Store) *esoService {
	t.Helper()
	c := env.kube.Client
	start := time.Now()
	var names []string
	for _, o := range objs {
		if o.GetKind() != "ExternalSecret" {
			continue
		}
		if o.GetAPIVersion() != apiVersion {
			t.Fatalf("%s rendered as %s, want %s", o.GetName(), o.GetAPIVersion(), apiVersion)
		}
		if s, _, _ := unstructured.NestedString(o.Object, "spec", "secretStoreRef", "name"); s != store.Name {
			t.Fatalf("%s reads store %q, want %q", o.GetName(), s, store.Name)
		}
		o = o.DeepCopy()
		o.SetNamespace(ns)
		apply(t, c, o, false)
		names = append(names, o.GetName())
	}
	if len(names) < 4 {
		t.Fatalf("rendered ExternalSecrets %v", names)
	}
	for _, name := range names {
		waitESO(t, ns, name, apiVersion, func(ready *metav1.Condition, secret *corev1.Secret) bool {
			return ready != nil && ready.Status == metav1.ConditionTrue && secret != nil && len(secret.Data["token"]) > 0
		})
	}
	synced := time.Since(start)

	s := &esoService{ns: ns, bin: imageBinary(t), kubeconfig: env.kube.Kubeconfig}
	s.envs = containerOf(t, findKind(t, objs, "Deployment")).environment(t, ns)
	for k, v := range s.envs {
		t.Setenv(k, v)
	}
	ports, err := testenv.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	s.health = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	s.hookURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	args := append(slices.Clone(containerOf(t, findKind(t, objs, "Deployment")).args),
		"--kubeconfig", s.kubeconfig,
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--platform-listen", fmt.Sprintf("127.0.0.1:%d", ports[3]),
		"--gitea-url", env.gitea.URL,
		"--token-grace", esoTokenGrace.String())
	start = time.Now()
	s.svc = testenv.NewService(t, "flux-webhook", s.bin, s.health+"/readyz", args...)
	t.Logf("%d ExternalSecrets (%s) synced by ESO in %s; flux-webhook ready from their Secrets %s later",
		len(names), apiVersion, synced.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return s
}

// waitESO waits until cond holds of the ExternalSecret ns/name (its Ready condition as ESO
// reports it) and the Secret it writes (nil while there is none; checked to be owned by it).
func waitESO(t *testing.T, ns, name, apiVersion string, cond func(*metav1.Condition, *corev1.Secret) bool) {
	t.Helper()
	var ready *metav1.Condition
	var secret *corev1.Secret
	waitUntil(t, time.Minute, "ExternalSecret "+ns+"/"+name, func() bool {
		es := &unstructured.Unstructured{}
		es.SetAPIVersion(apiVersion)
		es.SetKind("ExternalSecret")
		if err := env.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, es); err != nil {
			t.Fatal(err)
		}
		ready = testenv.ReadyCondition(es)
		target, _, _ := unstructured.NestedString(es.Object, "spec", "target", "name")
		secret = &corev1.Secret{}
		if err := env.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: target}, secret); err != nil {
			secret = nil
		} else if owner := metav1.GetControllerOf(secret); owner == nil || owner.Kind != "ExternalSecret" || owner.UID != es.GetUID() {
			t.Fatalf("Secret %s/%s is not owned by its ExternalSecret: %+v", ns, target, secret.OwnerReferences)
		}
		return cond(ready, secret)
	}, func() string { return fmt.Sprintf("Ready %+v, Secret written %v", ready, secret != nil) })
}

// waitUntil polls cond every 100 ms for at most within; then it fails t with what, and last's
// account of the state.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool, last func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (%s)", what, within, last())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// token runs `flux-webhook token` for the service's repository, reading the hook key from
// the Secret ESO wrote, as the README has a platform team do.
func (s *esoService) token(t *testing.T) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), s.bin, "token", "--kubeconfig", s.kubeconfig,
		"--hook-key-secret", s.envs[hookKeyEnv], "--repository", s.repo.FullName)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("flux-webhook token: %v: %s", err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

// push posts the short form for the service's repository with token and returns the status
// code.
func (s *esoService) push(t *testing.T, token string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.hookURL+"/hook/"+s.repo.FullName, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("push: %d %s", resp.StatusCode, b)
	}
	return resp.StatusCode
}

// rotate changes the hook key in the store and follows it to the service: ESO syncs it, the
// new token is accepted, the previous one for the grace period only. It returns the new key.
func (s *esoService) rotate(t *testing.T, store *testenv.Store, old string) string {
	t.Helper()
	ctx := t.Context()
	// A repository with a GitRepository following it in ns: a push of it is accepted (202).
	repo, err := env.gitea.CreateRepo(ctx, s.ns+"-app")
	if err != nil {
		t.Fatal(err)
	}
	s.repo = repo
	if err := repo.WriteFile("README.md", "eso\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Commit(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx); err != nil {
		t.Fatal(err)
	}
	gr := &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: "app"}, Spec: sourcev1.GitRepositorySpec{
		URL: repo.CloneURL, Interval: metav1.Duration{Duration: time.Hour}, Reference: &sourcev1.GitRepositoryRef{Branch: "main"}}}
	if err := env.kube.Client.Create(ctx, gr); err != nil {
		t.Fatal(err)
	}
	before := s.token(t)
	waitUntil(t, time.Minute, "a push with the token accepted", func() bool { return s.push(t, before) == http.StatusAccepted },
		func() string { return "" })

	next := "eso-rotated-hook-key-" + randomHex(16)
	if err := store.Set(ctx, esoKeys["hookKey"], map[string]string{"token": next}); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	var after string
	waitUntil(t, time.Minute, "ESO syncs the rotated key", func() bool { after = s.token(t); return after != before },
		func() string { return "the Secret still holds the previous key" })
	synced := time.Since(changed)
	waitUntil(t, 10*time.Second, "the new token accepted", func() bool { return s.push(t, after) == http.StatusAccepted },
		func() string { return "401" })
	accepted := time.Since(changed)
	if code := s.push(t, before); code != http.StatusAccepted && time.Since(changed) < esoTokenGrace-time.Second {
		t.Fatalf("the previous token within the grace: %d", code)
	}
	waitUntil(t, esoTokenGrace+10*time.Second, "the previous token refused", func() bool { return s.push(t, before) == http.StatusUnauthorized },
		func() string { return "still 202" })
	t.Logf("key changed in the store: Secret synced by ESO %s later (refreshInterval %s), new token 202 at %s, previous token 401 at %s (--token-grace %s)",
		synced.Round(time.Millisecond), esoRefresh, accepted.Round(time.Millisecond), time.Since(changed).Round(time.Millisecond), esoTokenGrace)
	return next
}

// brokenStore revokes the store's access: /readyz fails, its checks (/readyz/<check>) and
// the log naming the store and ESO's reason, while the keys already synced keep
// authenticating; with access granted again, the service is ready again.
func (s *esoService) brokenStore(t *testing.T, store *testenv.Store) {
	t.Helper()
	ctx := t.Context()
	get := func(path string) (int, string) {
		resp, err := http.Get(s.health + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tok := s.token(t)
	if err := store.Break(ctx); err != nil {
		t.Fatal(err)
	}
	broken := time.Now()
	t.Cleanup(func() { _ = store.Fix(context.Background()) })
	var code int
	var body string
	waitUntil(t, 2*time.Minute, "/readyz failing", func() bool { code, body = get("/readyz"); return code != http.StatusOK },
		func() string { return body })
	failed := time.Since(broken)
	// /readyz withholds the reasons (controller-runtime's); each check's own path says it,
	// once each ExternalSecret it reads has failed its refresh.
	storeRef := "ClusterSecretStore/" + store.Name
	for _, check := range []string{"hook-credentials", "record-key"} {
		waitUntil(t, time.Minute, "/readyz/"+check+" naming the store and ESO's reason", func() bool {
			code, body = get("/readyz/" + check)
			return code != http.StatusOK && strings.Contains(body, storeRef) && strings.Contains(body, "SecretSyncedError")
		}, func() string { return fmt.Sprint(code, " ", body) })
	}
	_, reason := get("/readyz/hook-credentials")
	if log, _ := os.ReadFile(s.svc.Log); !bytes.Contains(log, []byte(`"token source failing"`)) || !bytes.Contains(log, []byte(storeRef)) {
		t.Fatal("the service's log does not say which store fails")
	}
	storeState := "no condition"
	if cond, err := store.Ready(ctx); err != nil {
		t.Fatal(err)
	} else if cond != nil {
		storeState = fmt.Sprintf("%s %s %q", cond.Status, cond.Reason, cond.Message)
	}
	if s.push(t, tok) != http.StatusAccepted {
		t.Fatal("the synced token refused while its store is broken")
	}
	if err := store.Fix(ctx); err != nil {
		t.Fatal(err)
	}
	fixed := time.Now()
	waitUntil(t, 2*time.Minute, "/readyz recovered", func() bool { code, body = get("/readyz"); return code == http.StatusOK },
		func() string { return body })
	t.Logf("store broken: /readyz failed %s later (the store: Ready %s), ready again %s after the fix; /readyz/hook-credentials said: %s",
		failed.Round(time.Millisecond), storeState, time.Since(fixed).Round(time.Millisecond), strings.TrimSpace(reason))
}
