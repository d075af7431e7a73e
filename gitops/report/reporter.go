// Package report posts what Flux answers as commit statuses: a reporter per cluster, on the
// leader, watches the Flux objects carrying a request record and posts, for each request, a
// pending status and then exactly one final status (observe says which); the backlog posts
// what push records owe. The forge sits behind the small interfaces below.
package report

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
)

// CommitStatus is one status on one commit.
type CommitStatus struct {
	Repository string // "owner/name"
	SHA        string
	Context    string
	// Target is the Flux object the status is about (Context names it), for the forge's
	// link (a target URL).
	Target api.Target
	api.Status
	// Push is the push record the result goes to when the statuses of the push are per
	// cluster ("" when it goes to the forge).
	Push string
	// Awaits, with a final status of a push whose statuses are per cluster, are the contexts
	// of the results that follow it (its object's canaries): the cluster's status waits for
	// them too.
	Awaits []string
}

// StatusPoster posts a commit status.
type StatusPoster interface {
	PostStatus(ctx context.Context, s CommitStatus) error
}

// StatusLookup returns the latest status of a commit under one context, nil if there is
// none. A reporter that takes over uses it to tell whether a status it meant to post was.
type StatusLookup interface {
	LatestStatus(ctx context.Context, repository, sha, context string) (*api.Status, error)
}

// ResultNotifier is told after a final status was posted for a commit.
type ResultNotifier interface {
	FinalPosted(ctx context.Context, repository, sha string) error
}

var (
	_ reconcile.TypedReconciler[api.Target] = (*Reporter)(nil)
	// errMoved: the request being reported left the record (a newer push or another
	// reporter changed it); the pass starts again from the object.
	errMoved = errors.New("request no longer in the record")
)

// reporterConcurrency is the number of targets one cluster's reporter handles at once:
// each pass is a few API and Gitea calls, bounded so Gitea sees a steady trickle.
const reporterConcurrency = 4

// Reporter watches the Flux objects of one cluster that carry a request record and posts,
// for each request, a pending status and then exactly one final status to Gitea. Run it
// on the leader only.
type Reporter struct {
	Cluster *cluster.Cluster
	Poster  StatusPoster
	// Lookup and Notifier are optional.
	Lookup   StatusLookup
	Notifier ResultNotifier
	// Aggregator takes the results of the requests whose statuses are per cluster
	// (record.Request.Aggregate); without it they are only logged.
	Aggregator StatusPoster
	// ResultTimeout is how long Flux has to answer a request before it is reported as error.
	ResultTimeout time.Duration
	// Repositories says which forge repository an object's source names: a record's
	// statuses go out only to that one. Nil skips the check (no forge to post to).
	Repositories *flux.Repositories
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu         sync.Mutex
	tombstones map[api.Target]tombstone
	// queue is the started controller's queue (its source.TypedFunc keeps it): a rotation
	// of the record key brings objects to a pass through it.
	queue atomic.Pointer[workqueue.TypedRateLimitingInterface[api.Target]]
}

// tombstone is what the reporter keeps of an object deleted with requests pending: their
// record, and the repository its source named.
type tombstone struct {
	rec        record.Record
	repository string
}

func (r *Reporter) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Controller returns the reporter's controller, not yet started, watching the kinds the
// cluster serves now: Start it with a context that ends when this replica stops leading, the
// cluster is removed, or its kinds change (Cluster.KindsChanged).
func (r *Reporter) Controller() (controller.TypedController[api.Target], error) {
	yes := true
	c, err := controller.NewTypedUnmanaged("reporter-"+r.Cluster.Name, controller.TypedOptions[api.Target]{
		Reconciler:              r,
		MaxConcurrentReconciles: reporterConcurrency,
		SkipNameValidation:      &yes,
		NeedLeaderElection:      &yes,
		RateLimiter:             jittered{workqueue.NewTypedItemExponentialFailureRateLimiter[api.Target](postBackoffMin, postBackoffMax)},
		LogConstructor: func(t *api.Target) logr.Logger {
			l := log.Log.WithValues("controller", "reporter", "cluster", r.Cluster.Name)
			if t != nil {
				l = l.WithValues("kind", t.Kind, "namespace", t.Namespace, "name", t.Name)
			}
			return l
		},
	})
	if err != nil {
		return nil, err
	}
	if err := c.Watch(&observed{r: r}); err != nil {
		return nil, err
	}
	// The queue itself, for FollowRecordKey: a channel source would cost each cluster a
	// buffer of 1,024 events and two goroutines for what happens at a key's rotation.
	if err := c.Watch(source.TypedFunc[api.Target](func(_ context.Context, q workqueue.TypedRateLimitingInterface[api.Target]) error {
		r.queue.Store(&q)
		return nil
	})); err != nil {
		return nil, err
	}
	return c, nil
}

// recordKeyPoll is how often a reporter looks whether the record key rotated: a comparison
// of digests, well within any rotation's grace (--token-grace, 5 minutes by default).
const recordKeyPoll = time.Second

// FollowRecordKey, beside the started controller, brings every object of the cluster that
// carries a request record to a pass when the record key rotates, until ctx ends: the pass
// seals the record again with the current key (pending or not), so that no record stops
// opening when the previous key's grace ends and no final status is lost to a rotation. A
// cluster that stays unreachable through the whole grace keeps records only the previous key
// opens: a Secret listing it under "previous" keeps it valid longer.
func (r *Reporter) FollowRecordKey(ctx context.Context) {
	t := time.NewTicker(recordKeyPoll)
	defer t.Stop()
	last := r.Cluster.RecordKeyID()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id := r.Cluster.RecordKeyID()
		q := r.queue.Load()
		if id == last || id == "" || q == nil { // no queue yet: the controller is starting
			continue
		}
		last = id
		n := 0
		for _, k := range r.Cluster.Kinds() {
			list := k.NewList()
			if err := r.Cluster.GetCache().List(ctx, list); err != nil {
				log.FromContext(ctx).Error(err, "list objects to seal again", "cluster", r.Cluster.Name, "kind", k.Name())
				continue
			}
			for _, o := range flux.Items(list) {
				if _, ok := o.GetAnnotations()[record.Annotation]; !ok {
					continue
				}
				(*q).Add(r.target(flux.RefOf(o)))
				n++
			}
		}
		log.FromContext(ctx).Info("record key rotated: request records to seal again", "cluster", r.Cluster.Name, "objects", n)
	}
}

// jittered spreads the retries of targets that failed together (Gitea down): ±25% on each
// backoff.
type jittered struct {
	workqueue.TypedRateLimiter[api.Target]
}

func (j jittered) When(t api.Target) time.Duration {
	d := j.TypedRateLimiter.When(t)
	return time.Duration(float64(d) * (0.75 + rand.Float64()/2))
}

// maxDependentDepth bounds the walk from a source to what builds from it, through what
// builds from that (a GitRepository, its HelmCharts, their HelmReleases): deeper than any
// Flux chain, and a bound against a cycle of references someone wrote.
const maxDependentDepth = 4

// enqueue maps an event on an object of kind k to the targets to look at: the object when it
// carries a record, and the objects built from it (directly or through others) that carry
// one: their verdict depends on it.
func (r *Reporter) enqueue(k flux.Kind) handler.TypedEventHandler[client.Object, api.Target] {
	targets := func(ctx context.Context, o client.Object) []api.Target {
		var out []api.Target
		seen := map[flux.Ref]bool{}
		level := []flux.Ref{{Kind: k.Name(), Namespace: o.GetNamespace(), Name: o.GetName()}}
		if _, ok := o.GetAnnotations()[record.Annotation]; ok {
			out = append(out, r.target(level[0]))
		}
		if flux.IsFollower(k) {
			// A canary: the appliers of its target report on it.
			return append(out, r.appliersOf(ctx, k, o)...)
		}
		for depth := 0; depth < maxDependentDepth && len(level) > 0; depth++ {
			var next []flux.Ref
			for _, src := range level {
				sk, err := flux.Lookup(src.Kind)
				if err != nil {
					continue
				}
				for _, dk := range r.Cluster.Kinds() {
					if dk.Stage() <= sk.Stage() {
						continue // what builds from an object is requested after it: a later stage
					}
					// Read only (names, whether a record is there): the cache's objects as they
					// are, not a copy of each (a source's event would copy all it feeds).
					deps, err := r.Cluster.Dependents(ctx, dk, src)
					if err != nil {
						log.FromContext(ctx).Error(err, "list dependents", "source", src.String())
						continue
					}
					for _, d := range deps {
						ref := flux.Ref{Kind: dk.Name(), Namespace: d.GetNamespace(), Name: d.GetName()}
						if seen[ref] {
							continue
						}
						seen[ref] = true
						next = append(next, ref)
						if _, ok := d.GetAnnotations()[record.Annotation]; ok {
							out = append(out, r.target(ref))
						}
					}
				}
			}
			level = next
		}
		return out
	}
	add := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[api.Target]) {
		for _, t := range targets(ctx, o) {
			q.Add(t)
		}
	}
	return handler.TypedFuncs[client.Object, api.Target]{
		CreateFunc: func(ctx context.Context, e event.TypedCreateEvent[client.Object], q workqueue.TypedRateLimitingInterface[api.Target]) {
			add(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[api.Target]) {
			add(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[api.Target]) {
			// The record goes with the object: keep it, and the repository its source named,
			// so the pass can still report.
			if rec := r.Cluster.ReadRecord(ctx, e.Object); rec.Pending() {
				repository, _ := r.repositoryOf(ctx, e.Object)
				t := r.target(flux.Ref{Kind: k.Name(), Namespace: e.Object.GetNamespace(), Name: e.Object.GetName()})
				r.mu.Lock()
				if r.tombstones == nil {
					r.tombstones = map[api.Target]tombstone{}
				}
				r.tombstones[t] = tombstone{rec, repository}
				r.mu.Unlock()
			}
			add(ctx, e.Object, q)
		},
		GenericFunc: func(ctx context.Context, e event.TypedGenericEvent[client.Object], q workqueue.TypedRateLimitingInterface[api.Target]) {
			add(ctx, e.Object, q)
		},
	}
}

// appliersOf returns the targets carrying a record that applied what a follower o of kind
// k follows (the Kustomizations whose inventory lists a canary's Deployment). The appliers
// are scanned in the cache, not looked up in an index: a canary changes seldom beside the
// number of appliers, and an index of every inventory's Deployments cost about 3 KiB per
// Kustomization of five Deployments (benchmarks/README.md), whether a canary exists or not.
func (r *Reporter) appliersOf(ctx context.Context, k flux.Kind, o client.Object) []api.Target {
	refs := k.Sources(o)
	if len(refs) == 0 {
		return nil
	}
	var out []api.Target
	for _, ak := range r.Cluster.Kinds() {
		if !flux.IsApplier(ak) {
			continue
		}
		list := ak.NewList()
		// Read only: the cache's own objects, not copies of every applier.
		if err := r.Cluster.GetCache().List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			log.FromContext(ctx).Error(err, "list appliers", "kind", ak.Name())
			continue
		}
		for _, a := range flux.Items(list) {
			if _, ok := a.GetAnnotations()[record.Annotation]; !ok {
				continue
			}
			if slices.ContainsFunc(flux.Applied(a), func(d flux.Ref) bool { return slices.Contains(refs, d) }) {
				out = append(out, r.target(flux.RefOf(a)))
			}
		}
	}
	return out
}

func (r *Reporter) target(ref flux.Ref) api.Target {
	return api.Target{Cluster: r.Cluster.Name, Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}
}

// Reconcile reports on one target: superseded requests first, then the current one. While a
// push is being requested in the cluster, it waits: its writes do not compete with the
// push's patches (cluster.Busy).
func (r *Reporter) Reconcile(ctx context.Context, t api.Target) (reconcile.Result, error) {
	if wait := r.Cluster.Busy(); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	res, err := r.report(ctx, t)
	if errors.Is(err, errMoved) {
		// Someone changed the record under us: look again at once.
		return reconcile.Result{RequeueAfter: time.Millisecond}, nil
	}
	return res, err
}

func (r *Reporter) report(ctx context.Context, t api.Target) (reconcile.Result, error) {
	obj, err := r.Cluster.Object(ctx, t)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, r.reportDeleted(ctx, t)
		}
		return reconcile.Result{}, err
	}
	rec, err := r.Cluster.OpenRecord(t.Kind, obj)
	if err == nil {
		err = r.sameRepository(ctx, obj, rec)
	}
	if err != nil {
		r.Cluster.Rejected(ctx, t.Kind, obj, err)
		if rej := (*record.RejectedError)(nil); errors.As(err, &rej) && rej.Reason == record.RejectedStale {
			// An old record put back: sealed again with nothing left to report, so that no
			// replica ever reports from it.
			return reconcile.Result{}, r.Cluster.Retire(ctx, t.Kind, obj)
		}
		return reconcile.Result{}, nil
	}
	if !r.Cluster.SealedWithCurrentKey(t.Kind, obj) {
		// Sealed with the record key's previous value, which opens it only until the
		// rotation's grace ends: sealed again with the current one, as it is.
		if err := r.updateRecord(ctx, obj, func(*record.Record) error { return nil }); err != nil {
			return reconcile.Result{}, err
		}
		log.FromContext(ctx).Info("request record sealed again with the current record key")
		if rec, err = r.Cluster.OpenRecord(t.Kind, obj); err != nil {
			return reconcile.Result{}, errMoved
		}
	}
	if len(rec.Superseded) > 0 {
		if err := r.reportSuperseded(ctx, t, obj, rec); err != nil {
			return reconcile.Result{}, err
		}
		rec, _ = r.Cluster.OpenRecord(t.Kind, obj)
	}
	cur := rec.Current
	if cur == nil {
		return reconcile.Result{}, nil
	}
	if cur.Final {
		if cur.Following() {
			return r.follow(ctx, obj, *cur)
		}
		return reconcile.Result{}, nil
	}
	if cur.Intent != nil && api.Final(cur.Intent.State) {
		// A final status was on its way when the last reporter stopped: finish that one.
		return reconcile.Result{}, r.deliver(ctx, t, obj, *cur, *cur.Intent)
	}
	if cur.Posted == "" && cur.Aggregate == "" {
		// Per object, pending is posted once. Per cluster the aggregator posts the cluster's
		// pending once the push is requested there: nothing to write on the object.
		if err := r.deliver(ctx, t, obj, *cur, observe.Requested(cur.SHA)); err != nil {
			return reconcile.Result{}, err
		}
		if rec, _ = r.Cluster.OpenRecord(t.Kind, obj); rec.Current == nil || rec.Current.Token != cur.Token {
			return reconcile.Result{}, errMoved
		}
		cur = rec.Current
	}
	if cur.PatchAt != nil {
		// A coalesced push: set requestedAt once the burst's window has passed.
		if wait := cur.PatchAt.Sub(r.now()); wait > 0 {
			return reconcile.Result{RequeueAfter: wait}, nil
		}
		if err := r.patchDeferred(ctx, t, obj, *cur); err != nil {
			return reconcile.Result{}, err
		}
		return reconcile.Result{}, nil // the patch's own event brings the next pass
	}
	v := observe.Evaluate(obj, observe.Want(*cur), r.Cluster.Sources(ctx, obj))
	if v.State == "" {
		if wait := cur.RequestedAt.Add(r.ResultTimeout).Sub(r.now()); wait > 0 {
			return reconcile.Result{RequeueAfter: wait}, nil
		}
		v = observe.TimedOut(r.ResultTimeout, flux.Message(obj))
	}
	req := *cur
	if v.State == api.StateSuccess {
		// Applied: the canaries of what it applied are followed from now on.
		if req, err = r.recordFollowers(ctx, obj, req); err != nil {
			return reconcile.Result{}, err
		}
		// Their first status goes before the object's final one: a summary of the commit
		// (on its pull request) waits for them.
		if _, err := r.follow(ctx, obj, req); err != nil {
			return reconcile.Result{}, err
		}
		if rec, err := r.Cluster.OpenRecord(t.Kind, obj); err == nil && rec.Current != nil && rec.Current.Token == req.Token {
			req = *rec.Current
		}
	}
	if err := r.deliver(ctx, t, obj, req, v); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

// repositoryOf returns the forge repository obj's source names ("owner/name"), false when
// there is none (no Repositories: every repository).
func (r *Reporter) repositoryOf(ctx context.Context, obj client.Object) (string, bool) {
	if r.Repositories == nil {
		return "", true
	}
	u := r.Cluster.OriginURL(ctx, obj)
	if u == "" {
		return "", false
	}
	return r.Repositories.Of(u)
}

// sameRepository returns a *RejectedError unless every request of rec names the repository
// obj's source names: a status goes where both the record and the object say.
func (r *Reporter) sameRepository(ctx context.Context, obj client.Object, rec record.Record) error {
	if r.Repositories == nil || (rec.Current == nil && len(rec.Superseded) == 0) {
		return nil
	}
	want, ok := r.repositoryOf(ctx, obj)
	if !ok {
		return &record.RejectedError{Reason: record.RejectedRepository, Detail: "the object's source is no repository of the forge"}
	}
	names := []string{}
	if rec.Current != nil {
		names = append(names, rec.Current.Repository)
	}
	for _, s := range rec.Superseded {
		names = append(names, rec.RepositoryOf(s))
	}
	for _, n := range names {
		if !strings.EqualFold(n, want) {
			return &record.RejectedError{Reason: record.RejectedRepository, Detail: fmt.Sprintf("the record names %s, the object's source %s", fmt.Sprintf("%q", n), want)}
		}
	}
	return nil
}

// deliver posts st for req once. It records the intent on the object, posts, then records
// the result, so that a reporter taking over after a crash neither loses nor repeats a
// status. For a superseded request the result removes it from the record; an empty st
// only removes it.
func (r *Reporter) deliver(ctx context.Context, t api.Target, obj client.Object, req record.Request, st api.Status) error {
	logger := log.FromContext(ctx).WithValues("repository", req.Repository, "commit", req.SHA, "delivery", req.Delivery)
	st.Description = observe.Text(st.Description)
	if st.State != "" && req.Posted != st.State {
		post := true
		since := req.IntentSince
		switch {
		case req.Aggregate != "":
			// Per-cluster statuses: the result goes into the push record, a set (recorded
			// twice, it counts once), which posts nothing itself: no intent to record on the
			// object first. Retried until a result timeout past the request's own.
			since = req.RequestedAt.Add(r.ResultTimeout)
		case req.Intent == nil || *req.Intent != st:
			since = r.now()
			err := r.updateRecord(ctx, obj, func(rec *record.Record) error {
				// On a conflict this runs on the API server's record: a cache behind our
				// own writes would otherwise post again what was posted already.
				q := rec.Find(req.Token)
				if q == nil || q.Final || !q.SameProgress(req) {
					return errMoved
				}
				q.Intent, q.IntentSince = &st, since
				return nil
			})
			if err != nil {
				return err
			}
		default:
			// The intent was recorded before: by this reporter, whose post failed, or by one
			// that stopped. Without a write of ours to lose an optimistic-lock race, only a
			// read from the API server shows whether the request was finished or given up
			// since (the cache can lag behind our own last write).
			if err := r.asSeen(ctx, obj, req); err != nil {
				return err
			}
			if r.Lookup != nil && req.SHA != "" && req.Aggregate == "" {
				// Ask Gitea whether a reporter that stopped posted it.
				latest, err := r.Lookup.LatestStatus(ctx, req.Repository, req.SHA, t.Context())
				if err != nil {
					return fmt.Errorf("look up status %s: %w", t.Context(), err)
				}
				post = latest == nil || *latest != st
			}
		}
		if post {
			cs := CommitStatus{Repository: req.Repository, SHA: req.SHA, Context: t.Context(), Target: t, Status: st}
			if api.Final(st.State) {
				cs.Awaits = followerContexts(r.Cluster.Name, req)
			}
			if err := send(ctx, r.Poster, r.Aggregator, req, cs); err != nil {
				statusPostErrors.WithLabelValues(r.Cluster.Name).Inc()
				if !permanent(err) && r.now().Sub(since) < r.ResultTimeout {
					return fmt.Errorf("post status %s: %w", t.Context(), err) // retried with backoff
				}
				return r.lose(ctx, t, obj, req, st, err)
			}
			statusesPosted.WithLabelValues(r.Cluster.Name, t.Kind, st.State).Inc()
		}
		msg := "status posted"
		if req.Aggregate != "" {
			msg = "result recorded for the cluster's status" // per-cluster statuses: not posted on its own
		}
		logger.Info(msg, "context", t.Context(), "state", st.State, "description", st.Description, "repeat", !post)
	}
	err := r.updateRecord(ctx, obj, func(rec *record.Record) error {
		q := rec.Find(req.Token)
		if q == nil || q.Final {
			return errMoved // finished or given up meanwhile: never reopen it
		}
		q.Posted, q.Intent, q.Final = st.State, nil, api.Final(st.State)
		if q.Final {
			q.Description = st.Description
		}
		return nil
	})
	if err != nil {
		return err
	}
	if st.State != "" && api.Final(st.State) {
		r.finished(ctx, t, obj, req, st)
	}
	return nil
}

// supersededStatus is the final status of a request a newer push overtook. Its record keeps
// only the state as its intent (the description follows from By).
func supersededStatus(s record.Superseded) api.Status { return observe.Superseded(s.By) }

// reportSuperseded posts the warning of every superseded request of the record, in one pass
// whatever their number: one record write records the intent of all of them (of those whose
// statuses are per object), the posts follow, and one more write removes the posted ones. A request whose intent a stopped
// reporter recorded is first looked up in Gitea, so that nothing is posted twice. When a post
// fails and may succeed later, what was posted is removed and the pass is retried.
func (r *Reporter) reportSuperseded(ctx context.Context, t api.Target, obj client.Object, rec record.Record) error {
	logger := log.FromContext(ctx)
	if err := r.reportSupersededFollowers(ctx, obj, rec); err != nil {
		return err
	}
	rec, err := r.Cluster.OpenRecord(t.Kind, obj)
	if err != nil {
		return err
	}
	now := r.now()
	var fresh, inherited []record.Superseded
	for _, s := range rec.Superseded {
		switch {
		case s.Final:
			inherited = append(inherited, s) // its final went out before the newer push: only drop it
		case s.Intent != nil && *s.Intent == record.SupersededIntent:
			inherited = append(inherited, s)
		default:
			fresh = append(fresh, s)
		}
	}
	// A request whose statuses are per cluster goes to the push record, a set: no intent to
	// record on the object first.
	own := slices.ContainsFunc(fresh, func(s record.Superseded) bool { return s.Aggregate == "" })
	if own {
		err := r.updateRecord(ctx, obj, func(rec *record.Record) error {
			for i := range rec.Superseded {
				q := &rec.Superseded[i]
				for _, f := range fresh {
					if f.Aggregate == "" && q.Token == f.Token && !q.Final && q.SameProgress(f.Request) {
						in := record.SupersededIntent
						q.Intent, q.IntentSince = &in, now
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i := range fresh {
		in := record.SupersededIntent
		fresh[i].Intent, fresh[i].IntentSince = &in, now
	}
	if len(inherited) > 0 {
		// Only a read from the API server shows whether they were finished since (the cache
		// can lag behind our own last write).
		m, err := r.Cluster.ReadMetadata(ctx, cluster.Bookkeeping, obj)
		if err != nil {
			return err
		}
		live, err := r.Cluster.OpenRecord(t.Kind, m)
		if err != nil {
			return err
		}
		inherited = slices.DeleteFunc(inherited, func(s record.Superseded) bool {
			return !slices.ContainsFunc(live.Superseded, func(l record.Superseded) bool { return l.Token == s.Token && l.SameProgress(s.Request) })
		})
	}
	done := map[string]bool{}
	var failed error
	for _, s := range slices.Concat(inherited, fresh) {
		if s.Final {
			done[s.Token] = true
			continue
		}
		st := supersededStatus(s)
		repository := rec.RepositoryOf(s)
		post := true
		if s.IntentSince.Before(now) && r.Lookup != nil && s.SHA != "" && s.Aggregate == "" {
			latest, err := r.Lookup.LatestStatus(ctx, repository, s.SHA, t.Context())
			if err != nil {
				failed = fmt.Errorf("look up status %s: %w", t.Context(), err)
				break
			}
			post = latest == nil || *latest != st
		}
		if post {
			cs := CommitStatus{Repository: repository, SHA: s.SHA, Context: t.Context(), Target: t, Status: st}
			if err := send(ctx, r.Poster, r.Aggregator, s.Request, cs); err != nil {
				statusPostErrors.WithLabelValues(r.Cluster.Name).Inc()
				if !permanent(err) && r.now().Sub(s.IntentSince) < r.ResultTimeout {
					failed = fmt.Errorf("post status %s: %w", t.Context(), err) // retried with backoff
					break
				}
				statusesLost.WithLabelValues(r.Cluster.Name).Inc()
				logger.Error(err, "status lost", "repository", repository, "commit", s.SHA, "context", t.Context(), "state", st.State)
				done[s.Token] = true
				continue
			}
			statusesPosted.WithLabelValues(r.Cluster.Name, t.Kind, st.State).Inc()
		}
		logger.Info("status posted", "repository", repository, "commit", s.SHA, "context", t.Context(),
			"state", st.State, "description", st.Description, "repeat", !post)
		done[s.Token] = true
		req := s.Request
		req.Repository = repository
		r.finished(ctx, t, obj, req, st)
	}
	if len(done) > 0 {
		err := r.updateRecord(ctx, obj, func(rec *record.Record) error {
			rec.Superseded = slices.DeleteFunc(rec.Superseded, func(s record.Superseded) bool { return done[s.Token] })
			return nil
		})
		if err != nil {
			return err
		}
	}
	return failed
}

// asSeen returns errMoved unless the record on the API server holds req as seen, not final.
func (r *Reporter) asSeen(ctx context.Context, obj client.Object, req record.Request) error {
	m, err := r.Cluster.ReadMetadata(ctx, cluster.Bookkeeping, obj)
	if err != nil {
		return err
	}
	rec, err := r.Cluster.OpenRecord(flux.KindOf(obj), m)
	if err != nil {
		return err
	}
	if q := rec.Find(req.Token); q == nil || q.Final || !q.SameProgress(req) {
		return errMoved
	}
	return nil
}

// patchDeferred sets requestedAt for a coalesced push, with the record, in one patch.
func (r *Reporter) patchDeferred(ctx context.Context, t api.Target, obj client.Object, req record.Request) error {
	now := r.now()
	err := r.updateMetadata(ctx, obj, func(rec *record.Record, ann map[string]string) error {
		q := rec.Current
		if q == nil || q.Token != req.Token || q.PatchAt == nil {
			return errMoved
		}
		q.PatchAt = nil
		rec.PatchedAt = now
		ann[meta.ReconcileRequestAnnotation] = q.Token
		return nil
	})
	if err != nil {
		return err
	}
	r.Cluster.Events().Eventf(obj, nil, corev1.EventTypeNormal, "ReconcileRequested", "RequestReconcile",
		"push of %s to %s %s (delivery %s), coalesced with an earlier push", req.SHA, req.Repository, req.Ref, req.Delivery)
	log.FromContext(ctx).Info("coalesced reconcile requested", "repository", req.Repository, "commit", req.SHA, "delivery", req.Delivery)
	return nil
}

// finished records a final status: a metric, a Kubernetes Event on the object, and a
// notice to the notifier (which may summarise the commit on its pull request).
func (r *Reporter) finished(ctx context.Context, t api.Target, obj client.Object, req record.Request, st api.Status) {
	resultSeconds.WithLabelValues(t.Kind, st.State).Observe(r.now().Sub(req.RequestedAt).Seconds())
	kind := corev1.EventTypeNormal
	if st.State != api.StateSuccess {
		kind = corev1.EventTypeWarning
	}
	if obj != nil {
		r.Cluster.Events().Eventf(obj, nil, kind, "ResultReported", "ReportResult",
			"%s for %s of %s: %s", st.State, req.SHA, req.Repository, st.Description)
	}
	if r.Notifier != nil && req.SHA != "" && req.Aggregate == "" {
		if err := r.Notifier.FinalPosted(ctx, req.Repository, req.SHA); err != nil {
			log.FromContext(ctx).Error(err, "notify final status", "repository", req.Repository, "commit", req.SHA)
		}
	}
}

// lose gives up on a status Gitea refused (4xx) or did not take within the result timeout:
// it is logged and counted as lost, and the record says so (Lost), so nothing pretends it
// was posted and nobody retries it.
func (r *Reporter) lose(ctx context.Context, t api.Target, obj client.Object, req record.Request, st api.Status, cause error) error {
	statusesLost.WithLabelValues(r.Cluster.Name).Inc()
	log.FromContext(ctx).Error(cause, "status lost", "repository", req.Repository, "commit", req.SHA,
		"delivery", req.Delivery, "context", t.Context(), "state", st.State, "description", st.Description)
	return r.updateRecord(ctx, obj, func(rec *record.Record) error {
		q := rec.Find(req.Token)
		if q == nil {
			return errMoved
		}
		q.Intent, q.Final, q.Lost = nil, true, true
		return nil
	})
}

// reportDeleted posts the final statuses of an object deleted while requests were pending.
func (r *Reporter) reportDeleted(ctx context.Context, t api.Target) error {
	r.mu.Lock()
	ts, ok := r.tombstones[t]
	delete(r.tombstones, t)
	r.mu.Unlock()
	if !ok {
		return nil
	}
	rec := ts.rec
	var pending []record.Superseded
	for _, s := range rec.Superseded {
		if !s.Final {
			pending = append(pending, s)
		}
	}
	if c := rec.Current; c != nil && !c.Final {
		pending = append(pending, record.Superseded{Request: *c})
	}
	r.reportDeletedFollowers(ctx, rec, ts.repository)
	for i := range pending {
		pending[i].Repository = rec.RepositoryOf(pending[i])
	}
	for i, p := range pending {
		st := observe.Deleted()
		if p.By != "" {
			st = supersededStatus(p)
		}
		if r.Repositories != nil && !strings.EqualFold(p.Repository, ts.repository) {
			log.FromContext(ctx).Error(&record.RejectedError{Reason: record.RejectedRepository, Detail: "the deleted object's source named another repository"},
				"status not posted", "repository", p.Repository, "commit", p.SHA, "context", t.Context())
			continue
		}
		cs := CommitStatus{Repository: p.Repository, SHA: p.SHA, Context: t.Context(), Target: t, Status: st}
		if err := send(ctx, r.Poster, r.Aggregator, p.Request, cs); err != nil {
			statusPostErrors.WithLabelValues(r.Cluster.Name).Inc()
			left := slices.Clone(pending[i:])
			for j := range left {
				left[j].Followers = nil // posted once already, above
			}
			r.mu.Lock()
			r.tombstones[t] = tombstone{record.Record{Superseded: left}, ts.repository}
			r.mu.Unlock()
			return fmt.Errorf("post status %s: %w", t.Context(), err)
		}
		statusesPosted.WithLabelValues(r.Cluster.Name, t.Kind, st.State).Inc()
		r.finished(ctx, t, nil, p.Request, st)
	}
	return nil
}

// reportDeletedFollowers posts, once, the final statuses of the followers of a deleted
// object's requests: superseded ones the warning, the current one's an error (nothing
// tells any more which template of the target the push applied).
func (r *Reporter) reportDeletedFollowers(ctx context.Context, rec record.Record, repository string) {
	all := slices.Clone(rec.Superseded)
	if c := rec.Current; c != nil {
		all = append(all, record.Superseded{Request: *c})
	}
	for _, s := range all {
		s.Repository = rec.RepositoryOf(s)
		if r.Repositories != nil && !strings.EqualFold(s.Repository, repository) {
			continue
		}
		for _, f := range s.Followers {
			if f.Final {
				continue
			}
			ft := f.Target(r.Cluster.Name)
			st := observe.ApplierDeleted()
			if s.By != "" {
				st = supersededStatus(s)
			}
			cs := CommitStatus{Repository: s.Repository, SHA: s.SHA, Context: ft.Context(), Target: ft, Status: st}
			if err := send(ctx, r.Poster, r.Aggregator, s.Request, cs); err != nil {
				statusesLost.WithLabelValues(r.Cluster.Name).Inc()
				log.FromContext(ctx).Error(err, "status lost", "repository", s.Repository, "commit", s.SHA, "context", ft.Context(), "state", st.State)
				continue
			}
			statusesPosted.WithLabelValues(r.Cluster.Name, ft.Kind, st.State).Inc()
			r.finished(ctx, ft, nil, s.Request, st)
		}
	}
}

// updateRecord changes the record on obj's metadata with an optimistic lock, re-reading the
// metadata from the API server on conflict, and leaves obj with the new annotations.
func (r *Reporter) updateRecord(ctx context.Context, obj client.Object, change func(*record.Record) error) error {
	return r.updateMetadata(ctx, obj, func(rec *record.Record, _ map[string]string) error { return change(rec) })
}

// updateMetadata is updateRecord with access to the other annotations.
func (r *Reporter) updateMetadata(ctx context.Context, obj client.Object, change func(*record.Record, map[string]string) error) error {
	kind := flux.KindOf(obj)
	m, err := r.Cluster.PatchMetadata(ctx, cluster.Bookkeeping, obj, nil, func(m *metav1.PartialObjectMetadata) error {
		rec, err := r.Cluster.OpenRecord(kind, m)
		if err != nil {
			return errMoved // replaced by one flux-webhook did not write: not ours to change
		}
		if err := change(&rec, m.Annotations); err != nil {
			return err
		}
		return r.Cluster.SealRecord(kind, m, rec)
	})
	if err != nil {
		return fmt.Errorf("update record: %w", err)
	}
	obj.SetAnnotations(m.GetAnnotations())
	obj.SetResourceVersion(m.GetResourceVersion())
	return nil
}
