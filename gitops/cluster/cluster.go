// Package cluster is flux-webhook's view of the clusters it requests and watches: its own
// and those registered by kubeconfig Secrets (checked before any connection), each with a
// cache of the Flux kinds it serves (discovered, and picked up when a CRD appears), a health
// probe, and the primitives every writer uses: a metadata-only patch with an optimistic
// lock, and the request records sealed and opened with the record key.
package cluster

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

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/internal/credentials"
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
	// discoveryInterval is how often a cluster is asked which Flux kinds it serves: a CRD
	// installed later is picked up within it, without a restart. Three discovery calls
	// a cluster per interval.
	discoveryInterval = time.Minute
)

var (
	clusterUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flux_webhook_cluster_up",
		Help: "1 when the cluster's API server answered its last readiness probe and its caches are synced.",
	}, []string{"cluster", "region"})
	kindServed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flux_webhook_kind_served",
		Help: "1 when the cluster serves a Flux kind at the version flux-webhook reads, 0 when it serves it only at another version (see the log), absent when not at all.",
	}, []string{"cluster", "kind"})
)

func init() { metrics.Registry.MustRegister(clusterUp, kindServed) }

// Keys holds the record key: the current value seals, every valid one opens.
type Keys interface {
	Current(p credentials.Purpose) []byte
	Values(p credentials.Purpose) [][]byte
}

// Cluster is one Kubernetes cluster whose Flux objects flux-webhook requests and watches:
// its cache (with the field indexes of the kinds it serves), a client that writes through
// the API server, an uncached reader for conflict retries, and an event recorder.
type Cluster struct {
	Name   string
	Region string
	// DiscoveryInterval is how often the cluster is asked which Flux kinds it serves (a CRD
	// installed later is picked up then); zero means discoveryInterval. Set before Watch.
	DiscoveryInterval time.Duration
	// MaxObjects, when positive, caps the Flux objects cached of the cluster: before a kind's
	// objects are listed the API server is asked how many there are, and the cache's are
	// counted at every probe; beyond it TooMany is called (once, with ErrTooManyObjects), and
	// the kinds not listed yet are not. Set both before Watch.
	MaxObjects int
	TooMany    func(error)
	cluster.Cluster
	events recorder.EventRecorder
	// eventWriter, when set (WriteEventsWith), writes events instead of controller-runtime's
	// recorder.
	eventWriter *EventWriter

	synced atomic.Bool
	up     atomic.Bool
	// grant is what the cluster follows besides public repositories (Follows); nil: every
	// repository (the local cluster). Registered clusters always have one.
	grant atomic.Pointer[Grant]
	// locks serialise the requests of one replica on one object: concurrent deliveries of
	// a burst then queue for a few milliseconds instead of failing each other's optimistic
	// locks. Striped: bounded memory whatever the number of objects.
	locks [lockStripes]sync.Mutex
	// written keeps the metadata this replica last wrote per object (from the patch's
	// answer), fresher than the cache right after a write: the next request of a burst starts
	// from it, and recognises a repeat without a call (writtenEntry); writtenMu orders its
	// updates.
	written   *lru.Cache
	writtenMu sync.Mutex
	// keys seal and open the request records; rejections remembers the rejected records
	// already counted and logged.
	keys       Keys
	rejections *lru.Cache
	// seals remembers the newest request record seen on each object (records.go), so an
	// older one put back is known for what it is; sealsMu orders its updates.
	seals   *lru.Cache
	sealsMu sync.Mutex
	// served are the kinds the cluster serves, indexed in its cache; kindsChanged is closed
	// (and replaced) when they change.
	mu           sync.Mutex
	served       []flux.Kind
	unusable     []string // kinds served only at another version, and why
	kindsChanged chan struct{}
	stop         context.CancelFunc // remote clusters: stops their cache
	done         chan struct{}      // remote clusters: closed when the cache stopped

	objects    objects
	requesting requesting
	// budgetClients are the clients of each Budget, made on first use (budgetClient).
	budgetOnce    sync.Once
	budgetClients [budgets]client.Client
	budgetErr     error
}

// writtenEntries bounds Cluster.written: the objects of the pushes of the last seconds.
const writtenEntries = 1024

// lockStripes is the number of per-object locks of a cluster: collisions only make two
// objects' requests wait for each other briefly.
const lockStripes = 64

// rejectionEntries bounds Cluster.rejections: rejected records already reported.
const rejectionEntries = 4096

// sealEntries bounds Cluster.seals, the newest record seen per object: about 150 bytes each
// (a digest of the object's identity, a time, a resource version), 7 MiB for a cluster of
// 50,000 objects that carry records, more than a region's cluster holds. Beyond it the least
// recently seen objects are forgotten: an old record put back on one of those is taken as
// found.
const sealEntries = 50000

// Lock locks the stripe of one object and returns its unlock.
func (c *Cluster) Lock(ref flux.Ref) func() {
	h := fnv.New32a()
	h.Write([]byte(ref.String()))
	m := &c.locks[h.Sum32()%lockStripes]
	m.Lock()
	return m.Unlock
}

// Events returns the cluster's event recorder.
func (c *Cluster) Events() recorder.EventRecorder { return c.events }

// writtenEntry is what this replica last wrote on an object: by any write (the base of the
// next patch), and by the request path (what a repeat is recognised from, as before the
// reporter's writes were remembered: a second delivery of a push that finished meanwhile
// stays a repeat).
type writtenEntry struct {
	last, request *metav1.PartialObjectMetadata
}

func (c *Cluster) writtenEntry(ref flux.Ref) writtenEntry {
	if w, ok := c.written.Get(ref); ok {
		return w.(writtenEntry)
	}
	return writtenEntry{}
}

// Written returns what this replica last wrote on an object, by any write, nil when not
// known.
func (c *Cluster) Written(ref flux.Ref) *metav1.PartialObjectMetadata {
	return c.writtenEntry(ref).last
}

// Requested returns what this replica's request path last wrote on an object, nil when not
// known.
func (c *Cluster) Requested(ref flux.Ref) *metav1.PartialObjectMetadata {
	return c.writtenEntry(ref).request
}

// Wrote remembers what this replica wrote on an object (nil: forget it, and its request).
func (c *Cluster) Wrote(ref flux.Ref, m *metav1.PartialObjectMetadata) {
	c.writtenMu.Lock()
	defer c.writtenMu.Unlock()
	if m == nil {
		c.written.Remove(ref)
		return
	}
	e := c.writtenEntry(ref)
	e.last = m.DeepCopy()
	c.written.Add(ref, e)
}

// WroteRequest remembers m, which Wrote remembered, as the request path's last write too.
func (c *Cluster) WroteRequest(ref flux.Ref, m *metav1.PartialObjectMetadata) {
	c.writtenMu.Lock()
	defer c.writtenMu.Unlock()
	e := c.writtenEntry(ref)
	switch {
	case e.last != nil && e.last.ResourceVersion == m.ResourceVersion:
		e.request = e.last
	case e.last == nil:
		e.request = m.DeepCopy()
		e.last = e.request
	default: // another write came after m: it stays the base
		e.request = m.DeepCopy()
	}
	c.written.Add(ref, e)
}

// New wraps a controller-runtime cluster (a manager is one) whose cache the caller starts;
// run Watch beside it. keys seal and open its request records.
func New(name, region string, c cluster.Cluster, keys Keys) *Cluster {
	return &Cluster{Name: name, Region: region, Cluster: c, events: c.GetEventRecorder(EventSource), written: lru.New(writtenEntries),
		keys: keys, rejections: lru.New(rejectionEntries), seals: lru.New(sealEntries), kindsChanged: make(chan struct{})}
}

// NewRemote builds a cluster from a kubeconfig's rest.Config, with a cache of the Flux kinds
// only. Start it with Run. Its responses are not gzip-compressed (DisableCompression): a
// region's clusters are near, and each open watch held a gzip reader of 43 KiB besides the
// CPU of compressing every event on the API server and inflating it here. Its scheme and
// the mappings of the kinds it reads are shared with every other cluster.
func NewRemote(name, region string, cfg *rest.Config, keys Keys) (*Cluster, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.DisableCompression = true
	c, err := cluster.New(cfg, func(o *cluster.Options) {
		o.Scheme = flux.SharedScheme()
		o.MapperProvider = newMapper
		o.Cache = CacheOptions(name)
	})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	return New(name, region, c, keys), nil
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
	if c.eventWriter != nil {
		c.eventWriter.forget(c)
	}
	clusterUp.DeleteLabelValues(c.Name, c.Region)
	clusterObjects.DeleteLabelValues(c.Name)
	kindServed.DeletePartialMatch(prometheus.Labels{"cluster": c.Name})
}

// Watch finds the Flux kinds the cluster serves and sets up their indexes, waits for its
// caches to sync, then probes its API server every probeInterval (and its kinds every
// discoveryInterval) until ctx ends, keeping Ready and the flux_webhook_cluster_up metric
// true and logging when the cluster goes down or comes back.
func (c *Cluster) Watch(ctx context.Context) {
	logger := log.FromContext(ctx).WithValues("cluster", c.Name, "region", c.Region)
	ctx = log.IntoContext(ctx, logger)
	clusterUp.WithLabelValues(c.Name, c.Region).Set(0)
	initMetrics(c.Name)
	disco, err := discovery.NewDiscoveryClientForConfigAndClient(c.GetConfig(), c.GetHTTPClient())
	if err != nil {
		logger.Error(err, "cluster discovery")
		return
	}
	end := beginListing()
	for c.discover(ctx, disco) != nil {
		end()
		select {
		case <-ctx.Done():
			return
		case <-time.After(probeInterval):
		}
		end = beginListing()
	}
	synced := c.GetCache().WaitForCacheSync(ctx)
	end()
	if !synced {
		return
	}
	c.synced.Store(true)
	logger.Info("cluster caches synced", "kinds", c.kindNames())
	every := c.DiscoveryInterval
	if every <= 0 {
		every = discoveryInterval
	}
	probe, rediscover := time.NewTicker(probeInterval), time.NewTicker(every)
	defer probe.Stop()
	defer rediscover.Stop()
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
		if err := c.count(ctx); err != nil && ctx.Err() == nil {
			logger.Error(err, "count cached objects")
		}
		select {
		case <-ctx.Done():
			return
		case <-probe.C:
		case <-rediscover.C:
			if err := c.discover(ctx, disco); err != nil && ctx.Err() == nil {
				logger.Error(err, "cluster discovery")
			}
		}
	}
}

// discover asks which Flux kinds the cluster serves at the version flux-webhook reads, and
// sets up the indexes (and so the informers) of those it did not serve before. A kind served
// only at another version is reported, not used.
func (c *Cluster) discover(ctx context.Context, disco discovery.DiscoveryInterface) error {
	logger := log.FromContext(ctx)
	served := map[string]bool{}     // "group/version/resource"
	groups := map[string][]string{} // group → versions served
	list, err := disco.ServerGroups()
	if err != nil {
		return fmt.Errorf("discover kinds: %w", err)
	}
	for _, g := range list.Groups {
		for _, v := range g.Versions {
			groups[g.Name] = append(groups[g.Name], v.Version)
		}
	}
	asked := map[string]bool{}
	for _, k := range flux.Kinds() {
		gv := k.Resource().GroupVersion()
		if asked[gv.String()] || !slices.Contains(groups[gv.Group], gv.Version) {
			continue
		}
		asked[gv.String()] = true
		rl, err := disco.ServerResourcesForGroupVersion(gv.String())
		if err != nil {
			return fmt.Errorf("discover kinds of %s: %w", gv, err)
		}
		for _, r := range rl.APIResources {
			served[gv.String()+"/"+r.Name] = true
		}
	}
	c.mu.Lock()
	have := slices.Clone(c.served)
	c.mu.Unlock()
	var added []flux.Kind
	var unusable []string
	for _, k := range flux.Kinds() {
		gvr := k.Resource()
		switch {
		case served[gvr.GroupVersion().String()+"/"+gvr.Resource]:
			kindServed.WithLabelValues(c.Name, k.Name()).Set(1)
			if !slices.Contains(have, k) {
				added = append(added, k)
			}
		case len(groups[gvr.Group]) > 0:
			kindServed.WithLabelValues(c.Name, k.Name()).Set(0)
			err := fmt.Errorf("%s served at %s only, flux-webhook reads %s: upgrade Flux",
				k.Name(), strings.Join(groups[gvr.Group], ", "), gvr.Version)
			unusable = append(unusable, err.Error())
			if !slices.Contains(c.Unusable(), err.Error()) { // once, not at every discovery
				logger.Error(err, "flux kind not usable", "kind", k.Name())
			}
		default:
			kindServed.DeleteLabelValues(c.Name, k.Name())
		}
	}
	c.mu.Lock()
	c.unusable = unusable
	c.mu.Unlock()
	if c.MaxObjects > 0 && len(added) > 0 {
		// Counted before they are listed: a cluster over its cap is not cached at all.
		n, err := c.precount(ctx, added)
		if err != nil {
			return err
		}
		if n += c.Objects(); n > c.MaxObjects {
			c.tooMany(n)
			return fmt.Errorf("%w: cluster %s holds more than %d", ErrTooManyObjects, c.Name, c.MaxObjects)
		}
	}
	if len(added) > 0 && c.synced.Load() {
		defer beginListing()() // a kind picked up later is listed now
	}
	for _, k := range added {
		if err := flux.SetupIndexes(ctx, c.GetFieldIndexer(), k); err != nil {
			return err
		}
	}
	if len(added) > 0 && c.synced.Load() {
		if !c.GetCache().WaitForCacheSync(ctx) {
			return ctx.Err()
		}
		for _, k := range added {
			logger.Info("flux kind picked up", "kind", k.Name())
		}
	}
	if len(added) > 0 {
		c.mu.Lock()
		c.served = slices.DeleteFunc(flux.Kinds(), func(k flux.Kind) bool { return !slices.Contains(have, k) && !slices.Contains(added, k) })
		close(c.kindsChanged)
		c.kindsChanged = make(chan struct{})
		c.mu.Unlock()
	}
	return nil
}

// Kinds returns the Flux kinds the cluster serves (and caches), in request order.
func (c *Cluster) Kinds() []flux.Kind {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.served)
}

// Unusable says which Flux kinds the cluster serves only at a version flux-webhook does not
// read (each with what to do), as of the last discovery.
func (c *Cluster) Unusable() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.unusable)
}

// KindsChanged returns a channel closed when the kinds the cluster serves change.
func (c *Cluster) KindsChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kindsChanged
}

func (c *Cluster) kindNames() []string {
	var out []string
	for _, k := range c.Kinds() {
		out = append(out, k.Name())
	}
	return out
}

// Serves reports whether the cluster serves (and caches) a kind.
func (c *Cluster) Serves(kind string) bool {
	return slices.ContainsFunc(c.Kinds(), func(k flux.Kind) bool { return k.Name() == kind })
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

// Object reads a target's object from the cluster's cache; an error for a kind the cluster
// does not serve.
func (c *Cluster) Object(ctx context.Context, t api.Target) (client.Object, error) {
	k, err := flux.Lookup(t.Kind)
	if err != nil {
		return nil, err
	}
	if !c.Serves(k.Name()) {
		return nil, fmt.Errorf("cluster %s does not serve %s", c.Name, k.Name())
	}
	obj := k.New()
	if err := c.GetCache().Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Name}, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// Dependents returns the cached objects of kind k that build from src (flux.IndexSource), as
// the cache holds them, without a copy of each: read them, never change them.
func (c *Cluster) Dependents(ctx context.Context, k flux.Kind, src flux.Ref) ([]client.Object, error) {
	inf, err := c.GetCache().GetInformer(ctx, k.New())
	if err != nil {
		return nil, err
	}
	if ix, ok := inf.(interface{ GetIndexer() toolscache.Indexer }); ok {
		// The field index as controller-runtime names it, for every namespace.
		if items, err := ix.GetIndexer().ByIndex("field:"+flux.IndexSource, "__all_namespaces/"+src.String()); err == nil {
			out := make([]client.Object, 0, len(items))
			for _, it := range items {
				if o, ok := it.(client.Object); ok {
					out = append(out, o)
				}
			}
			return out, nil
		}
	}
	list := k.NewList()
	if err := c.GetCache().List(ctx, list, client.MatchingFields{flux.IndexSource: src.String()}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	return flux.Items(list), nil
}

// Sources returns what o builds from, and what those build from, as far as the cluster's
// cache has them, by Ref.
func (c *Cluster) Sources(ctx context.Context, o client.Object) map[flux.Ref]client.Object {
	out := map[flux.Ref]client.Object{}
	var walk func(o client.Object)
	walk = func(o client.Object) {
		k, err := flux.KindFor(o)
		if err != nil {
			return
		}
		for _, ref := range k.Sources(o) {
			if _, ok := out[ref]; ok || !c.Serves(ref.Kind) {
				continue
			}
			sk, _ := flux.Lookup(ref.Kind)
			src := sk.New()
			if c.GetCache().Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, src) == nil {
				out[ref] = src
				walk(src)
			}
		}
	}
	walk(o)
	return out
}

// OriginURL returns the URL of the Git repository o's content comes from: its own origin,
// or its sources'.
func (c *Cluster) OriginURL(ctx context.Context, o client.Object) string {
	if k, err := flux.KindFor(o); err == nil {
		if u := k.Origin(o); u != "" {
			return u
		}
	}
	for _, src := range c.Sources(ctx, o) {
		if k, err := flux.KindFor(src); err == nil {
			if u := k.Origin(src); u != "" {
				return u
			}
		}
	}
	return ""
}

// Set is the set of clusters requests fan out to: the local one, and remote ones added,
// changed and removed at run time.
type Set struct {
	mu       sync.RWMutex
	clusters map[string]*Cluster
	changed  chan struct{} // closed and replaced on every change
}

// NewSet returns a set holding the given clusters.
func NewSet(cs ...*Cluster) *Set {
	s := &Set{clusters: map[string]*Cluster{}, changed: make(chan struct{})}
	for _, c := range cs {
		s.clusters[c.Name] = c
	}
	return s
}

// Clusters returns the clusters of the set, by name.
func (s *Set) Clusters() []*Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Cluster, 0, len(s.clusters))
	for _, c := range s.clusters {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Cluster) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Get returns the named cluster, or nil.
func (s *Set) Get(name string) *Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clusters[name]
}

// Changed returns a channel closed at the next change of the set.
func (s *Set) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// Put adds a cluster, replacing (and stopping) one of the same name. It returns false, and
// leaves the set alone, when that name is one the set does not let go of (the local cluster).
func (s *Set) Put(c *Cluster) bool {
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
func (s *Set) Remove(name string) {
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

func (s *Set) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Unavailable reports whether err means the API server could not be reached or could not
// answer now, as opposed to refusing the request.
func Unavailable(err error) bool {
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
