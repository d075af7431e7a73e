package report

import (
	"context"
	"fmt"
	"sync"

	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
)

// observed is a reporter's source: one handler on the informer of each kind the cluster
// serves, which witnesses the records (Cluster.Witness) and maps each change to the targets
// to look at. Once its handlers have seen the whole cache, the cluster's witness stands aside
// (reporting): an informer's handler costs it a ring of 1,024 notifications (16 KiB) and two
// goroutines, and both did the same reading of every change. A handler's registration
// replays the cache, so neither misses the newest record of an object when the other takes
// over.
type observed struct {
	r *Reporter

	mu      sync.Mutex
	synced  []toolscache.InformerSynced
	entered bool // in reporting
	stopped bool // its context ended
}

var _ source.TypedSyncingSource[api.Target] = (*observed)(nil)

func (s *observed) String() string { return "flux objects of cluster " + s.r.Cluster.Name }

// Start registers the handlers; they are removed when ctx ends.
func (s *observed) Start(ctx context.Context, q workqueue.TypedRateLimitingInterface[api.Target]) error {
	c := s.r.Cluster
	var (
		regs []toolscache.ResourceEventHandlerRegistration
		infs []cache.Informer
	)
	for _, k := range c.Kinds() {
		inf, err := c.GetCache().GetInformer(ctx, k.New(), cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("informer of %s: %w", k.Name(), err)
		}
		reg, err := inf.AddEventHandler(s.handler(ctx, k, s.r.enqueue(k), q))
		if err != nil {
			return fmt.Errorf("handler of %s: %w", k.Name(), err)
		}
		regs, infs = append(regs, reg), append(infs, inf)
	}
	s.mu.Lock()
	for _, reg := range regs {
		s.synced = append(s.synced, reg.HasSynced)
	}
	s.mu.Unlock()
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		if s.entered {
			reporting.leave(c)
		}
		s.stopped = true
		s.mu.Unlock()
		for i, reg := range regs {
			_ = infs[i].RemoveEventHandler(reg)
		}
	})
	return nil
}

// WaitForSync waits until every handler has seen the cache's objects, then lets the
// cluster's witness stand aside.
func (s *observed) WaitForSync(ctx context.Context) error {
	s.mu.Lock()
	synced := s.synced
	s.mu.Unlock()
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("cluster %s: %w", s.r.Cluster.Name, ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped && !s.entered {
		s.entered = true
		reporting.enter(s.r.Cluster)
	}
	return nil
}

// handler adapts h, the reporter's mapping of kind k's events to targets, to an informer's
// handler that witnesses every object first.
func (s *observed) handler(ctx context.Context, k flux.Kind, h handler.TypedEventHandler[client.Object, api.Target],
	q workqueue.TypedRateLimitingInterface[api.Target]) toolscache.ResourceEventHandler {
	c := s.r.Cluster
	return toolscache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(o any, initial bool) {
			if obj, ok := o.(client.Object); ok {
				c.Witness(k.Name(), obj)
				h.Create(ctx, event.TypedCreateEvent[client.Object]{Object: obj, IsInInitialList: initial}, q)
			}
		},
		UpdateFunc: func(old, o any) {
			before, ok1 := old.(client.Object)
			obj, ok2 := o.(client.Object)
			if ok1 && ok2 {
				c.Witness(k.Name(), obj)
				h.Update(ctx, event.TypedUpdateEvent[client.Object]{ObjectOld: before, ObjectNew: obj}, q)
			}
		},
		DeleteFunc: func(o any) {
			unknown := false
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o, unknown = d.Obj, true
			}
			if obj, ok := o.(client.Object); ok {
				h.Delete(ctx, event.TypedDeleteEvent[client.Object]{Object: obj, DeleteStateUnknown: unknown}, q)
			}
		},
	}
}

// reporting is the set of clusters whose reporter's handlers witness the records in this
// process: the witness of such a cluster stands aside (witness).
var reporting = &reporters{n: map[*cluster.Cluster]int{}, changed: make(chan struct{})}

type reporters struct {
	mu      sync.Mutex
	n       map[*cluster.Cluster]int
	changed chan struct{} // closed (and replaced) when a cluster enters or leaves
}

func (r *reporters) enter(c *cluster.Cluster) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[c]++
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *reporters) leave(c *cluster.Cluster) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n[c]--; r.n[c] <= 0 {
		delete(r.n, c)
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// of reports whether c's reporter witnesses its records, and returns a channel closed at
// the next change of the set.
func (r *reporters) of(c *cluster.Cluster) (bool, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[c] > 0, r.changed
}
