package cluster

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// Labels of the Secrets that register clusters.
const (
	// ClusterLabel marks a Secret holding a kubeconfig; its value is the cluster's name.
	ClusterLabel = "flux-webhook.openova.io/cluster"
	// RegionLabel optionally names the cluster's region.
	RegionLabel = "flux-webhook.openova.io/region"
)

// kubeconfigKeys are the keys a cluster Secret holds its kubeconfig under: "kubeconfig", or
// "config" as vcluster writes it into its vc-<name> Secrets.
var kubeconfigKeys = []string{"kubeconfig", "config"}

var _ manager.LeaderElectionRunnable = (*Secrets)(nil)

var clustersRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_clusters_refused_total",
	Help: "Cluster Secrets not registered, by reason: a kubeconfig category not allowed (exec, files, tls, ...), an invalid kubeconfig or name.",
}, []string{"reason"})

func init() { metrics.Registry.MustRegister(clustersRefused) }

// Secrets watches the Secrets of one namespace labelled ClusterLabel and keeps a
// ClusterSet's remote clusters in step with them: a cluster added, changed or removed takes
// effect without a restart, each with its own cache started and stopped.
type Secrets struct {
	Client    kubernetes.Interface
	Namespace string
	Clusters  *Set
	// QPS and Burst bound each remote cluster's client.
	QPS   float32
	Burst int
	// DiscoveryInterval is each remote cluster's (Cluster.DiscoveryInterval).
	DiscoveryInterval time.Duration
	// MaxObjects caps the Flux objects cached of each registered cluster (Cluster.MaxObjects;
	// DefaultMaxObjects when zero): a cluster over it is unregistered, and tried again after
	// tooManyRetry.
	MaxObjects int
	// TooManyRetry is how long a cluster over MaxObjects waits before it is counted again;
	// tooManyRetry when zero.
	TooManyRetry time.Duration
	// Keys seal and open the request records of the clusters' objects.
	Keys Keys
	// Policy says which risky kubeconfig categories are allowed (none by default).
	Policy KubeconfigPolicy
	// DefaultGrant is the grant (ParseGrant; ClusterPlaceholder stands for the cluster's
	// name) of a cluster whose Secret has no RepositoriesAnnotation; "" grants none: the
	// cluster follows public repositories only. Check it with CheckDefaultGrant.
	DefaultGrant string
	// Events records a refusal on the Secret (the local cluster's recorder); optional.
	Events recorder.EventRecorder
	// EventWriter, when set, writes the registered clusters' Events
	// (Cluster.WriteEventsWith).
	EventWriter *EventWriter
	Log         logr.Logger

	mu      sync.Mutex
	running map[string]registered // by Secret name
	secrets toolscache.Store      // the informer's: a Secret is read again from it to retry
}

type registered struct {
	cluster string
	digest  [32]byte
	c       *Cluster
	grant   grantSource
}

// grantSource is where a cluster's grant came from: the Secret's annotation (as written),
// or the default.
type grantSource struct {
	annotated bool
	value     string
}

// tooManyRetry is how long a cluster unregistered for holding too many Flux objects waits
// before it is counted again (a few list calls of one object each).
const tooManyRetry = time.Minute

// NeedLeaderElection is false: every replica needs every cluster's cache to serve /hook.
func (w *Secrets) NeedLeaderElection() bool { return false }

// Start follows the Secrets until ctx ends, then stops the remote clusters.
func (w *Secrets) Start(ctx context.Context) error {
	w.running = map[string]registered{}
	for _, reason := range append([]string{"invalid-name", "no-kubeconfig", "invalid-kubeconfig", reasonTooManyObjects}, KubeconfigCategories...) {
		clustersRefused.WithLabelValues(reason) // 0, not absent, for alerts
	}
	lw := toolscache.NewFilteredListWatchFromClient(w.Client.CoreV1().RESTClient(), "secrets", w.Namespace,
		func(o *metav1.ListOptions) { o.LabelSelector = ClusterLabel })
	inf := toolscache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, toolscache.Indexers{})
	w.secrets = inf.GetStore()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.apply(ctx, o) },
		UpdateFunc: func(_, o any) { w.apply(ctx, o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if s, ok := o.(*corev1.Secret); ok {
				w.remove(s.Name)
			}
		},
	}); err != nil {
		return fmt.Errorf("watch cluster secrets: %w", err)
	}
	inf.Run(ctx.Done())
	w.mu.Lock()
	for name := range w.running {
		w.removeLocked(name)
	}
	w.mu.Unlock()
	return nil
}

// apply registers or updates the cluster of one Secret.
func (w *Secrets) apply(ctx context.Context, o any) {
	s, ok := o.(*corev1.Secret)
	if !ok {
		return
	}
	logger := w.Log.WithValues("secret", s.Namespace+"/"+s.Name)
	name, region := s.Labels[ClusterLabel], s.Labels[RegionLabel]
	var kubeconfig []byte
	for _, k := range kubeconfigKeys {
		if v := s.Data[k]; len(v) > 0 {
			kubeconfig = v
			break
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		w.refuse(s, "invalid-name", fmt.Errorf("label %s=%q: %s", ClusterLabel, printableName(name), errs[0]))
		return
	}
	if len(kubeconfig) == 0 {
		w.refuse(s, "no-kubeconfig", errors.New("no kubeconfig under key kubeconfig or config"))
		return
	}
	digest := sha256.Sum256(append([]byte(name+"\x00"+region+"\x00"), kubeconfig...))
	src := grantSource{}
	src.value, src.annotated = s.Annotations[RepositoriesAnnotation]
	if cur, ok := w.running[s.Name]; ok && cur.digest == digest {
		// A resync, or a change of something else: the grant, taken at once by the running
		// cluster (its next push), without a restart of its cache.
		if cur.grant != src {
			if c := w.Clusters.Get(name); c != nil {
				old := c.GrantString()
				c.SetGrant(w.grant(s, name, src))
				cur.grant = src
				w.running[s.Name] = cur
				logger.Info("cluster grant changed", "cluster", name, "repositories", c.GrantString(), "before", old)
			}
		}
		return
	}
	// Checked before anything is connected to or read: no exec plugin, no file path, no
	// proxy, no impersonation, TLS verified, unless the operator allowed the category.
	cfg, err := w.Policy.RESTConfig(kubeconfig)
	if err != nil {
		reason := "invalid-kubeconfig"
		var refused *KubeconfigRefusedError
		if errors.As(err, &refused) {
			reason = refused.Category
		}
		w.refuse(s, reason, err)
		return
	}
	cfg.QPS, cfg.Burst = w.QPS, w.Burst
	c, err := NewRemote(name, region, cfg, w.Keys)
	if err != nil {
		logger.Error(err, "ignoring cluster secret", "cluster", name)
		w.removeLocked(s.Name)
		return
	}
	if w.EventWriter != nil {
		c.WriteEventsWith(w.EventWriter)
	}
	c.DiscoveryInterval = w.DiscoveryInterval
	c.MaxObjects = cmp.Or(w.MaxObjects, DefaultMaxObjects)
	c.TooMany = func(err error) { w.tooMany(ctx, s, c, err) }
	c.SetGrant(w.grant(s, name, src))
	if cur, ok := w.running[s.Name]; ok && cur.cluster != name {
		w.removeLocked(s.Name) // the Secret now names another cluster
	}
	c.Run(log.IntoContext(ctx, w.Log))
	if !w.Clusters.Put(c) {
		c.Stop()
		logger.Error(fmt.Errorf("cluster %q is this cluster's own name", name), "ignoring cluster secret")
		return
	}
	w.running[s.Name] = registered{cluster: name, digest: digest, c: c, grant: src}
	logger.Info("cluster registered", "cluster", name, "region", region, "server", cfg.Host, "repositories", c.GrantString())
}

// grant returns the grant of a Secret's cluster: its annotation's, else the default. An
// annotation that does not parse grants none (the cluster follows public repositories
// only): logged and recorded as an Event on the Secret, never widened to the default.
func (w *Secrets) grant(s *corev1.Secret, cluster string, src grantSource) Grant {
	if !src.annotated {
		g, err := DefaultGrant(w.DefaultGrant, cluster)
		if err != nil { // checked at start: not reached
			w.Log.Error(err, "default grant refused: public repositories only", "cluster", cluster)
		}
		return g
	}
	g, err := ParseGrant(src.value)
	if err != nil {
		w.Log.Error(err, "cluster grant refused: public repositories only", "secret", s.Namespace+"/"+s.Name, "cluster", cluster,
			"annotation", RepositoriesAnnotation)
		if w.Events != nil {
			w.Events.Eventf(s, nil, corev1.EventTypeWarning, "GrantRefused", "RegisterCluster",
				"annotation %s: %s: the cluster follows public repositories only", RepositoriesAnnotation, err.Error())
		}
	}
	return g
}

// refuse leaves a Secret's cluster unregistered (stopping it if it ran): the reason is
// logged, counted and recorded as an Event on the Secret.
func (w *Secrets) refuse(s *corev1.Secret, reason string, err error) {
	clustersRefused.WithLabelValues(reason).Inc()
	w.Log.Error(err, "cluster secret refused: not registered", "secret", s.Namespace+"/"+s.Name, "reason", reason)
	if w.Events != nil {
		w.Events.Eventf(s, nil, corev1.EventTypeWarning, "ClusterRefused", "RegisterCluster", "not registered: %s", err.Error())
	}
	w.removeLocked(s.Name)
}

// reasonTooManyObjects is the refusal reason of a cluster over its object cap.
const reasonTooManyObjects = "too-many-objects"

// tooMany unregisters c, the cluster of Secret s, which holds more Flux objects than a
// cluster may have cached (its cache stops, and its memory goes with it): logged, counted
// and recorded as an Event on the Secret, as any refusal. The Secret is tried again after
// tooManyRetry.
func (w *Secrets) tooMany(ctx context.Context, s *corev1.Secret, c *Cluster, err error) {
	w.mu.Lock()
	if cur, ok := w.running[s.Name]; !ok || cur.c != c {
		w.mu.Unlock()
		return // replaced or removed meanwhile
	}
	retry := cmp.Or(w.TooManyRetry, tooManyRetry)
	w.refuse(s, reasonTooManyObjects, fmt.Errorf("%w; flux-webhook keeps no cache of it and counts again in %s", err, retry))
	w.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(retry):
		if o, ok, _ := w.secrets.Get(s); ok {
			w.apply(ctx, o)
		}
	}
}

func (w *Secrets) remove(secret string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(secret)
}

func (w *Secrets) removeLocked(secret string) {
	cur, ok := w.running[secret]
	if !ok {
		return
	}
	delete(w.running, secret)
	w.Clusters.Remove(cur.cluster)
	w.Log.Info("cluster removed", "cluster", cur.cluster, "secret", w.Namespace+"/"+secret)
}
