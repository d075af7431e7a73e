package gitops

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// ErrUnavailable wraps failures to reach a cluster's API server: the request may succeed
// if retried later.
var ErrUnavailable = errors.New("kubernetes api unavailable")

// EventSource is the reporting controller of the Kubernetes Events flux-webhook records.
const EventSource = "flux-webhook"

const (
	// probeInterval is how often each cluster's API server is asked /readyz, for the
	// flux_webhook_cluster_up metric and a log line when a cluster goes down or comes back.
	probeInterval = 10 * time.Second
	// probeTimeout bounds one probe.
	probeTimeout = 5 * time.Second
)

var clusterUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "flux_webhook_cluster_up",
	Help: "1 when the cluster's API server answered its last readiness probe and its caches are synced.",
}, []string{"cluster", "region"})

func init() { metrics.Registry.MustRegister(clusterUp) }

// Cluster is one Kubernetes cluster whose Flux objects flux-webhook requests and watches:
// its cache (with the field indexes of SetupIndexes), a client that writes through the API
// server, an uncached reader for conflict retries, and an event recorder.
type Cluster struct {
	Name   string
	Region string
	cluster.Cluster
	events recorder.EventRecorder

	synced atomic.Bool
	up     atomic.Bool
	// locks serialise the requests of one replica on one object: concurrent deliveries of
	// a burst then queue for a few milliseconds instead of failing each other's optimistic
	// locks. Striped: bounded memory whatever the number of objects.
	locks [lockStripes]sync.Mutex
	// written keeps the metadata this replica last wrote per object (from the patch's
	// answer), fresher than the cache right after a write: the next request of a burst starts
	// from it, and recognises a repeat without a call.
	written *lru.Cache
	// keys seal and open the request records (RecordMACAnnotation); rejections remembers the
	// rejected records already counted and logged.
	keys       Keys
	rejections *lru.Cache
	stop       context.CancelFunc // remote clusters: stops their cache
	done       chan struct{}      // remote clusters: closed when the cache stopped
}

// writtenEntries bounds Cluster.written: the objects of the pushes of the last seconds.
const writtenEntries = 1024

// lockStripes is the number of per-object locks of a cluster: collisions only make two
// objects' requests wait for each other briefly.
const lockStripes = 64

// lock locks the stripe of one object and returns its unlock.
func (c *Cluster) lock(o client.Object) func() {
	h := fnv.New32a()
	h.Write([]byte(kindOf(o) + "/" + o.GetNamespace() + "/" + o.GetName()))
	m := &c.locks[h.Sum32()%lockStripes]
	m.Lock()
	return m.Unlock
}

// rejectionEntries bounds Cluster.rejections: rejected records already reported.
const rejectionEntries = 4096

// NewCluster wraps a controller-runtime cluster (a manager is one) whose cache the caller
// starts; run Watch beside it. keys seal and open its request records.
func NewCluster(name, region string, c cluster.Cluster, keys Keys) *Cluster {
	return &Cluster{Name: name, Region: region, Cluster: c, events: c.GetEventRecorder(EventSource), written: lru.New(writtenEntries),
		keys: keys, rejections: lru.New(rejectionEntries)}
}

// NewRemoteCluster builds a cluster from a kubeconfig's rest.Config, with a cache of the
// Flux kinds only and the field indexes set up. Start it with Run.
func NewRemoteCluster(ctx context.Context, name, region string, cfg *rest.Config, keys Keys) (*Cluster, error) {
	c, err := cluster.New(cfg, func(o *cluster.Options) {
		o.Scheme = NewScheme()
		o.Cache = cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ReaderFailOnMissingInformer: true}
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	if err := SetupIndexes(ctx, c.GetFieldIndexer()); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	return NewCluster(name, region, c, keys), nil
}

// Run starts a remote cluster's cache and its Watch in the background, until Stop.
func (c *Cluster) Run(ctx context.Context) {
	ctx, c.stop = context.WithCancel(ctx)
	c.done = make(chan struct{})
	go func() {
		defer close(c.done)
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := c.Cluster.Start(ctx); err != nil {
				log.FromContext(ctx).Error(err, "cluster cache stopped", "cluster", c.Name)
			}
		})
		wg.Go(func() { c.Watch(ctx) })
		wg.Wait()
	}()
}

// Stop stops a remote cluster's cache and waits for it.
func (c *Cluster) Stop() {
	if c.stop == nil {
		return
	}
	c.stop()
	<-c.done
	clusterUp.DeleteLabelValues(c.Name, c.Region)
}

// Watch waits for the cluster's caches to sync, then probes its API server every
// probeInterval until ctx ends, keeping Ready and the flux_webhook_cluster_up metric true
// and logging when the cluster goes down or comes back.
func (c *Cluster) Watch(ctx context.Context) {
	logger := log.FromContext(ctx).WithValues("cluster", c.Name, "region", c.Region)
	clusterUp.WithLabelValues(c.Name, c.Region).Set(0)
	// The counters alerts rate() start at 0, not absent, for each cluster.
	statusesLost.WithLabelValues(c.Name)
	statusPostErrors.WithLabelValues(c.Name)
	for _, reason := range []string{RejectedMAC, RejectedMalformed, RejectedRepository} {
		recordsRejected.WithLabelValues(c.Name, reason)
	}
	if !c.GetCache().WaitForCacheSync(ctx) {
		return
	}
	c.synced.Store(true)
	logger.Info("cluster caches synced")
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		err := c.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		up := err == nil
		if was := c.up.Swap(up); was != up {
			if up {
				logger.Info("cluster reachable")
			} else {
				logger.Error(err, "cluster unreachable")
			}
		}
		clusterUp.WithLabelValues(c.Name, c.Region).Set(map[bool]float64{true: 1, false: 0}[up])
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe asks the API server whether it is ready.
func (c *Cluster) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.GetConfig().Host+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := c.GetHTTPClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz answered %d", resp.StatusCode)
	}
	return nil
}

// Ready reports whether the cluster's caches have synced: requests skip a cluster that
// never answered.
func (c *Cluster) Ready() bool { return c.synced.Load() }

// LocalWatch runs Watch on the local cluster, whose cache the manager starts, as a manager
// Runnable on every replica.
type LocalWatch struct{ *Cluster }

// Start watches until ctx ends.
func (w LocalWatch) Start(ctx context.Context) error {
	w.Watch(ctx)
	return nil
}

// NeedLeaderElection is false: every replica needs to know its clusters are up.
func (w LocalWatch) NeedLeaderElection() bool { return false }

// ClusterSet is the set of clusters requests fan out to: the local one, and remote ones
// added, changed and removed at run time.
type ClusterSet struct {
	mu       sync.RWMutex
	clusters map[string]*Cluster
	changed  chan struct{} // closed and replaced on every change
}

// NewClusterSet returns a set holding the given clusters.
func NewClusterSet(cs ...*Cluster) *ClusterSet {
	s := &ClusterSet{clusters: map[string]*Cluster{}, changed: make(chan struct{})}
	for _, c := range cs {
		s.clusters[c.Name] = c
	}
	return s
}

// Clusters returns the clusters of the set, by name.
func (s *ClusterSet) Clusters() []*Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Cluster, 0, len(s.clusters))
	for _, c := range s.clusters {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Cluster) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// cachedObject reads a target's object, of one of the Flux kinds, from the cluster's cache.
func (c *Cluster) cachedObject(ctx context.Context, t Target) (client.Object, error) {
	obj := newObject(t.Kind)
	if obj == nil {
		return nil, fmt.Errorf("%s: not a Flux kind", t)
	}
	if err := c.GetCache().Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Name}, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// sourceURL returns the URL of the GitRepository o is, or builds from (through its
// HelmChart for a HelmRelease), as the cluster's cache has it; "" when it has none.
func (c *Cluster) sourceURL(ctx context.Context, o client.Object) (string, error) {
	if repo, ok := o.(*sourcev1.GitRepository); ok {
		return repo.Spec.URL, nil
	}
	gitRef, chartRef := sourceRefs(o)
	if chartRef != nil {
		hc := &sourcev1.HelmChart{}
		if err := c.GetCache().Get(ctx, *chartRef, hc); err != nil {
			return "", err
		}
		gitRef, _ = sourceRefs(hc)
	}
	if gitRef == nil {
		return "", nil
	}
	src := &sourcev1.GitRepository{}
	if err := c.GetCache().Get(ctx, *gitRef, src); err != nil {
		return "", err
	}
	return src.Spec.URL, nil
}

// Get returns the named cluster, or nil.
func (s *ClusterSet) Get(name string) *Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clusters[name]
}

// Changed returns a channel closed at the next change of the set.
func (s *ClusterSet) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Put adds a cluster, replacing (and stopping) one of the same name. It returns false, and
// leaves the set alone, when that name is one the set does not let go of (the local cluster).
func (s *ClusterSet) Put(c *Cluster) bool {
	s.mu.Lock()
	old := s.clusters[c.Name]
	if old != nil && old.stop == nil {
		s.mu.Unlock()
		return false
	}
	s.clusters[c.Name] = c
	s.notifyLocked()
	s.mu.Unlock()
	if old != nil {
		old.Stop()
	}
	return true
}

// Remove removes and stops a remote cluster; the local cluster stays.
func (s *ClusterSet) Remove(name string) {
	s.mu.Lock()
	c := s.clusters[name]
	if c == nil || c.stop == nil {
		s.mu.Unlock()
		return
	}
	delete(s.clusters, name)
	s.notifyLocked()
	s.mu.Unlock()
	c.Stop()
}

func (s *ClusterSet) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// unavailable reports whether err means the API server could not be reached or could not
// answer now, as opposed to refusing the request.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		switch status.Status().Code {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
