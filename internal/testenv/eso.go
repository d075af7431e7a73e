package testenv

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ESO is External Secrets Operator's controller (hack/testbin.sh eso) running as a local
// process against a Kubernetes API server: no webhook, no certificate controller (the CRDs
// convert between v1beta1 and v1 without one), no leader election, metrics on loopback.
type ESO struct {
	// MetricsAddr is 127.0.0.1:PORT of its metrics endpoint (it serves no health probe).
	MetricsAddr string
	Dir         string

	proc *proc
}

// StartESO installs every CRD of ESO's module on k (its controller watches them all: the
// generator states, the push secrets, the cluster-wide kinds) and starts its controller
// from $FLUX_WEBHOOK_ESO, logging to dir/external-secrets.log, and waits for its metrics
// endpoint. The controller is up then; its first sync of an ExternalSecret follows as soon
// as its store validates (StartESO's caller waits for that, on its own objects).
func StartESO(ctx context.Context, k *Kube, dir string) (*ESO, error) {
	e, err := startESO(ctx, k, dir)
	if err != nil {
		return nil, fmt.Errorf("start external secrets: %w", err)
	}
	return e, nil
}

func startESO(ctx context.Context, k *Kube, dir string) (*ESO, error) {
	bin, crds, err := Paths().RequireESO()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("dir is empty")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := k.InstallCRDs(ctx, crds); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	e := &ESO{Dir: dir, MetricsAddr: "127.0.0.1:" + strconv.Itoa(port)}
	// The controller reads $KUBECONFIG (controller-runtime's config), as in a pod it would
	// read its ServiceAccount; so does its kubernetes provider for the token requests.
	e.proc, err = startProc("external-secrets", filepath.Join(dir, "external-secrets.log"), dir,
		[]string{"KUBECONFIG=" + k.Kubeconfig}, bin,
		"--metrics-addr="+e.MetricsAddr, "--enable-leader-election=false",
		"--loglevel=info", "--zap-time-encoding=iso8601")
	if err != nil {
		return nil, err
	}
	if err := e.proc.waitFor(ctx, "external-secrets /metrics", func(ctx context.Context) error {
		return getOK(ctx, "http://"+e.MetricsAddr+"/metrics")
	}); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// NewESO starts ESO's controller for the test (see StartESO) and stops it in t.Cleanup,
// showing the last lines of its log if the test failed.
func NewESO(t testing.TB, k *Kube) *ESO {
	t.Helper()
	e, err := StartESO(t.Context(), k, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, e.Dir, "external-secrets.log")
		}
		e.Stop()
	})
	return e
}

// Stop stops the controller.
func (e *ESO) Stop() {
	if e.proc != nil {
		e.proc.stop()
	}
}

// Log returns the path of the controller's log.
func (e *ESO) Log() string { return filepath.Join(e.Dir, "external-secrets.log") }

// StoreReader is the ServiceAccount a Store reads its namespace's Secrets as.
const StoreReader = "eso-store-reader"

// Store is an OpenBao stand-in this machine can serve: a ClusterSecretStore of ESO's
// kubernetes provider that reads the Secrets of one namespace of the same API server, each
// Secret a key, each of its data keys a property. ESO authenticates as the ServiceAccount
// StoreReader of that namespace (a token it requests), which a Role there allows to read
// Secrets, as an OpenBao policy would; Break revokes it.
type Store struct {
	Name      string // the ClusterSecretStore
	Namespace string // where its keys are

	c client.Client
}

// NewStore creates the namespace ns, its reader, and the ClusterSecretStore name reading it
// from k's API server, re-validated every second (spec.refreshInterval), and waits until
// ESO reports the store Ready.
func NewStore(ctx context.Context, k *Kube, name, ns string) (*Store, error) {
	s := &Store{Name: name, Namespace: ns, c: k.Client}
	if err := s.create(ctx, k); err != nil {
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	if err := s.WaitReady(ctx, true, time.Minute); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) create(ctx context.Context, k *Kube) error {
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.Namespace}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: StoreReader}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: StoreReader},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}}}},
		s.binding(),
	} {
		if err := s.c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	store := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
		"metadata": map[string]any{"name": s.Name},
		"spec": map[string]any{
			"refreshInterval": int64(1),
			"provider": map[string]any{"kubernetes": map[string]any{
				"remoteNamespace": s.Namespace,
				"server": map[string]any{
					"url":      k.Config.Host,
					"caBundle": base64.StdEncoding.EncodeToString(k.Config.CAData),
				},
				"auth": map[string]any{"serviceAccount": map[string]any{"name": StoreReader, "namespace": s.Namespace}},
			}},
		},
	}}
	return s.c.Create(ctx, store)
}

func (s *Store) binding() *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: StoreReader},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: StoreReader},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: s.Namespace, Name: StoreReader}}}
}

// Set writes the key's properties (the Secret key of the store's namespace, created or
// replaced).
func (s *Store) Set(ctx context.Context, key string, properties map[string]string) error {
	data := map[string][]byte{}
	for k, v := range properties {
		data[k] = []byte(v)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: key}}
	err := s.c.Get(ctx, client.ObjectKeyFromObject(sec), sec)
	switch {
	case apierrors.IsNotFound(err):
		sec.Data = data
		return s.c.Create(ctx, sec)
	case err != nil:
		return err
	}
	sec.Data = data
	return s.c.Update(ctx, sec)
}

// Break revokes the reader's access (its RoleBinding), as a revoked OpenBao policy would:
// ESO's validation of the store, and every sync from it, then fail.
func (s *Store) Break(ctx context.Context) error {
	return client.IgnoreNotFound(s.c.Delete(ctx, s.binding()))
}

// Fix grants the reader's access again.
func (s *Store) Fix(ctx context.Context) error {
	err := s.c.Create(ctx, s.binding())
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// Ready returns the store's Ready condition as ESO reports it (nil before its first).
func (s *Store) Ready(ctx context.Context) (*metav1.Condition, error) {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("external-secrets.io/v1")
	u.SetKind("ClusterSecretStore")
	if err := s.c.Get(ctx, client.ObjectKey{Name: s.Name}, u); err != nil {
		return nil, err
	}
	return ReadyCondition(u), nil
}

// WaitReady waits until ESO reports the store Ready (or, with ready false, not Ready).
func (s *Store) WaitReady(ctx context.Context, ready bool, within time.Duration) error {
	var last *metav1.Condition
	deadline := time.Now().Add(within)
	for {
		c, err := s.Ready(ctx)
		if err == nil && c != nil && (c.Status == metav1.ConditionTrue) == ready {
			return nil
		}
		last = c
		if time.Now().After(deadline) {
			return fmt.Errorf("ClusterSecretStore %s: not Ready=%v within %s (last: %+v, %v)", s.Name, ready, within, last, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReadyCondition returns the Ready condition of an ESO object's status (an ExternalSecret,
// a store), nil when it has none.
func ReadyCondition(u *unstructured.Unstructured) *metav1.Condition {
	raw, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var conds []metav1.Condition
	for _, r := range raw {
		m, ok := r.(map[string]any)
		if !ok {
			continue
		}
		c := metav1.Condition{}
		c.Type, _ = m["type"].(string)
		status, _ := m["status"].(string)
		c.Status = metav1.ConditionStatus(status)
		c.Reason, _ = m["reason"].(string)
		c.Message, _ = m["message"].(string)
		conds = append(conds, c)
	}
	return apimeta.FindStatusCondition(conds, "Ready")
}
