package credentials_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

var externalSecrets = schema.GroupVersionResource{Group: "external-secrets.io", Version: "v1", Resource: "externalsecrets"}

// When External Secrets owns the token Secret, the watcher follows the ExternalSecret:
// not ready, naming the store, while it does not sync; ready again when it does.
func TestExternalSecretSource(t *testing.T) {
	integration(t)
	ctx := t.Context()
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	es := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
		"metadata": map[string]any{"namespace": "default", "name": "eso-token"},
		"spec": map[string]any{
			"refreshInterval": "1m",
			"secretStoreRef":  map[string]any{"kind": "ClusterSecretStore", "name": "openbao"},
			"target":          map[string]any{"name": "eso-token"},
			"data":            []any{map[string]any{"secretKey": "token", "remoteRef": map[string]any{"key": "flux-webhook/hook", "property": "token"}}},
		},
	}}
	res := dyn.Resource(externalSecrets).Namespace("default")
	es, err = res.Create(ctx, es, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// What ESO writes: its status, and the Secret it owns.
	setStatus := func(ready bool, reason, msg string) {
		t.Helper()
		cur, err := res.Get(ctx, "eso-token", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		status := map[string]any{"conditions": []any{map[string]any{
			"type": "Ready", "status": map[bool]string{true: "True", false: "False"}[ready], "reason": reason, "message": msg,
			"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		}}}
		if ready {
			status["refreshTime"] = time.Now().UTC().Format(time.RFC3339)
		} else if rt, ok := cur.Object["status"].(map[string]any)["refreshTime"]; ok {
			status["refreshTime"] = rt
		}
		cur.Object["status"] = status
		if _, err := res.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(true, "SecretSynced", "secret synced")
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "eso-token",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "external-secrets.io/v1", Kind: "ExternalSecret", Name: "eso-token", UID: es.GetUID()}}},
		Data: map[string][]byte{"token": []byte("from-openbao-0123456789abcdef0123456789")}}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	keys := &credentials.Keyring{}
	w := &credentials.SecretWatcher{Client: cs, Dynamic: dyn, Secret: types.NamespacedName{Namespace: "default", Name: "eso-token"}, Keys: keys, Purpose: credentials.PlatformToken, Log: logr.Discard()}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Start(wctx) }()
	t.Cleanup(func() { cancel(); <-done })

	eventually(t, "ready while the ExternalSecret syncs", func() bool { return w.Ready() == nil })
	if refreshed := gauge(t, "flux_webhook_externalsecret_last_refresh_timestamp_seconds"); time.Since(time.Unix(int64(refreshed), 0)) > time.Minute {
		t.Fatalf("last refresh metric %v", refreshed)
	}

	setStatus(false, "SecretSyncedError", "could not get secret data from provider: permission denied")
	eventually(t, "not ready while it fails", func() bool { return w.Ready() != nil })
	if msg := w.Ready().Error(); !strings.Contains(msg, "ClusterSecretStore/openbao") || !strings.Contains(msg, "permission denied") {
		t.Fatalf("reason %q: want the store and ESO's message", msg)
	}
	if gauge(t, "flux_webhook_externalsecret_ready") != 0 {
		t.Fatal("ready metric still 1")
	}
	// The last synced token keeps authenticating: readiness reports the source, it does not
	// stop the service from knowing its token.
	if err := keys.Platform("from-openbao-0123456789abcdef0123456789"); err != nil {
		t.Fatalf("token refused while its source fails: %v", err)
	}
	setStatus(true, "SecretSynced", "secret synced")
	eventually(t, "ready again", func() bool { return w.Ready() == nil })
}

// gauge reads one series of a gauge from controller-runtime's registry.
func gauge(t *testing.T, name string) float64 {
	t.Helper()
	fams, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
