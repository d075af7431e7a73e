package testenv

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ESO's controller, against envtest, syncs an ExternalSecret of each served version from a
// Store (its kubernetes provider reading another namespace): a property, and every property
// of a key (dataFrom); a changed value within the refreshInterval; a broken store turns the
// ExternalSecret not Ready (the Secret stays), a fixed one Ready again.
func TestESO(t *testing.T) {
	real(t)
	ctx := t.Context()
	k := NewKube(t, KubeOptions{CRDs: true})
	t0 := time.Now()
	NewESO(t, k)
	up := time.Since(t0)
	t0 = time.Now()
	store, err := NewStore(ctx, k, "openbao", "openbao")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ESO's controller up in %s, its store Ready %s later", up.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	if err := store.Set(ctx, "app-key", map[string]string{"token": "v1", "previous": "v0"}); err != nil {
		t.Fatal(err)
	}
	if err := k.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}); err != nil {
		t.Fatal(err)
	}
	es := func(version, name string, spec map[string]any) *unstructured.Unstructured {
		spec["refreshInterval"] = "1s"
		spec["secretStoreRef"] = map[string]any{"kind": "ClusterSecretStore", "name": store.Name}
		spec["target"] = map[string]any{"name": name}
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "external-secrets.io/" + version, "kind": "ExternalSecret",
			"metadata": map[string]any{"namespace": "app", "name": name}, "spec": spec}}
	}
	objs := []*unstructured.Unstructured{
		es("v1beta1", "one", map[string]any{"data": []any{map[string]any{"secretKey": "token",
			"remoteRef": map[string]any{"key": "app-key", "property": "token"}}}}),
		es("v1", "all", map[string]any{"dataFrom": []any{map[string]any{"extract": map[string]any{"key": "app-key"}}}}),
	}
	t0 = time.Now()
	for _, o := range objs {
		if err := k.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// synced waits until ExternalSecret name is Ready as want says and its Secret holds data.
	synced := func(name string, ready bool, data map[string]string) {
		t.Helper()
		eventually(t, time.Minute, func() error {
			u := &unstructured.Unstructured{}
			u.SetAPIVersion("external-secrets.io/v1")
			u.SetKind("ExternalSecret")
			if err := k.Client.Get(ctx, client.ObjectKey{Namespace: "app", Name: name}, u); err != nil {
				return err
			}
			c := ReadyCondition(u)
			if c == nil || (c.Status == metav1.ConditionTrue) != ready {
				return fmt.Errorf("%s: Ready %+v, want %v", name, c, ready)
			}
			var s corev1.Secret
			if err := k.Client.Get(ctx, client.ObjectKey{Namespace: "app", Name: name}, &s); err != nil {
				return err
			}
			for k, v := range data {
				if string(s.Data[k]) != v {
					return fmt.Errorf("%s: %s=%q, want %q", name, k, s.Data[k], v)
				}
			}
			if owner := metav1.GetControllerOf(&s); owner == nil || owner.UID != u.GetUID() {
				return fmt.Errorf("%s: the Secret's controller %+v", name, owner)
			}
			return nil
		})
	}
	synced("one", true, map[string]string{"token": "v1"})
	synced("all", true, map[string]string{"token": "v1", "previous": "v0"})
	t.Logf("synced %s after creation", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	if err := store.Set(ctx, "app-key", map[string]string{"token": "v2"}); err != nil {
		t.Fatal(err)
	}
	synced("one", true, map[string]string{"token": "v2"})
	t.Logf("a changed value synced %s later", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	if err := store.Break(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.WaitReady(ctx, false, time.Minute); err != nil {
		t.Fatal(err)
	}
	synced("one", false, map[string]string{"token": "v2"})
	c, _ := store.Ready(ctx)
	t.Logf("store broken: not Ready %s later (%s: %s)", time.Since(t0).Round(time.Millisecond), c.Reason, c.Message)
	if !strings.Contains(c.Message, "secrets") {
		t.Errorf("the store's reason %q does not say it may not read the Secrets", c.Message)
	}
	t0 = time.Now()
	if err := store.Fix(ctx); err != nil {
		t.Fatal(err)
	}
	synced("one", true, map[string]string{"token": "v2"})
	t.Logf("store fixed: synced again %s later", time.Since(t0).Round(time.Millisecond))
}
