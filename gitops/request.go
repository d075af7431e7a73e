package gitops

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// FieldOwner is the field manager of flux-webhook's patches.
const FieldOwner = "flux-webhook"

// requestBudget bounds the request phase of one push (match and patch, all clusters): Gitea gives a
// webhook delivery 5 s, and the answer must come after the patches.
const requestBudget = 4 * time.Second

// Request outcomes of one target.
const (
	// ResultRequested: requestedAt and the record were patched.
	ResultRequested = "requested"
	// ResultAlreadyRequested: the same commit is already pending on the object (a
	// redelivery, or the Actions step and the native webhook for one push).
	ResultAlreadyRequested = "already-requested"
	// ResultCoalesced: recorded; the object was patched for another push less than
	// coalesceWindow ago, and requestedAt is set for this one when the window ends.
	ResultCoalesced = "coalesced"
	// ResultSuspended: Flux is told to leave the object alone; it was not touched.
	ResultSuspended = "suspended"
	// ResultSuperseded: the push was overtaken before it arrived; it is recorded on the
	// object, to be reported as superseded, and not requested.
	ResultSuperseded = "superseded"
	// ResultError: the object could not be patched; Error says why.
	ResultError = "error"
)

// Outcome is what a push did to one target.
type Outcome struct {
	Target
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

// maxClusterConcurrency bounds how many clusters one push is requested in at once: each
// is a few lists from the cache and a patch per object, so a region of dozens of clusters
// is done in a few rounds, within requestBudget.
const maxClusterConcurrency = 8

// maxTargetsPerPush bounds the objects one push may patch: every patch is an API call (and
// a reconcile for Flux), and all must be done within requestBudget, before Gitea's 5 s
// delivery timeout. A push feeding more is refused whole (422), nothing patched.
const maxTargetsPerPush = 300

// forEach runs f for each cluster, maxClusterConcurrency at a time, and waits.
func forEach(clusters []*Cluster, f func(int, *Cluster)) {
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

// Result is what a push did in every cluster.
type Result struct {
	// Token is the requestedAt value of the push, RequestedAt its time.
	Token       string    `json:"-"`
	RequestedAt time.Time `json:"-"`
	Targets     []Outcome `json:"targets"`
	// Unreachable lists the clusters that could not be asked at all: their caches never
	// synced, so which of their objects the push feeds is unknown.
	Unreachable []ClusterError `json:"unreachable,omitempty"`
}

// ClusterError says why a cluster was left out.
type ClusterError struct {
	Cluster string `json:"cluster"`
	Error   string `json:"error"`
}

// Requested reports whether the target will reconcile for the push: requested now,
// coalesced with a burst, or requested by an identical push already.
func (o Outcome) Requested() bool {
	return o.Result == ResultRequested || o.Result == ResultCoalesced || o.Result == ResultAlreadyRequested
}

// Reported reports whether the target gets a final status for the push: it was requested,
// or recorded as superseded.
func (o Outcome) Reported() bool { return o.Requested() || o.Result == ResultSuperseded }

// Requester turns a push into reconcile requests on the Flux objects it feeds.
type Requester struct {
	Clusters *ClusterSet
	// Backlog, when set, keeps the targets that could not be patched in a request that is
	// otherwise accepted (a cluster went down), for the leader's Backlog to post their error
	// status: the record that would carry it lives on the object itself.
	Backlog *PushStore
	// Aliases map the repository URLs pushes report to those GitRepositories fetch from.
	Aliases []Alias
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

var tokens struct {
	mu   sync.Mutex
	last time.Time
}

// nextToken returns a requestedAt value unique to one request: an RFC 3339 time, as the
// flux CLI writes, strictly increasing within the process.
func nextToken(now func() time.Time) (string, time.Time) {
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

// Request patches reconcile.fluxcd.io/requestedAt, source first, on every object the push
// feeds in every cluster (clusters concurrently), records the request for the reporter, and
// returns one outcome per object found. A cluster that cannot be reached does not hold the
// others up: its objects get an error outcome. Only when nothing at all could be requested
// and something failed does it return an error wrapping ErrUnavailable, so the sender
// retries; a retry does not patch what was patched already.
func (r *Requester) Request(ctx context.Context, push Push) (Result, error) {
	tok, at := nextToken(r.Now)
	req := Request{Token: tok, Repository: push.Repository, Ref: push.Ref, SHA: push.SHA, Before: push.Before,
		Delivery: push.Delivery, RequestedAt: at}
	ctx, cancel := context.WithTimeout(ctx, requestBudget)
	defer cancel()
	clusters := r.Clusters.Clusters()
	outs := make([][]Outcome, len(clusters))
	errs := make([]error, len(clusters))
	objs := make([][]client.Object, len(clusters))
	// Match everywhere first: a push that feeds too many objects patches none of them.
	forEach(clusters, func(i int, c *Cluster) {
		if !c.Ready() {
			errs[i] = fmt.Errorf("%w: cluster %s never reached (caches not synced)", ErrUnavailable, c.Name)
			return
		}
		var err error
		if objs[i], err = match(ctx, c.GetCache(), push, r.Aliases); err != nil {
			errs[i] = fmt.Errorf("%w: %s", ErrUnavailable, publicError(ctx, c.Name, err))
		}
	})
	total := 0
	for _, o := range objs {
		total += len(o)
	}
	if total > maxTargetsPerPush {
		return Result{}, fmt.Errorf("%w: the push feeds %d Flux objects, more than %d", ErrTooManyTargets, total, maxTargetsPerPush)
	}
	if push.Head != "" {
		// Overtaken before it arrived: nothing to request (the later push is what Flux
		// fetches), a warning owed on each target.
		return r.superseded(ctx, req, push.Head, clusters, objs, errs)
	}
	forEach(clusters, func(i int, c *Cluster) {
		if errs[i] == nil && len(objs[i]) > 0 {
			outs[i], errs[i] = c.request(log.IntoContext(ctx, log.FromContext(ctx).WithValues("cluster", c.Name)), objs[i], req)
		}
	})
	res := Result{Token: tok, RequestedAt: at}
	requested := false
	var failures []error
	for i, c := range clusters {
		res.Targets = append(res.Targets, outs[i]...)
		for _, o := range outs[i] {
			requested = requested || o.Result != ResultError
		}
		if errs[i] != nil {
			failures = append(failures, errs[i])
			if len(outs[i]) == 0 {
				res.Unreachable = append(res.Unreachable, ClusterError{Cluster: c.Name, Error: strings.TrimPrefix(errs[i].Error(), ErrUnavailable.Error()+": ")})
			}
		}
	}
	if len(failures) > 0 && !requested {
		return res, errors.Join(failures...)
	}
	if err := r.keepUnpatched(ctx, req, res.Targets); err != nil {
		// Nothing may be lost: without the record of what was not requested, the sender
		// retries (what was requested is recognised as requested).
		return res, fmt.Errorf("%w: %s", ErrUnavailable, publicError(ctx, "local", err))
	}
	return res, nil
}

// DefaultErrorGrace is how long an error status for a target that could not be patched
// waits: the sender's retry (curl --retry), or the other delivery of the same push (the
// Actions step and the native webhook), usually comes within seconds, and when one of them
// requested the object the reporter reports it instead. A cluster that stayed unreachable
// gets the error.
const DefaultErrorGrace = 10 * time.Second

// keepUnpatched records, for the leader's Backlog, the targets of the request that could
// not be patched.
func (r *Requester) keepUnpatched(ctx context.Context, req Request, out []Outcome) error {
	var failed []owed
	for _, o := range out {
		if o.Result == ResultError {
			failed = append(failed, owed{Target: o.Target, Status: Status{State: StateError, Description: "not requested: " + o.Error}})
		}
	}
	if len(failed) == 0 || r.Backlog == nil {
		return nil
	}
	return r.Backlog.add(ctx, req, failed)
}

// superseded answers a push whose reference had moved on to head before it arrived: every
// object it feeds is owed a warning, which the leader's Backlog posts (unless the object's
// record knows the push: then its reporter does). Nothing is patched.
func (r *Requester) superseded(ctx context.Context, req Request, head string, clusters []*Cluster, objs [][]client.Object, errs []error) (Result, error) {
	res := Result{Token: req.Token, RequestedAt: req.RequestedAt}
	var owe []owed
	for i, c := range clusters {
		if errs[i] != nil {
			res.Unreachable = append(res.Unreachable, ClusterError{Cluster: c.Name, Error: strings.TrimPrefix(errs[i].Error(), ErrUnavailable.Error()+": ")})
		}
		for _, o := range objs[i] {
			t := Target{Cluster: c.Name, Kind: kindOf(o), Namespace: o.GetNamespace(), Name: o.GetName()}
			res.Targets = append(res.Targets, Outcome{Target: t, Result: ResultSuperseded})
			owe = append(owe, owed{Target: t, Status: supersededStatus(Superseded{By: shortSHA(head)}), Now: true})
			targetsRequested.WithLabelValues(c.Name, t.Kind, ResultSuperseded).Inc()
		}
	}
	if len(owe) > 0 && r.Backlog != nil {
		if err := r.Backlog.add(ctx, req, owe); err != nil {
			return res, fmt.Errorf("%w: %s", ErrUnavailable, publicError(ctx, "local", err))
		}
	}
	return res, nil
}

// request patches the objects a push matched in one cluster, sources first.
func (c *Cluster) request(ctx context.Context, objs []client.Object, req Request) ([]Outcome, error) {
	logger := log.FromContext(ctx)
	out := make([]Outcome, 0, len(objs))
	var failed error
	for _, o := range objs {
		t := Target{Cluster: c.Name, Kind: kindOf(o), Namespace: o.GetNamespace(), Name: o.GetName()}
		res := Outcome{Target: t, Result: ResultRequested}
		switch {
		case suspended(o):
			res.Result = ResultSuspended
		case failed != nil:
			// The API server stopped answering: do not wait out the budget once per object.
			res.Result, res.Error = ResultError, strings.TrimPrefix(failed.Error(), ErrUnavailable.Error()+": ")
		default:
			patched, deferred, err := c.requestReconcile(ctx, o, req)
			switch {
			case err != nil && apierrors.IsNotFound(err):
				continue // deleted since the cache saw it
			case err != nil:
				res.Result, res.Error = ResultError, publicError(ctx, c.Name, err)
				if unavailable(err) || ctx.Err() != nil {
					failed = fmt.Errorf("%w: %s", ErrUnavailable, res.Error)
				}
			case !patched:
				res.Result = ResultAlreadyRequested
			case deferred:
				res.Result = ResultCoalesced
			default:
				c.events.Eventf(o, nil, corev1.EventTypeNormal, "ReconcileRequested", "RequestReconcile",
					"push of %s to %s %s (delivery %s)", req.SHA, req.Repository, req.Ref, req.Delivery)
			}
		}
		targetsRequested.WithLabelValues(c.Name, t.Kind, res.Result).Inc()
		logger.Info("target", "kind", t.Kind, "namespace", t.Namespace, "name", t.Name, "result", res.Result, "reason", res.Error)
		out = append(out, res)
	}
	return out, failed
}

// requestReconcile merge-patches requestedAt and the record on o's metadata only, with an
// optimistic lock, retrying on conflict from a fresh read. It returns patched false when the
// same commit is already pending on o, and deferred true when only the record was patched
// because another push patched o less than coalesceWindow ago.
func (c *Cluster) requestReconcile(ctx context.Context, o client.Object, req Request) (patched, deferred bool, err error) {
	// A repeat is recognised, without a call and without queueing for the object, from the
	// cached record or from what this replica wrote last (a record flux-webhook did not
	// write is none: it could otherwise make a real push look like a repeat).
	kind := kindOf(o)
	wkey := kind + "/" + client.ObjectKeyFromObject(o).String()
	repeat := func(m metav1.Object) bool {
		rec, err := c.openRecord(kind, m)
		_, _, ok := rec.Apply(req)
		return err == nil && !ok
	}
	if repeat(o) {
		return false, false, nil
	}
	if w, ok := c.written.Get(wkey); ok && repeat(w.(*metav1.PartialObjectMetadata)) {
		return false, false, nil
	}
	defer c.lock(o)()
	var from *metav1.PartialObjectMetadata
	if w, ok := c.written.Get(wkey); ok {
		from = w.(*metav1.PartialObjectMetadata).DeepCopy() // what this replica wrote last
	}
	logger := log.FromContext(ctx).WithValues("kind", kind, "namespace", o.GetNamespace(), "name", o.GetName())
	m, err := c.patchMetadata(ctx, o, from, func(m *metav1.PartialObjectMetadata) error {
		rec, err := c.openRecord(kind, m)
		if err != nil {
			c.rejected(ctx, kind, m, err) // replaced by this request's record
		}
		next, dropped, ok := rec.Apply(req)
		if !ok {
			return errNoChange
		}
		for _, d := range dropped {
			statusesLost.WithLabelValues(c.Name).Inc()
			logger.Error(errRecordFull, "superseded request dropped unreported", "sha", d.SHA, "by", d.By)
		}
		deferred = false
		if since := req.RequestedAt.Sub(rec.PatchedAt); !rec.PatchedAt.IsZero() && since >= 0 && since < coalesceWindow {
			// Jitter spreads the deferred patches of a push that feeds many objects.
			at := rec.PatchedAt.Add(coalesceWindow + time.Duration(rand.Int64N(int64(coalesceWindow/4))))
			next.Current.PatchAt, deferred = &at, true
		} else {
			m.Annotations[meta.ReconcileRequestAnnotation] = req.Token
			next.PatchedAt = req.RequestedAt
		}
		return c.sealRecord(kind, m, next)
	})
	if err != nil {
		c.written.Remove(wkey)
		return false, false, err
	}
	if m == nil {
		return false, false, nil
	}
	c.written.Add(wkey, m.DeepCopy())
	return true, deferred, nil
}
