package credentials

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// externalSecretGroup is External Secrets Operator's API group.
const externalSecretGroup = "external-secrets.io"

var (
	externalSecretReady = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flux_webhook_externalsecret_ready",
		Help: "1 when the ExternalSecret owning a watched Secret reports Ready (its store synced it).",
	}, []string{"secret", "externalsecret"})
	externalSecretRefresh = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flux_webhook_externalsecret_last_refresh_timestamp_seconds",
		Help: "When the ExternalSecret owning a watched Secret last synced it successfully (status.refreshTime), in Unix seconds.",
	}, []string{"secret", "externalsecret"})
)

func init() { metrics.Registry.MustRegister(externalSecretReady, externalSecretRefresh) }

// externalSecret is the part of an external-secrets.io ExternalSecret flux-webhook reads.
// (ESO's own Go types do not compile with the controller-runtime this module uses.)
type externalSecret struct {
	Spec struct {
		SecretStoreRef struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"secretStoreRef"`
	} `json:"spec"`
	Status struct {
		RefreshTime metav1.Time        `json:"refreshTime"`
		Conditions  []metav1.Condition `json:"conditions"`
	} `json:"status"`
}

// sourceWatch follows the ExternalSecret that owns a watched Secret.
type sourceWatch struct {
	dyn    dynamic.Interface
	secret string // namespace/name of the Secret, for metrics and logs
	log    logr.Logger

	mu      sync.Mutex
	name    string // namespace/name of the ExternalSecret, "" when the Secret has none
	version string
	cancel  context.CancelFunc
	synced  bool
	reason  string // why it is not ready; "" when it is
}

// follow starts watching the ExternalSecret that owns s (if any), or stops when the owner
// changed or went.
func (w *sourceWatch) follow(ctx context.Context, s *corev1.Secret) {
	var owner *metav1.OwnerReference
	if s != nil {
		for i, ref := range s.OwnerReferences {
			if ref.Kind == "ExternalSecret" && strings.HasPrefix(ref.APIVersion, externalSecretGroup+"/") {
				owner = &s.OwnerReferences[i]
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	name, version := "", ""
	if owner != nil {
		name, version = s.Namespace+"/"+owner.Name, strings.TrimPrefix(owner.APIVersion, externalSecretGroup+"/")
	}
	if name == w.name && version == w.version {
		return
	}
	if w.cancel != nil {
		w.cancel()
		w.cancel = nil
		externalSecretReady.DeleteLabelValues(w.secret, w.name)
		externalSecretRefresh.DeleteLabelValues(w.secret, w.name)
	}
	w.name, w.version, w.synced, w.reason = name, version, false, ""
	if owner == nil || w.dyn == nil {
		return
	}
	w.reason = fmt.Sprintf("ExternalSecret %s not read yet", name)
	wctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	gvr := schema.GroupVersionResource{Group: externalSecretGroup, Version: version, Resource: "externalsecrets"}
	sel := fields.OneTermEqualSelector("metadata.name", owner.Name).String()
	inf := dynamicinformer.NewFilteredDynamicInformer(w.dyn, gvr, s.Namespace, 0, toolscache.Indexers{},
		func(o *metav1.ListOptions) { o.FieldSelector = sel }).Informer()
	_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.observe(name, o) },
		UpdateFunc: func(_, o any) { w.observe(name, o) },
		DeleteFunc: func(any) { w.observe(name, nil) },
	})
	go inf.Run(wctx.Done())
}

// observe records the ExternalSecret's state.
func (w *sourceWatch) observe(name string, o any) {
	var es externalSecret
	reason := ""
	u, ok := o.(*unstructured.Unstructured)
	switch {
	case !ok:
		reason = fmt.Sprintf("ExternalSecret %s is gone", name)
	case runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &es) != nil:
		reason = fmt.Sprintf("ExternalSecret %s: unreadable status", name)
	default:
		ready := apimeta.FindStatusCondition(es.Status.Conditions, "Ready")
		store := es.Spec.SecretStoreRef.Kind + "/" + es.Spec.SecretStoreRef.Name
		switch {
		case ready == nil:
			reason = fmt.Sprintf("ExternalSecret %s not synced yet from %s", name, store)
		case ready.Status != metav1.ConditionTrue:
			reason = fmt.Sprintf("ExternalSecret %s not synced from %s: %s: %s", name, store, ready.Reason, ready.Message)
		}
		if !es.Status.RefreshTime.IsZero() {
			externalSecretRefresh.WithLabelValues(w.secret, name).Set(float64(es.Status.RefreshTime.Unix()))
		}
		if reason != "" {
			w.log.Error(fmt.Errorf("%s", reason), "token source failing", "secret", w.secret, "externalsecret", name, "store", store)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if name != w.name {
		return // a watch being replaced
	}
	if reason == "" && w.reason != "" {
		w.log.Info("token source synced", "secret", w.secret, "externalsecret", name)
	}
	w.synced, w.reason = true, reason
	externalSecretReady.WithLabelValues(w.secret, name).Set(map[bool]float64{true: 1, false: 0}[reason == ""])
}

// ready returns why the token's source is not ready, nil when it is or there is none.
func (w *sourceWatch) ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.reason != "" {
		return fmt.Errorf("%s", w.reason)
	}
	return nil
}

func (w *sourceWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		w.cancel()
	}
}
