package jobs

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
)

var _ manager.LeaderElectionRunnable = (*Worker)(nil)

const (
	// DefaultQPS and DefaultBurst bound a job's patches in each cluster: a fifth of the
	// clients' default 50 requests per second, so that a region-wide job never takes more
	// than that from the pushes /hook accepts (they share the cluster's client).
	DefaultQPS   = 10
	DefaultBurst = 20
	// jobWorkers is how many objects of one cluster a job patches at once.
	jobWorkers = 4
	// pruneEvery is how often the leader deletes the jobs older than jobTTL.
	pruneEvery = time.Minute
)

// Worker requests the saved jobs, on the leader: in each selected cluster, the objects the
// selector matches, sources first, at most QPS patches per second per cluster; then it
// records the job's targets (one write). It also prunes old jobs. A leader that takes over
// requests what was not recorded as requested (a second requestedAt on an object is one
// more reconcile, nothing worse).
type Worker struct {
	Clusters *cluster.Set
	Jobs     *JobStore
	// Client watches the jobs (ConfigMaps of Jobs.Namespace).
	Client kubernetes.Interface
	// QPS and Burst bound a job's patches per cluster; DefaultQPS and DefaultBurst when
	// zero.
	QPS   float64
	Burst int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// NeedLeaderElection is true: one replica requests each job.
func (w *Worker) NeedLeaderElection() bool { return true }

// Start watches the jobs and requests them until ctx ends.
func (w *Worker) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("jobs")
	ctx = log.IntoContext(ctx, logger)
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = JobLabel
			return w.Client.CoreV1().ConfigMaps(w.Jobs.Namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = JobLabel
			return w.Client.CoreV1().ConfigMaps(w.Jobs.Namespace).Watch(ctx, o)
		},
	}
	inf := toolscache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 0, toolscache.Indexers{})
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "jobs"})
	add := func(o any) {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			if j, err := decodeJob(cm); err == nil && !j.Requested {
				q.Add(j.ID)
			}
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, o any) { add(o) }}); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { inf.RunWithContext(ctx) })
	wg.Go(func() {
		for {
			id, shutdown := q.Get()
			if shutdown {
				return
			}
			if err := w.Request(ctx, id); err != nil && ctx.Err() == nil {
				logger.Error(err, "job not requested; retrying", "job", id)
				q.AddRateLimited(id)
			} else {
				q.Forget(id)
				// Jobs come seldom: the old ones are pruned after each, besides every minute.
				w.Jobs.prune(ctx, time.Now().Add(-jobTTL))
			}
			q.Done(id)
		}
	})
	prune := time.NewTicker(pruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			q.ShutDown()
			wg.Wait()
			return nil
		case <-prune.C:
			w.Jobs.prune(ctx, time.Now().Add(-jobTTL))
		}
	}
}

// limiter returns the job limiter of a cluster.
func (w *Worker) limiter(name string) *rate.Limiter {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.limiters == nil {
		w.limiters = map[string]*rate.Limiter{}
	}
	l, ok := w.limiters[name]
	if !ok {
		qps, burst := w.QPS, w.Burst
		if qps <= 0 {
			qps, burst = DefaultQPS, DefaultBurst
		}
		l = rate.NewLimiter(rate.Limit(qps), max(burst, 1))
		w.limiters[name] = l
	}
	return l
}

// Request requests one saved job now, in every selected cluster, and records it.
func (w *Worker) Request(ctx context.Context, id string) error {
	job, err := w.Jobs.load(ctx, id)
	if err != nil || job.Requested {
		return client.IgnoreNotFound(err)
	}
	logger := log.FromContext(ctx).WithValues("job", id)
	// A job record is read back from a ConfigMap: what the API saved, unless someone who
	// may write the namespace's ConfigMaps wrote another. One past jobTTL is pruned, not
	// requested (its answer can no longer be read); one whose selector the API would have
	// refused is left alone.
	if job.Created.Before(time.Now().Add(-jobTTL)) {
		logger.Info("stale job not requested", "created", job.Created)
		return nil
	}
	sel, err := normalize(job.Selector)
	if err != nil {
		logger.Error(err, "job not requested: its stored selector is invalid")
		return nil
	}
	for _, c := range w.Clusters.Clusters() {
		if !selectsCluster(sel, c) || !c.Ready() {
			continue
		}
		objs, err := selectObjects(ctx, c, sel)
		if err != nil {
			job.Unreachable = append(job.Unreachable, api.ClusterError{Cluster: c.Name, Error: cluster.PublicError(ctx, c.Name, err)})
			continue
		}
		targets, skipped := w.requestIn(ctx, c, objs, job.Token)
		job.Targets, job.Skipped = append(job.Targets, targets...), append(job.Skipped, skipped...)
	}
	job.Requested = true
	if err := w.Jobs.update(ctx, job); err != nil {
		return err
	}
	logger.Info("platform reconcile requested", "targets", len(job.Targets), "skipped", len(job.Skipped),
		"unreachable", len(job.Unreachable))
	return nil
}

// requestIn patches a job's objects in one cluster, sources first (a stage after the
// other), jobWorkers at a time, each patch waiting for the cluster's job limiter.
func (w *Worker) requestIn(ctx context.Context, c *cluster.Cluster, objs []client.Object, token string) (targets []api.Target, skipped []api.Outcome) {
	lim := w.limiter(c.Name)
	var mu sync.Mutex
	for start := 0; start < len(objs); {
		k, _ := flux.KindFor(objs[start])
		end := start
		for end < len(objs) {
			if kk, _ := flux.KindFor(objs[end]); kk.Stage() != k.Stage() {
				break
			}
			end++
		}
		next := make(chan client.Object)
		var wg sync.WaitGroup
		for range min(jobWorkers, end-start) {
			wg.Go(func() {
				for o := range next {
					k, _ := flux.KindFor(o)
					t := api.Target{Cluster: c.Name, Kind: k.Name(), Namespace: o.GetNamespace(), Name: o.GetName()}
					var skip *api.Outcome
					switch {
					case k.Suspended(o):
						skip = &api.Outcome{Target: t, Result: api.ResultSuspended}
					case lim.Wait(ctx) != nil:
						skip = &api.Outcome{Target: t, Result: api.ResultError, Error: "not requested: flux-webhook stopped"}
					default:
						if err := annotate(ctx, c, o, token); err != nil {
							skip = &api.Outcome{Target: t, Result: api.ResultError, Error: cluster.PublicError(ctx, c.Name, err)}
						}
					}
					mu.Lock()
					if skip != nil {
						skipped = append(skipped, *skip)
					} else {
						targets = append(targets, t)
					}
					mu.Unlock()
				}
			})
		}
		for _, o := range objs[start:end] {
			next <- o
		}
		close(next)
		wg.Wait()
		start = end
	}
	sortTargets(targets)
	return targets, skipped
}
