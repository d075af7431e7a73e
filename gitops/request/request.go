// Package request turns a verified push into reconcile requests: it finds the Flux objects
// the push feeds in every cluster (gitops/flux's matching, through each cache's indexes),
// and patches reconcile.fluxcd.io/requestedAt on them, sources first, together with their
// sealed request record (gitops/record), so that the reporter can follow Flux's answer.
package request

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/tracing"
)

// ErrTooManyTargets: a push feeds more objects than one request may patch.
var ErrTooManyTargets = errors.New("too many targets")

var targetsRequested = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_targets_total",
	Help: "Flux objects found for pushes, by cluster, kind and request result.",
}, []string{"cluster", "kind", "result"})

func init() { metrics.Registry.MustRegister(targetsRequested) }

// acceptBudget bounds accepting a push: matching it in every cluster's cache and writing
// its push record, well within Gitea's 5 s delivery timeout.
const acceptBudget = 4 * time.Second

// maxClusterConcurrency bounds how many clusters' caches one push is matched in at once:
// cache reads, so this only bounds the goroutines of a region of hundreds of clusters.
const maxClusterConcurrency = 8

// DefaultMaxTargets is the default of Requester.MaxTargets: far above what a region's
// platform repository feeds (tens of objects in each of hundreds of vclusters), a bound on
// the work one push makes for the worker and every Flux controller.
const DefaultMaxTargets = 25000

// Granularity is how many commit statuses a push gets.
type Granularity string

const (
	// PerObject: one status per Flux object and cluster, flux/<cluster>/<kind>/<ns>/<name>.
	PerObject Granularity = "object"
	// PerCluster: one status per cluster, flux/<cluster>, summing up its objects' results.
	PerCluster Granularity = "cluster"
	// Auto: per object up to the threshold, per cluster beyond.
	Auto Granularity = "auto"
)

// Granularities are the values of a Granularity.
var Granularities = []Granularity{PerObject, PerCluster, Auto}

// DefaultAutoThreshold is where Auto switches to one status per cluster: a commit page
// lists statuses one per line, and fifty is about what a person reads there (a push to an
// application repository feeds a few objects in a few clusters; a platform repository
// feeds tens in every vcluster of a region).
const DefaultAutoThreshold = 50

// forEach runs f for each cluster, maxClusterConcurrency at a time, and waits.
func forEach(clusters []*cluster.Cluster, f func(int, *cluster.Cluster)) {
	sem := make(chan struct{}, maxClusterConcurrency)
	var wg sync.WaitGroup
	for i, c := range clusters {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			f(i, c)
		})
	}
	wg.Wait()
}

// Requester turns a push into reconcile requests on the Flux objects it feeds.
type Requester struct {
	Clusters *cluster.Set
	// Store keeps the push records: an accepted push, for the leader's worker to request,
	// and what a push owes outside its objects' records (the warnings of an overtaken push,
	// the error status of a target that could not be requested), for the backlog to post.
	Store *record.PushStore
	// MaxTargets refuses a push that feeds more objects (ErrTooManyTargets, nothing
	// recorded); DefaultMaxTargets when zero.
	MaxTargets int
	// Granularity says whether a push's statuses are one per object, one per cluster, or
	// (Auto, the default) per cluster when it feeds more than AutoThreshold objects
	// (DefaultAutoThreshold when zero).
	Granularity   Granularity
	AutoThreshold int
	// Aliases map the repository URLs pushes report to those sources fetch from.
	Aliases []flux.Alias
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	recent recentPushes
}

// maxRecentPushes bounds the pushes a replica remembers having recorded (about 150 bytes
// each): far more than the distinct pushes of one record.RepeatWindow in a burst, so that
// their repeats cost no API write; a forgotten one costs one (the record's create, which
// finds it).
const maxRecentPushes = 4096

// recentPushes remembers the pushes this replica recorded, by key, for record.RepeatWindow:
// the same push delivered again (the Actions step and the native webhook of one push, a
// retry, a redelivery) is answered from memory instead of the client's rate-limited writes.
// Another replica finds the record instead.
type recentPushes struct {
	once  sync.Once
	cache *lru.Cache // push key → firstAcceptance
}

// firstAcceptance is what a repeat of a push is answered with: its first request's token.
type firstAcceptance struct {
	Token string
	At    time.Time
}

func (r *recentPushes) entries() *lru.Cache {
	r.once.Do(func() { r.cache = lru.New(maxRecentPushes) })
	return r.cache
}

func (r *recentPushes) get(key string, now time.Time) (firstAcceptance, bool) {
	v, ok := r.entries().Get(key)
	if !ok {
		return firstAcceptance{}, false
	}
	q := v.(firstAcceptance)
	return q, now.Sub(q.At) < record.RepeatWindow
}

func (r *recentPushes) add(key string, q firstAcceptance) { r.entries().Add(key, q) }

var tokens struct {
	mu   sync.Mutex
	last time.Time
}

// NextToken returns a requestedAt value unique to one request: an RFC 3339 time, as the
// flux CLI writes, strictly increasing within the process.
func NextToken(now func() time.Time) (string, time.Time) {
	if now == nil {
		now = time.Now
	}
	tokens.mu.Lock()
	defer tokens.mu.Unlock()
	t := now().UTC()
	if !t.After(tokens.last) {
		t = tokens.last.Add(time.Nanosecond)
	}
	tokens.last = t
	return t.Format(time.RFC3339Nano), t
}

// Pushed returns what a push changed, as matching reads it: its URLs normalized, through
// every alias.
func Pushed(push gitops.Push, aliases []flux.Alias) flux.Pushed {
	var p flux.Pushed
	urls := push.URLs
	if push.OCI != nil {
		urls = []string{push.OCI.URL}
		p.Tag = push.OCI.Tag
		p.Name = push.OCI.URL[strings.LastIndexByte(push.OCI.URL, '/')+1:]
	} else {
		p.Ref = push.Ref
	}
	for _, u := range urls {
		k, err := flux.NormalizeURL(u)
		if err != nil {
			continue
		}
		for _, k := range flux.Expand(k, aliases) {
			if !sliceHas(p.URLs, k) {
				p.URLs = append(p.URLs, k)
			}
		}
	}
	return p
}

func sliceHas(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Accept records a push, once, for the leader's worker to request in every cluster, and
// returns what it matched: one outcome per target ("queued", or "suspended": Flux is told to
// leave it alone), and per cluster how many. It costs cache reads and one API write (the
// push record) whatever the number of targets; none when nothing matched. A cluster whose
// caches never synced is listed as unreachable (what the push feeds there is unknown). The
// same push accepted before (its other delivery, a repeat within record.RepeatWindow) is not
// recorded again: its targets are "already-requested". An overtaken push (Head set) is
// recorded with a warning owed on each target, and requests nothing.
func (r *Requester) Accept(ctx context.Context, push gitops.Push) (gitops.Result, error) {
	tok, at := NextToken(r.Now)
	req := record.Request{Token: tok, Repository: push.Repository, Ref: push.Ref, SHA: push.SHA, Before: push.Before,
		Delivery: push.Delivery, Trace: tracing.Carry(ctx), RequestedAt: at}
	if push.OCI != nil {
		req.Version = push.OCI.Tag
	}
	ctx, cancel := context.WithTimeout(ctx, acceptBudget)
	defer cancel()
	pushed := Pushed(push, r.Aliases)
	clusters := r.Clusters.Clusters()
	errs := make([]error, len(clusters))
	objs := make([][]client.Object, len(clusters))
	refused := make([]bool, len(clusters))
	followers := 0
	for i, c := range clusters {
		if refused[i] = !c.Follows(push.Subject(), push.Public); !refused[i] {
			followers++
		}
	}
	forEach(clusters, func(i int, c *cluster.Cluster) {
		if !c.Ready() {
			if refused[i] {
				return // not asked either way
			}
			errs[i] = fmt.Errorf("%w: cluster %s never reached (caches not synced)", cluster.ErrUnavailable, c.Name)
			return
		}
		var err error
		if objs[i], err = flux.Match(ctx, c.GetCache(), pushed, c.Kinds()); err != nil {
			errs[i] = fmt.Errorf("%w: %s", cluster.ErrUnavailable, cluster.PublicError(ctx, c.Name, err))
		}
	})
	// The clusters that may not follow the push: counted in the answer, nothing more.
	res := gitops.Result{Token: tok, RequestedAt: at, Clusters: refuse(ctx, push, clusters, refused, objs)}
	total := 0
	for i, c := range clusters {
		if errs[i] != nil && !refused[i] {
			res.Unreachable = append(res.Unreachable, api.ClusterError{Cluster: c.Name, Error: publicOf(errs[i])})
		}
		total += len(objs[i])
	}
	if max := cmp.Or(r.MaxTargets, DefaultMaxTargets); total > max {
		return gitops.Result{}, fmt.Errorf("%w: the push feeds %d Flux objects, more than %d", ErrTooManyTargets, total, max)
	}
	perCluster := r.Granularity == PerCluster || r.Granularity != PerObject && total > cmp.Or(r.AutoThreshold, DefaultAutoThreshold)
	if push.Head != "" {
		// Overtaken before it arrived: nothing to request (the later push is what Flux
		// fetches), a warning owed on each target (or each cluster).
		return r.superseded(ctx, req, push.Head, clusters, objs, res, perCluster)
	}
	rec := record.Push{Request: req, Pushed: &record.Pushed{URLs: pushed.URLs, Ref: pushed.Ref, Tag: pushed.Tag, Name: pushed.Name,
		Subject: push.Subject(), Public: push.Public}}
	queued := 0
	for i, c := range clusters {
		n := 0
		for _, o := range objs[i] {
			k, _ := flux.KindFor(o) // matched: a known kind
			result := api.ResultQueued
			if k.Suspended(o) {
				result = api.ResultSuspended
			} else {
				n++
			}
			res.Targets = append(res.Targets, api.Outcome{Target: targetOf(c, o), Result: result})
		}
		if len(objs[i]) > 0 {
			res.Clusters = append(res.Clusters, api.ClusterTargets{Cluster: c.Name, Targets: len(objs[i])})
		}
		if n > 0 {
			rec.Clusters = append(rec.Clusters, record.ClusterWork{Cluster: c.Name, Matched: n})
		}
		queued += n
	}
	if perCluster {
		rec.Request.Aggregate = req.PushKey()
	}
	if queued == 0 {
		if len(res.Targets) == 0 && len(res.Unreachable) > 0 && len(res.Unreachable) == followers {
			return res, errors.Join(errs...) // nothing could be asked: the sender retries
		}
		return res, nil
	}
	first, repeat := r.recent.get(rec.Key(), at)
	if !repeat {
		existing, err := r.Store.Create(ctx, rec)
		if err != nil {
			return res, fmt.Errorf("%w: %s", cluster.ErrUnavailable, cluster.PublicError(ctx, "local", err))
		}
		first, repeat = firstAcceptance{Token: tok, At: at}, existing != nil
		if repeat {
			first = firstAcceptance{Token: existing.Request.Token, At: existing.Request.RequestedAt}
		}
		r.recent.add(rec.Key(), first)
	}
	if repeat {
		// Accepted before: reported as the first acceptance was.
		res.Token, res.RequestedAt, res.Repeat = first.Token, first.At, true
		for i := range res.Targets {
			if res.Targets[i].Result == api.ResultQueued {
				res.Targets[i].Result = api.ResultAlreadyRequested
			}
		}
	}
	log.FromContext(ctx).Info("push accepted", "targets", queued, "clusters", len(rec.Clusters), "repeat", repeat)
	return res, nil
}

// publicOf returns the public part of a cluster error: what follows ErrUnavailable.
func publicOf(err error) string {
	return strings.TrimPrefix(err.Error(), cluster.ErrUnavailable.Error()+": ")
}

// superseded answers a push whose reference had moved on to head before it arrived: every
// object it feeds is owed a warning, which the leader's backlog posts (unless the object's
// record knows the push: then its reporter does). Nothing is patched.
func (r *Requester) superseded(ctx context.Context, req record.Request, head string, clusters []*cluster.Cluster, objs [][]client.Object, res gitops.Result, perCluster bool) (gitops.Result, error) {
	var owe []record.Owed
	for i, c := range clusters {
		if len(objs[i]) > 0 {
			res.Clusters = append(res.Clusters, api.ClusterTargets{Cluster: c.Name, Targets: len(objs[i])})
			if perCluster {
				owe = append(owe, record.Owed{Target: api.Target{Cluster: c.Name}, Status: observe.Superseded(head), Now: true})
			}
		}
		for _, o := range objs[i] {
			t := targetOf(c, o)
			res.Targets = append(res.Targets, api.Outcome{Target: t, Result: api.ResultSuperseded})
			if !perCluster {
				owe = append(owe, record.Owed{Target: t, Status: observe.Superseded(head), Now: true})
			}
			targetsRequested.WithLabelValues(c.Name, t.Kind, api.ResultSuperseded).Inc()
		}
	}
	// Recorded already by this replica (a repeat): nothing to add. Else the record keeps
	// what is owed (adding the same warnings again changes nothing).
	if _, repeat := r.recent.get(req.PushKey(), req.RequestedAt); len(owe) > 0 && !repeat {
		if err := r.Store.Add(ctx, req, owe); err != nil {
			return res, fmt.Errorf("%w: %s", cluster.ErrUnavailable, cluster.PublicError(ctx, "local", err))
		}
		r.recent.add(req.PushKey(), firstAcceptance{Token: req.Token, At: req.RequestedAt})
	}
	return res, nil
}

func targetOf(c *cluster.Cluster, o client.Object) api.Target {
	return api.Target{Cluster: c.Name, Kind: flux.KindOf(o), Namespace: o.GetNamespace(), Name: o.GetName()}
}

// RequestIn patches the objects a push matched in one cluster, sources first: the objects of
// one stage (flux.Kind.Stage) workers at a time, then the next stage. failed, when set, says
// the cluster's API server stopped answering: the objects not yet done then get an error
// outcome at once, instead of each waiting out its own timeout.
func RequestIn(ctx context.Context, c *cluster.Cluster, objs []client.Object, req record.Request, workers int) (out []api.Outcome, failed error) {
	defer c.Requesting()() // the reporter's bookkeeping there waits meanwhile
	out = make([]api.Outcome, len(objs))
	patched := make([]bool, len(objs))
	var mu sync.Mutex
	down := func() error { mu.Lock(); defer mu.Unlock(); return failed }
	for start := 0; start < len(objs); {
		k, _ := flux.KindFor(objs[start])
		end := start
		for end < len(objs) {
			if kk, _ := flux.KindFor(objs[end]); kk.Stage() != k.Stage() {
				break
			}
			end++
		}
		next := make(chan int)
		var wg sync.WaitGroup
		for range min(workers, end-start) {
			wg.Go(func() {
				for i := range next {
					o, p, unavailable := requestOne(ctx, c, objs[i], req, down())
					out[i], patched[i] = o, p
					if unavailable != nil {
						mu.Lock()
						if failed == nil {
							failed = unavailable
						}
						mu.Unlock()
					}
				}
			})
		}
		for i := start; i < end; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		start = end
	}
	requested(ctx, c, objs, patched, req)
	// Objects deleted since the cache saw them are left out.
	out = slices.DeleteFunc(out, func(o api.Outcome) bool { return o.Result == "" })
	return out, failed
}

// requested records, for a push in one cluster, one Kubernetes Event on each of the objects
// of the first stage it requested (the sources it matched: one GitRepository, typically),
// counting by kind what it requested there. One per push and cluster, not one per object:
// each object carries its own sealed request record (commit, repository, delivery, time),
// and the log a line per target; Events are written with the cluster's bookkeeping client
// once the push is requested there (cluster.EventWriter), so a push's patches never wait for
// them.
func requested(ctx context.Context, c *cluster.Cluster, objs []client.Object, patched []bool, req record.Request) {
	byKind := map[string]int{}
	var kinds []string
	stage, total := -1, 0
	var first []client.Object
	for i, p := range patched {
		if !p {
			continue
		}
		k, _ := flux.KindFor(objs[i]) // matched: a known kind
		if byKind[k.Name()] == 0 {
			kinds = append(kinds, k.Name())
		}
		byKind[k.Name()]++
		total++
		switch {
		case stage < 0 || k.Stage() < stage:
			stage, first = k.Stage(), []client.Object{objs[i]}
		case k.Stage() == stage:
			first = append(first, objs[i])
		}
	}
	if total == 0 {
		return
	}
	counts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		counts = append(counts, fmt.Sprintf("%d %s", byKind[k], k))
	}
	if len(first) > maxRequestedEvents {
		log.FromContext(ctx).Info("reconcile requested Events left out", "sources", len(first)-maxRequestedEvents)
		first = first[:maxRequestedEvents]
	}
	for _, o := range first {
		c.Events().Eventf(o, nil, corev1.EventTypeNormal, "ReconcileRequested", "RequestReconcile",
			"push of %s to %s %s (delivery %s): reconcile requested for %d Flux objects in this cluster (%s)",
			req.SHA, req.Repository, req.Ref, req.Delivery, total, strings.Join(counts, ", "))
	}
}

// maxRequestedEvents bounds the ReconcileRequested Events of one push in one cluster: one
// per source it requested there, and a push that feeds hundreds of sources in one cluster
// (a repository every tenant namespace follows) gets this many.
const maxRequestedEvents = 20

// requestOne requests one object; requested says this call set its requestedAt, unavailable,
// when set, that the API server did not answer.
func requestOne(ctx context.Context, c *cluster.Cluster, o client.Object, req record.Request, down error) (res api.Outcome, requested bool, unavailable error) {
	k, _ := flux.KindFor(o) // matched: a known kind
	t := targetOf(c, o)
	res = api.Outcome{Target: t, Result: api.ResultRequested}
	switch {
	case k.Suspended(o):
		res.Result = api.ResultSuspended
	case down != nil:
		// The API server stopped answering: do not wait out a timeout once per object.
		res.Result, res.Error = api.ResultError, publicOf(down)
	default:
		patched, deferred, err := Reconcile(ctx, c, o, req)
		switch {
		case err != nil && apierrors.IsNotFound(err):
			return api.Outcome{}, false, nil // deleted since the cache saw it
		case err != nil:
			res.Result, res.Error = api.ResultError, cluster.PublicError(ctx, c.Name, err)
			if cluster.Unavailable(err) || ctx.Err() != nil {
				unavailable = fmt.Errorf("%w: %s", cluster.ErrUnavailable, res.Error)
			}
		case !patched && holds(c, o, req.Token):
			res.Result = api.ResultRequested // by a worker before this one (a leader that stopped)
		case !patched:
			res.Result = api.ResultAlreadyRequested
		case deferred:
			res.Result = api.ResultCoalesced
		default:
			requested = true
		}
	}
	targetsRequested.WithLabelValues(c.Name, t.Kind, res.Result).Inc()
	log.FromContext(ctx).Info("target", "kind", t.Kind, "namespace", t.Namespace, "name", t.Name, "result", res.Result, "reason", res.Error)
	return res, requested, unavailable
}

// holds reports whether o's record, as this replica knows it, holds the request of token.
func holds(c *cluster.Cluster, o client.Object, token string) bool {
	ref := flux.RefOf(o)
	for _, m := range []metav1.Object{c.Requested(ref), o} {
		if m == nil || reflect.ValueOf(m).IsNil() {
			continue
		}
		if rec, err := c.OpenRecord(ref.Kind, m); err == nil && rec.Find(token) != nil {
			return true
		}
	}
	return false
}

// sameRecord reports whether a and b carry the same sealed request record.
func sameRecord(a, b metav1.Object) bool {
	for _, k := range []string{record.Annotation, record.MACAnnotation} {
		if a.GetAnnotations()[k] != b.GetAnnotations()[k] {
			return false
		}
	}
	return a.GetAnnotations()[record.Annotation] != ""
}

// Reconcile merge-patches requestedAt and the record on o's metadata only, with an
// optimistic lock, retrying on conflict from a fresh read. It returns patched false when the
// same commit is already pending on o, and deferred true when only the record was patched
// because another push patched o less than record.CoalesceWindow ago.
func Reconcile(ctx context.Context, c *cluster.Cluster, o client.Object, req record.Request) (patched, deferred bool, err error) {
	// A repeat is recognised, without a call and without queueing for the object, from the
	// cached record or from what this replica wrote last (a record flux-webhook did not
	// write is none: it could otherwise make a real push look like a repeat).
	ref := flux.RefOf(o)
	repeat := func(m metav1.Object) bool {
		rec, err := c.OpenRecord(ref.Kind, m)
		_, _, ok := rec.Apply(req)
		return err == nil && !ok
	}
	if repeat(o) {
		return false, false, nil
	}
	if w := c.Requested(ref); w != nil && repeat(w) {
		return false, false, nil
	}
	defer c.Lock(ref)()
	// The patch builds on what this replica wrote last, unless the cache has seen that write
	// (it holds the same sealed record): then the cache knows the object as it is now, with
	// whatever Flux or anyone changed since, and the patch does not conflict.
	from := c.Written(ref)
	if from != nil && sameRecord(from, o) {
		from = nil
	}
	logger := log.FromContext(ctx).WithValues("kind", ref.Kind, "namespace", ref.Namespace, "name", ref.Name)
	m, err := c.PatchMetadata(ctx, cluster.Requests, o, from, func(m *metav1.PartialObjectMetadata) error {
		rec, err := c.OpenRecord(ref.Kind, m)
		if err != nil {
			c.Rejected(ctx, ref.Kind, m, err) // replaced by this request's record
		}
		next, dropped, ok := rec.Apply(req)
		if !ok {
			return cluster.ErrNoChange
		}
		for _, d := range dropped {
			logger.Error(record.ErrFull, "superseded request dropped unreported", "sha", d.SHA, "by", d.By)
		}
		deferred = false
		if since := req.RequestedAt.Sub(rec.PatchedAt); !rec.PatchedAt.IsZero() && since >= 0 && since < record.CoalesceWindow {
			// Jitter spreads the deferred patches of a push that feeds many objects.
			at := rec.PatchedAt.Add(record.CoalesceWindow + time.Duration(rand.Int64N(int64(record.CoalesceWindow/4))))
			next.Current.PatchAt, deferred = &at, true
		} else {
			m.Annotations[meta.ReconcileRequestAnnotation] = req.Token
			next.PatchedAt = req.RequestedAt
		}
		return c.SealRecord(ref.Kind, m, next)
	})
	if err != nil {
		c.Wrote(ref, nil)
		return false, false, err
	}
	if m == nil {
		return false, false, nil
	}
	c.WroteRequest(ref, m)
	return true, deferred, nil
}
