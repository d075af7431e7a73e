package credentials_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// Values of at least 32 bytes, as the keyring wants.
const (
	first      = "first-value-0123456789abcdef0123456789"
	second     = "second-value-0123456789abcdef012345678"
	third      = "third-value-0123456789abcdef0123456789"
	otherValue = "other-value-0123456789abcdef0123456789"
)

func TestSecretRotation(t *testing.T) {
	integration(t)
	ctx := t.Context()
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hook-token"}, Data: map[string][]byte{"token": []byte(first + "\n")}}
	// Another Secret beside it: the watcher must not see it.
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hook-token-2"}, Data: map[string][]byte{"token": []byte(otherValue)}}
	for _, s := range []*corev1.Secret{secret, other} {
		if _, err := cs.CoreV1().Secrets("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	keys := &credentials.Keyring{Grace: 2 * time.Second}
	w := &credentials.SecretWatcher{Client: cs, Secret: types.NamespacedName{Namespace: "default", Name: "hook-token"}, Keys: keys, Purpose: credentials.SharedToken, Log: logr.Discard()}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Start(wctx) }()
	t.Cleanup(func() { cancel(); <-done })

	accepts := func(tok string) bool {
		_, err := keys.HookBearer(tok)
		return err == nil
	}
	eventually(t, "first token", func() bool { return w.Ready() == nil && accepts(first) })
	if accepts(otherValue) {
		t.Fatal("token of another Secret accepted")
	}

	rotated := time.Now()
	secret.Data["token"] = []byte(second)
	if _, err := cs.CoreV1().Secrets("default").Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second token", func() bool { return accepts(second) })
	t.Logf("rotation took effect %s after the update", time.Since(rotated).Round(time.Millisecond))
	if !accepts(first) {
		t.Fatal("previous token refused within the grace period")
	}
	eventually(t, "grace over", func() bool { return !accepts(first) })
	if !accepts(second) {
		t.Fatal("current token refused")
	}

	secret.Data["token"] = []byte("  ")
	if _, err := cs.CoreV1().Secrets("default").Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "blank token refuses everything", func() bool { return w.Ready() != nil && !accepts(second) && !accepts("") })

	// A weak value is refused like a missing one, and says why.
	secret.Data["token"] = []byte("short")
	if _, err := cs.CoreV1().Secrets("default").Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "weak token refused", func() bool {
		err := w.Ready()
		return err != nil && errors.Is(err, credentials.ErrWeak) && !accepts("short")
	})

	if err := cs.CoreV1().Secrets("default").Delete(ctx, "hook-token", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted Secret: not ready", func() bool { return w.Ready() != nil })
	secret.ResourceVersion = ""
	secret.Data["token"] = []byte(third)
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "recreated Secret", func() bool { return w.Ready() == nil && accepts(third) })
}

func TestSecretMissing(t *testing.T) {
	integration(t)
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	keys := &credentials.Keyring{}
	w := &credentials.SecretWatcher{Client: cs, Secret: types.NamespacedName{Namespace: "default", Name: "absent"}, Keys: keys, Purpose: credentials.SharedToken, Log: logr.Discard()}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(time.Second)
	if err := w.Ready(); err == nil {
		t.Fatal("ready without the Secret")
	}
	if _, err := keys.HookBearer(""); !errors.Is(err, credentials.ErrUnauthorized) {
		t.Fatalf("no token: %v", err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 20*time.Second, what, cond)
}
