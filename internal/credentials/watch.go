package credentials

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Keys of the values in each Secret flux-webhook reads: the value, and optionally one more
// that stays valid beside it while a rotation is under way.
const (
	SecretKey         = "token"
	SecretPreviousKey = "previous"
)

var (
	secretChanged = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flux_webhook_secret_last_change_timestamp_seconds",
		Help: "When a watched Secret's value last changed, in Unix seconds.",
	}, []string{"secret"})
	secretUsable = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flux_webhook_secret_usable",
		Help: "1 when a watched Secret holds a value flux-webhook accepted (present, at least 32 bytes, used for one purpose only).",
	}, []string{"secret", "purpose"})
)

func init() { metrics.Registry.MustRegister(secretChanged, secretUsable) }

var _ manager.LeaderElectionRunnable = (*SecretWatcher)(nil)

// SecretWatcher follows one named Secret (synced by External Secrets from OpenBao) and sets
// the value of its "token" key (and "previous", when present) as the Purpose's value in Keys
// on every change; the value is withdrawn when the Secret or the key is gone. It watches that one Secret only, by a field selector: Secrets stay out of the
// manager's cache, and RBAC can grant it by resourceNames.
//
// When the Secret is owned by an External Secrets ExternalSecret and Dynamic is set, that
// ExternalSecret is watched too: while it does not sync, Ready says why (naming the store),
// and metrics show its state and last successful refresh.
type SecretWatcher struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Secret  types.NamespacedName
	Keys    *Keyring
	Purpose Purpose
	Log     logr.Logger

	mu      sync.Mutex
	synced  bool
	present bool
	source  *sourceWatch
}

// ParseSecretRef parses "NAMESPACE/NAME".
func ParseSecretRef(s string) (types.NamespacedName, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" {
		return types.NamespacedName{}, fmt.Errorf("secret %q: want NAMESPACE/NAME", s)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// NeedLeaderElection is false: every replica authenticates requests.
func (w *SecretWatcher) NeedLeaderElection() bool { return false }

// Start watches the Secret until ctx ends.
func (w *SecretWatcher) Start(ctx context.Context) error {
	lw := toolscache.NewListWatchFromClient(w.Client.CoreV1().RESTClient(), "secrets", w.Secret.Namespace,
		fields.OneTermEqualSelector("metadata.name", w.Secret.Name))
	inf := toolscache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, toolscache.Indexers{})
	source := &sourceWatch{dyn: w.Dynamic, secret: w.Secret.String(), log: w.Log}
	defer source.stop()
	w.mu.Lock()
	w.source = source
	w.mu.Unlock()
	secret, purpose := w.Secret.String(), string(w.Purpose)
	update := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		value, previous := "", ""
		if ok {
			value, previous = string(s.Data[SecretKey]), string(s.Data[SecretPreviousKey])
		}
		source.follow(ctx, s)
		present := strings.TrimSpace(value) != ""
		w.mu.Lock()
		changed := w.present != present
		w.present = present
		w.mu.Unlock()
		err := w.Keys.Set(w.Purpose, value, previous)
		secretChanged.WithLabelValues(secret).SetToCurrentTime()
		secretUsable.WithLabelValues(secret, purpose).Set(map[bool]float64{true: 1, false: 0}[present && err == nil])
		switch {
		case err != nil:
			w.Log.Error(err, "secret value refused: requests that need it are refused", "secret", secret, "purpose", purpose)
		case !present:
			w.Log.Error(ErrMissing, "secret has no value: requests that need it are refused", "secret", secret, "purpose", purpose, "key", SecretKey)
		case changed:
			w.Log.Info("secret loaded", "secret", secret, "purpose", purpose)
		default:
			w.Log.Info("secret changed", "secret", secret, "purpose", purpose)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, obj any) { update(obj) },
		DeleteFunc: func(any) { update(nil) },
	}); err != nil {
		return fmt.Errorf("watch secret %s: %w", w.Secret, err)
	}
	go inf.Run(ctx.Done())
	if !toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil // stopped before the first list
	}
	w.mu.Lock()
	w.synced = true
	w.mu.Unlock()
	<-ctx.Done()
	return nil
}

// Ready reports why the Secret cannot be used yet, nil once its token is present.
func (w *SecretWatcher) Ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case !w.synced:
		return fmt.Errorf("secret %s not read yet", w.Secret)
	case !w.present:
		return fmt.Errorf("secret %s has no %q key", w.Secret, SecretKey)
	}
	if err := w.Keys.Problem(w.Purpose); err != nil {
		return fmt.Errorf("secret %s: %w", w.Secret, err)
	}
	if w.source == nil {
		return nil
	}
	return w.source.ready()
}
