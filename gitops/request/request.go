// Package request turns a verified push into reconcile requests: it finds the Flux objects
// the push feeds in every cluster (gitops/flux's matching, through each cache's indexes),
// and patches reconcile.fluxcd.io/requestedAt on them, sources first, together with their
// sealed request record (gitops/record), so that the reporter can follow Flux's answer.
package request

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
)

// ErrTooManyTargets: a push feeds more objects than one request may patch.
var ErrTooManyTargets = errors.New("too many targets")

var targetsRequested = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_targets_total",
	Help: "Flux objects found for pushes, by cluster, kind and request result.",
}, []string{"cluster", "kind", "result"})

func init() { metrics.Registry.MustRegister(targetsRequested) }

// requestBudget bounds the request phase of one push (match and patch, all clusters): Gitea
// gives a webhook delivery 5 s, and the answer must come after the patches.
const requestBudget = 4 * time.Second

// maxClusterConcurrency bounds how many clusters one push is requested in at once: each
// is a few lists from the cache and a patch per object, so a region of dozens of clusters
// is done in a few rounds, within requestBudget.
const maxClusterConcurrency = 8

// maxTargetsPerPush bounds the objects one push may patch: every patch is an API call (and
// a reconcile for Flux), and all must be done within requestBudget, before Gitea's 5 s
// delivery timeout. A push feeding more is refused whole (422), nothing patched.
const maxTargetsPerPush = 300

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
	// Backlog, when set, keeps what a push owes outside its objects' records (the error
	// status of a target that could not be patched, the warnings of an overtaken push), for
	// the leader's backlog to post.
	Backlog *record.PushStore
	// Aliases map the repository URLs pushes report to those sources fetch from.
	Aliases []flux.Alias
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

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

// Request patches reconcile.fluxcd.io/requestedAt, source first, on every object the push
// feeds in every cluster (clusters concurrently), records the request for the reporter, and
// returns one outcome per object found. A cluster that cannot be reached does not hold the
// others up: its objects get an error outcome (and, through the backlog, an error status).
// Only when nothing at all could be requested and something failed does it return an error
// wrapping cluster.ErrUnavailable, so the sender retries; a retry does not patch what was
// patched already.
func (r *Requester) Request(ctx context.Context, push gitops.Push) (gitops.Result, error) {
	tok, at := NextToken(r.Now)
	req := record.Request{Token: tok, Repository: push.Repository, Ref: push.Ref, SHA: push.SHA, Before: push.Before,
		Delivery: push.Delivery, RequestedAt: at}
	if push.OCI != nil {
		req.Version = push.OCI.Tag
	}
	ctx, cancel := context.WithTimeout(ctx, requestBudget)
	defer cancel()
	pushed := Pushed(push, r.Aliases)
	clusters := r.Clusters.Clusters()
	outs := make([][]api.Outcome, len(clusters))
	errs := make([]error, len(clusters))
	objs := make([][]client.Object, len(clusters))
	// Match everywhere first: a push that feeds too many objects patches none of them.
	forEach(clusters, func(i int, c *cluster.Cluster) {
		if !c.Ready() {
			errs[i] = fmt.Errorf("%w: cluster %s never reached (caches not synced)", cluster.ErrUnavailable, c.Name)
			return
		}
		var err error
		if objs[i], err = flux.Match(ctx, c.GetCache(), pushed, c.Kinds()); err != nil {
			errs[i] = fmt.Errorf("%w: %s", cluster.ErrUnavailable, cluster.PublicError(ctx, c.Name, err))
		}
	})
	total := 0
	for _, o := range objs {
		total += len(o)
	}
	if total > maxTargetsPerPush {
		return gitops.Result{}, fmt.Errorf("%w: the push feeds %d Flux objects, more than %d", ErrTooManyTargets, total, maxTargetsPerPush)
	}
	if push.Head != "" {
		// Overtaken before it arrived: nothing to request (the later push is what Flux
		// fetches), a warning owed on each target.
		return r.superseded(ctx, req, push.Head, clusters, objs, errs)
	}
	forEach(clusters, func(i int, c *cluster.Cluster) {
		if errs[i] == nil && len(objs[i]) > 0 {
			outs[i], errs[i] = requestIn(log.IntoContext(ctx, log.FromContext(ctx).WithValues("cluster", c.Name)), c, objs[i], req)
		}
	})
	res := gitops.Result{Token: tok, RequestedAt: at}
	requested := false
	var failures []error
	for i, c := range clusters {
		res.Targets = append(res.Targets, outs[i]...)
		for _, o := range outs[i] {
			requested = requested || o.Result != api.ResultError
		}
		if errs[i] != nil {
			failures = append(failures, errs[i])
			if len(outs[i]) == 0 {
				res.Unreachable = append(res.Unreachable, api.ClusterError{Cluster: c.Name, Error: publicOf(errs[i])})
			}
		}
	}
	if len(failures) > 0 && !requested {
		return res, errors.Join(failures...)
	}
	if err := r.keepUnpatched(ctx, req, res.Targets); err != nil {
		// Nothing may be lost: without the record of what was not requested, the sender
		// retries (what was requested is recognised as requested).
		return res, fmt.Errorf("%w: %s", cluster.ErrUnavailable, cluster.PublicError(ctx, "local", err))
	}
	return res, nil
}

// publicOf returns the public part of a cluster error: what follows ErrUnavailable.
func publicOf(err error) string {
	return strings.TrimPrefix(err.Error(), cluster.ErrUnavailable.Error()+": ")
}

// keepUnpatched records, for the leader's backlog, the targets of the request that could
// not be patched.
func (r *Requester) keepUnpatched(ctx context.Context, req record.Request, out []api.Outcome) error {
	var failed []record.Owed
	for _, o := range out {
		if o.Result == api.ResultError {
			failed = append(failed, record.Owed{Target: o.Target, Status: observe.NotRequested(o.Error)})
		}
	}
	if len(failed) == 0 || r.Backlog == nil {
		return nil
	}
	return r.Backlog.Add(ctx, req, failed)
}

// superseded answers a push whose reference had moved on to head before it arrived: every
// object it feeds is owed a warning, which the leader's backlog posts (unless the object's
// record knows the push: then its reporter does). Nothing is patched.
func (r *Requester) superseded(ctx context.Context, req record.Request, head string, clusters []*cluster.Cluster, objs [][]client.Object, errs []error) (gitops.Result, error) {
	res := gitops.Result{Token: req.Token, RequestedAt: req.RequestedAt}
	var owe []record.Owed
	for i, c := range clusters {
		if errs[i] != nil {
			res.Unreachable = append(res.Unreachable, api.ClusterError{Cluster: c.Name, Error: publicOf(errs[i])})
		}
		for _, o := range objs[i] {
			t := targetOf(c, o)
			res.Targets = append(res.Targets, api.Outcome{Target: t, Result: api.ResultSuperseded})
			owe = append(owe, record.Owed{Target: t, Status: observe.Superseded(head), Now: true})
			targetsRequested.WithLabelValues(c.Name, t.Kind, api.ResultSuperseded).Inc()
		}
	}
	if len(owe) > 0 && r.Backlog != nil {
		if err := r.Backlog.Add(ctx, req, owe); err != nil {
			return res, fmt.Errorf("%w: %s", cluster.ErrUnavailable, cluster.PublicError(ctx, "local", err))
		}
	}
	return res, nil
}

func targetOf(c *cluster.Cluster, o client.Object) api.Target {
	return api.Target{Cluster: c.Name, Kind: flux.KindOf(o), Namespace: o.GetNamespace(), Name: o.GetName()}
}

// requestIn patches the objects a push matched in one cluster, sources first.
func requestIn(ctx context.Context, c *cluster.Cluster, objs []client.Object, req record.Request) ([]api.Outcome, error) {
	logger := log.FromContext(ctx)
	out := make([]api.Outcome, 0, len(objs))
	var failed error
	for _, o := range objs {
		k, _ := flux.KindFor(o) // matched: a known kind
		t := targetOf(c, o)
		res := api.Outcome{Target: t, Result: api.ResultRequested}
		switch {
		case k.Suspended(o):
			res.Result = api.ResultSuspended
		case failed != nil:
			// The API server stopped answering: do not wait out the budget once per object.
			res.Result, res.Error = api.ResultError, publicOf(failed)
		default:
			patched, deferred, err := Reconcile(ctx, c, o, req)
			switch {
			case err != nil && apierrors.IsNotFound(err):
				continue // deleted since the cache saw it
			case err != nil:
				res.Result, res.Error = api.ResultError, cluster.PublicError(ctx, c.Name, err)
				if cluster.Unavailable(err) || ctx.Err() != nil {
					failed = fmt.Errorf("%w: %s", cluster.ErrUnavailable, res.Error)
				}
			case !patched:
				res.Result = api.ResultAlreadyRequested
			case deferred:
				res.Result = api.ResultCoalesced
			default:
				c.Events().Eventf(o, nil, corev1.EventTypeNormal, "ReconcileRequested", "RequestReconcile",
					"push of %s to %s %s (delivery %s)", req.SHA, req.Repository, req.Ref, req.Delivery)
			}
		}
		targetsRequested.WithLabelValues(c.Name, t.Kind, res.Result).Inc()
		logger.Info("target", "kind", t.Kind, "namespace", t.Namespace, "name", t.Name, "result", res.Result, "reason", res.Error)
		out = append(out, res)
	}
	return out, failed
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
	if w := c.Written(ref); w != nil && repeat(w) {
		return false, false, nil
	}
	defer c.Lock(ref)()
	from := c.Written(ref) // what this replica wrote last
	logger := log.FromContext(ctx).WithValues("kind", ref.Kind, "namespace", ref.Namespace, "name", ref.Name)
	m, err := c.PatchMetadata(ctx, o, from, func(m *metav1.PartialObjectMetadata) error {
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
	c.Wrote(ref, m)
	return true, deferred, nil
}
