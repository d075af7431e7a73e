package request

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/tracing"
)

var _ manager.LeaderElectionRunnable = (*Worker)(nil)

const (
	// DefaultWorkers is how many objects of one cluster are patched at once: enough to
	// keep a client limited to 50 requests per second busy against an API server that
	// answers a patch in 20-100 ms.
	DefaultWorkers = 8
	// retryMin and retryMax bound the backoff of a cluster that could not be asked: it is
	// asked again until the result timeout has passed since the push, then its targets are
	// owed an error status.
	retryMin = time.Second
	retryMax = 30 * time.Second
	// maxOwedPerCluster bounds the error statuses one cluster's failure adds to a push
	// record (a ConfigMap): beyond it the targets are logged, their statuses lost.
	maxOwedPerCluster = 2000
)

// Worker requests the accepted pushes, on the leader: one queue per cluster, so that a slow
// or dead cluster holds no other back; in each cluster one push at a time, in the order they
// were accepted, its targets sources first, Workers at a time within the cluster's client
// limits. A push is done in a cluster once recorded so in its push record (the clusters that
// finish at once in one write, doneMarks); a leader that takes over works what is not done,
// and recognises (from each object's record) what its predecessor requested already.
type Worker struct {
	Clusters *cluster.Set
	Store    *record.PushStore
	// Client watches the push records (ConfigMaps of Store.Namespace).
	Client kubernetes.Interface
	// Workers is how many objects of one cluster are patched at once; DefaultWorkers when
	// zero.
	Workers int
	// ResultTimeout is how long a cluster that cannot be asked is waited for before its
	// targets are owed an error status.
	ResultTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu     sync.Mutex
	queues map[*cluster.Cluster]workqueue.TypedRateLimitingInterface[string]
	store  toolscache.Store
	// marks batches the clusters' done marks into few writes of each push record.
	marks doneMarks
	// finished remembers the pushes this worker recorded done in a cluster: every change of
	// a push record queues its key again in each cluster not done in the informer's copy,
	// which can be older than this worker's write; worked again, such a push found every
	// object requested already and logged and counted each target a second time (720
	// targets for 500 objects in a push into 50 clusters, benchmarks/README.md).
	finished *lru.Cache
}

// finishedEntries bounds Worker.finished: the clusters of the pushes of the last moments.
// One forgotten is only worked again, writing nothing.
const finishedEntries = 4096

// finishedKey is a push in a cluster, in Worker.finished.
type finishedKey struct{ cluster, push string }

func (w *Worker) markFinished(cluster, push string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished == nil {
		w.finished = lru.New(finishedEntries)
	}
	w.finished.Add(finishedKey{cluster, push}, struct{}{})
}

func (w *Worker) isFinished(cluster, push string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished == nil {
		return false
	}
	_, ok := w.finished.Get(finishedKey{cluster, push})
	return ok
}

// NeedLeaderElection is true: one replica requests each push.
func (w *Worker) NeedLeaderElection() bool { return true }

func (w *Worker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Start watches the push records and works them until ctx ends.
func (w *Worker) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("worker")
	ctx = log.IntoContext(ctx, logger)
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = record.PushLabel
			return w.Client.CoreV1().ConfigMaps(w.Store.Namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = record.PushLabel
			return w.Client.CoreV1().ConfigMaps(w.Store.Namespace).Watch(ctx, o)
		},
	}
	inf := toolscache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 0, toolscache.Indexers{})
	w.mu.Lock()
	w.queues = map[*cluster.Cluster]workqueue.TypedRateLimitingInterface[string]{}
	w.store = inf.GetStore()
	w.mu.Unlock()
	enqueue := func(o any) {
		cm, ok := o.(*corev1.ConfigMap)
		if !ok {
			return
		}
		rec, err := record.Decode(cm)
		if err != nil {
			return
		}
		for _, cw := range rec.Clusters {
			if cw.Done {
				continue
			}
			if c := w.Clusters.Get(cw.Cluster); c != nil {
				w.queue(ctx, c).Add(rec.Key())
			}
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, o any) { enqueue(o) },
	}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { inf.RunWithContext(ctx) })
	// A cluster added (or replaced) later gets the records that wait for it.
	wg.Go(func() {
		for {
			changed := w.Clusters.Changed()
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			w.prune()
			for _, o := range inf.GetStore().List() {
				enqueue(o)
			}
		}
	})
	<-ctx.Done()
	w.mu.Lock()
	for _, q := range w.queues {
		q.ShutDown()
	}
	w.mu.Unlock()
	wg.Wait()
	return nil
}

// queue returns a cluster's queue, starting its goroutine on first use.
func (w *Worker) queue(ctx context.Context, c *cluster.Cluster) workqueue.TypedRateLimitingInterface[string] {
	w.mu.Lock()
	defer w.mu.Unlock()
	if q, ok := w.queues[c]; ok {
		return q
	}
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryMin, retryMax),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "push-" + c.Name})
	w.queues[c] = q
	go func() {
		ctx := log.IntoContext(ctx, log.FromContext(ctx).WithValues("cluster", c.Name))
		for {
			key, shutdown := q.Get()
			if shutdown {
				return
			}
			var again bool
			var err error
			if rec := w.record(key); rec != nil {
				_, again, err = w.work(ctx, c, rec)
			}
			switch {
			case err != nil:
				log.FromContext(ctx).Error(err, "push not requested; retrying", "push", key)
				q.AddRateLimited(key)
			case again:
				q.AddRateLimited(key)
			default:
				q.Forget(key)
			}
			q.Done(key)
		}
	}()
	return q
}

// prune stops the queues of clusters no longer in the set.
func (w *Worker) prune() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c, q := range w.queues {
		if w.Clusters.Get(c.Name) != c {
			q.ShutDown()
			delete(w.queues, c)
		}
	}
}

// record returns the push record of key as last seen by the watch.
func (w *Worker) record(key string) *record.Push {
	w.mu.Lock()
	st := w.store
	w.mu.Unlock()
	o, ok, err := st.GetByKey(w.Store.Namespace + "/" + record.RecordName(key))
	if err != nil || !ok {
		return nil
	}
	rec, err := record.Decode(o.(*corev1.ConfigMap))
	if err != nil {
		return nil
	}
	return rec
}

// Request works the recorded push of key now, in every cluster it waits for, one cluster
// after the other, and returns each target's outcome: what the queues do, at once.
func (w *Worker) Request(ctx context.Context, key string) ([]api.Outcome, error) {
	rec, err := w.Store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	var all []api.Outcome
	for _, cw := range rec.Clusters {
		c := w.Clusters.Get(cw.Cluster)
		if c == nil || cw.Done {
			continue
		}
		outs, again, err := w.work(ctx, c, rec)
		if err != nil {
			return all, err
		}
		if again {
			return all, fmt.Errorf("%w: cluster %s", cluster.ErrUnavailable, c.Name)
		}
		all = append(all, outs...)
	}
	return all, nil
}

// work requests one push in one cluster. again asks to be called back later (the cluster
// could not be asked, and the result timeout has not passed).
func (w *Worker) work(ctx context.Context, c *cluster.Cluster, rec *record.Push) (outs []api.Outcome, again bool, err error) {
	key := rec.Key()
	i := slices.IndexFunc(rec.Clusters, func(cw record.ClusterWork) bool { return cw.Cluster == c.Name })
	if i < 0 || rec.Clusters[i].Done || rec.Pushed == nil || w.isFinished(c.Name, key) {
		return nil, false, nil
	}
	req := rec.Request
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("repository", req.Repository, "commit", req.SHA, "delivery", req.Delivery))
	if !c.Follows(rec.Pushed.Subject, rec.Pushed.Public) {
		if err := w.withdrawn(ctx, c, rec); client.IgnoreNotFound(err) != nil {
			return nil, false, fmt.Errorf("record push refused in %s: %w", c.Name, err)
		}
		return nil, false, nil
	}
	giveUp := w.ResultTimeout > 0 && w.now().Sub(req.RequestedAt) > w.ResultTimeout
	var failed error
	// The push's trace goes on here, and on to the reporter through the objects' records.
	ctx, span := tracing.StartFrom(ctx, req.Trace, "request.cluster", append(tracing.Push(req.Delivery, req.Repository, req.Ref, req.SHA), tracing.Cluster(c.Name))...)
	defer func() { tracing.End(span, errors.Join(err, failed)) }()
	req.Trace = tracing.Carry(ctx)
	if !c.Ready() {
		failed = fmt.Errorf("%w: cluster %s never reached (caches not synced)", cluster.ErrUnavailable, c.Name)
	} else {
		p := flux.Pushed{URLs: rec.Pushed.URLs, Ref: rec.Pushed.Ref, Tag: rec.Pushed.Tag, Name: rec.Pushed.Name}
		objs, err := flux.Match(ctx, c.GetCache(), p, c.Kinds())
		if err != nil {
			failed = fmt.Errorf("%w: %s", cluster.ErrUnavailable, cluster.PublicError(ctx, c.Name, err))
		} else {
			outs, failed = RequestIn(ctx, c, objs, req, cmpOr(w.Workers, DefaultWorkers))
		}
	}
	if failed != nil && !giveUp {
		return outs, true, nil // asked again with backoff; what was requested is recognised then
	}
	var owe []record.Owed
	requested := 0
	for _, o := range outs {
		if o.Result == api.ResultRequested || o.Result == api.ResultCoalesced {
			requested++ // its result is this push's (an already-requested one is another's)
		}
		if o.Result == api.ResultError {
			owe = append(owe, record.Owed{Target: o.Target, Status: observe.NotRequested(o.Error), Now: true})
		}
	}
	if len(owe) > maxOwedPerCluster {
		log.FromContext(ctx).Error(record.ErrRecordFull, "error statuses not owed", "targets", len(owe)-maxOwedPerCluster)
		owe = owe[:maxOwedPerCluster]
	}
	err = w.marks.record(ctx, w.Store, key, doneMark{cluster: c.Name, requested: requested, owe: owe})
	if client.IgnoreNotFound(err) != nil {
		return outs, false, fmt.Errorf("record push requested in %s: %w", c.Name, err)
	}
	w.markFinished(c.Name, key)
	if failed != nil {
		log.FromContext(ctx).Error(failed, "cluster given up on for this push", "owed", len(owe))
	}
	return outs, false, nil
}

func cmpOr(a, b int) int {
	if a > 0 {
		return a
	}
	return b
}

// markWindow is how long the first cluster to finish a push waits for others before it
// writes their done marks into the push record together: a push into hundreds of clusters
// finishes in many of them at once, and each writing its own mark (a read, a change and a
// write of one ConfigMap, retried on conflict) made 200 writers contend for one record and
// held as many copies of it (41 MiB of a replica's heap at 200 clusters,
// benchmarks/README.md). The wait delays only the mark, not the cluster's requests.
const markWindow = 100 * time.Millisecond

// doneMark is a cluster's done mark for a push: how many targets it requested there, and
// the error statuses owed for those it could not.
type doneMark struct {
	cluster   string
	requested int
	owe       []record.Owed
}

// doneMarks batches done marks per push record: the first mark of a batch waits markWindow,
// then writes its batch in one update; marks that come meanwhile join it and wait for its
// write; marks after the write starts begin the next batch.
type doneMarks struct {
	mu   sync.Mutex
	open map[string]*markBatch // by push key
}

type markBatch struct {
	marks []doneMark
	done  chan struct{}
	err   error
}

// record writes m into the push record of key, with the marks of its batch, and returns
// the write's error.
func (d *doneMarks) record(ctx context.Context, store *record.PushStore, key string, m doneMark) error {
	d.mu.Lock()
	if d.open == nil {
		d.open = map[string]*markBatch{}
	}
	b, joined := d.open[key]
	if !joined {
		b = &markBatch{done: make(chan struct{})}
		d.open[key] = b
	}
	b.marks = append(b.marks, m)
	d.mu.Unlock()
	if joined {
		select {
		case <-b.done:
			return b.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t := time.NewTimer(markWindow)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	d.mu.Lock()
	delete(d.open, key)
	marks := b.marks
	d.mu.Unlock()
	b.err = store.Update(ctx, key, func(p *record.Push) error {
		changed := false
		for _, m := range marks {
			j := slices.IndexFunc(p.Clusters, func(cw record.ClusterWork) bool { return cw.Cluster == m.cluster })
			if j < 0 || p.Clusters[j].Done {
				continue
			}
			changed = true
			p.Clusters[j].Done = true
			p.Clusters[j].Requested = m.requested
			for _, u := range m.owe {
				if !slices.ContainsFunc(p.Owed, func(o record.Owed) bool { return o.Target == u.Target }) {
					p.Owed = append(p.Owed, u)
				}
			}
		}
		if !changed {
			return record.ErrNoChange
		}
		return nil
	})
	close(b.done)
	return b.err
}
