package report

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
)

var _ manager.LeaderElectionRunnable = (*Aggregator)(nil)

const (
	// flushEvery is how often the results reporters hand over are written to their push
	// records: one write per push record and flush, however many objects answered.
	flushEvery = 250 * time.Millisecond
	// aggregateEvery is how often the push records are read for cluster statuses to post.
	aggregateEvery = time.Second
)

// Aggregator posts the statuses of pushes whose granularity is per cluster: one context
// flux/<cluster> per cluster, pending once its targets are requested, then exactly one final
// status when every target there has its result ("38/40 ready, 2 failed: ..."). The
// reporters hand it each target's final result (PostStatus) instead of posting it: it is
// recorded in the push record (a set: recorded twice, it counts once) before PostStatus
// returns. Run it on the leader, beside the reporters.
type Aggregator struct {
	Store  *record.PushStore
	Poster StatusPoster
	// Lookup and Notifier are optional.
	Lookup   StatusLookup
	Notifier ResultNotifier
	// ResultTimeout bounds how long a cluster's status waits for its targets.
	ResultTimeout time.Duration
	// Busy, when set, is the service's own cluster's (cluster.Cluster.Busy), where the push
	// records are: while a push is being requested there, results wait to be written (the
	// reporters with them, 30 s at most), so that the API server answers the push's patches
	// first instead of rewriting push records that grow with every result (a push of a
	// thousand objects: 70 KB, four times a second).
	Busy func() time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu      sync.Mutex
	pending map[string][]result
	wake    chan struct{}
}

// result is a target's final result, waiting to be written.
type result struct {
	cs   CommitStatus
	done chan error
}

// NeedLeaderElection is true: statuses are posted once.
func (a *Aggregator) NeedLeaderElection() bool { return true }

func (a *Aggregator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// PostStatus records a target's final result in the push record cs.Push, and returns once
// it is written (or failed: then the reporter retries it). A pending state is not recorded.
func (a *Aggregator) PostStatus(ctx context.Context, cs CommitStatus) error {
	if !api.Final(cs.State) {
		return nil
	}
	r := result{cs: cs, done: make(chan error, 1)}
	a.mu.Lock()
	if a.pending == nil {
		a.pending, a.wake = map[string][]result{}, make(chan struct{}, 1)
	}
	a.pending[cs.Push] = append(a.pending[cs.Push], r)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start flushes results and posts cluster statuses until ctx ends.
func (a *Aggregator) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("aggregator")
	ctx = log.IntoContext(ctx, logger)
	a.mu.Lock()
	if a.pending == nil {
		a.pending, a.wake = map[string][]result{}, make(chan struct{}, 1)
	}
	wake := a.wake
	a.mu.Unlock()
	flush, post := time.NewTicker(flushEvery), time.NewTicker(aggregateEvery)
	defer flush.Stop()
	defer post.Stop()
	for {
		select {
		case <-ctx.Done():
			a.flush(ctx) // answers the waiting reporters (with ctx's error)
			return nil
		case <-wake:
			// A result waits: written at the next flush, with those that follow it.
		case <-flush.C:
			a.flush(ctx)
		case <-post.C:
			if err := a.postAll(ctx); err != nil && ctx.Err() == nil {
				logger.Error(err, "cluster statuses")
			}
		}
	}
}

// flush writes the waiting results, one write per push record, unless a push is being
// requested in the service's own cluster (Busy) and ctx goes on.
func (a *Aggregator) flush(ctx context.Context) {
	if a.Busy != nil && ctx.Err() == nil && a.Busy() > 0 {
		return
	}
	a.mu.Lock()
	pending := a.pending
	a.pending = map[string][]result{}
	a.mu.Unlock()
	for key, rs := range pending {
		err := ctx.Err()
		if err == nil {
			err = a.Store.Update(ctx, key, func(p *record.Push) error {
				if p.Results == nil {
					p.Results = map[string]string{}
				}
				for _, r := range rs {
					p.Results[r.cs.Context] = r.cs.State
					for _, a := range r.cs.Awaits {
						if _, ok := p.Results[a]; !ok {
							p.Results[a] = "" // awaited: the cluster's status waits for it
						}
					}
					if r.cs.State == api.StateSuccess {
						continue
					}
					if i := slices.IndexFunc(p.Clusters, func(cw record.ClusterWork) bool {
						return strings.HasPrefix(r.cs.Context, clusterContext(cw.Cluster)+"/")
					}); i >= 0 && p.Clusters[i].Failure == "" {
						p.Clusters[i].Failure = observe.Text(strings.TrimPrefix(r.cs.Context, clusterContext(p.Clusters[i].Cluster)+"/") + ": " + r.cs.Description)
					}
				}
				return nil
			})
		}
		for _, r := range rs {
			r.done <- err
		}
	}
}

func clusterContext(cluster string) string { return api.ContextPrefix + cluster }

// postAll posts, for every push record with per-cluster statuses, what each cluster owes.
func (a *Aggregator) postAll(ctx context.Context) error {
	records, err := a.Store.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range records {
		if st.Request.Aggregate == "" {
			continue
		}
		for _, cw := range st.Clusters {
			if !cw.Final {
				errs = append(errs, a.post(ctx, &st.Push, cw.Cluster))
			}
		}
	}
	return errors.Join(errs...)
}

// post posts what one cluster's status owes: pending once, then the final status once every
// requested target has its result (intent recorded first, as for an object).
func (a *Aggregator) post(ctx context.Context, p *record.Push, cluster string) error {
	req := p.Request
	key := p.Key()
	i := slices.IndexFunc(p.Clusters, func(cw record.ClusterWork) bool { return cw.Cluster == cluster })
	cw := p.Clusters[i]
	context := clusterContext(cluster)
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("repository", req.Repository, "commit", req.SHA,
		"delivery", req.Delivery, "context", context))
	cs := CommitStatus{Repository: req.Repository, SHA: req.SHA, Context: context}
	if cw.Posted == "" && (cw.Intent == nil || cw.Intent.State == api.StatePending) {
		// Pending, once: intent recorded first, as for the final status, so that a leader
		// taking over from one that stopped between the post and its record asks Gitea
		// instead of posting it again.
		pending := api.Status{State: api.StatePending, Description: fmt.Sprintf("reconcile requested for %s: %d Flux objects", req.Name(), cw.Matched)}
		post := true
		if cw.Intent == nil {
			if err := a.record(ctx, key, cluster, func(cw *record.ClusterWork) { cw.Intent, cw.IntentSince = &pending, a.now() }); err != nil {
				return err
			}
		} else if a.Lookup != nil && req.SHA != "" {
			latest, err := a.Lookup.LatestStatus(ctx, req.Repository, req.SHA, context)
			if err != nil {
				return fmt.Errorf("look up status %s: %w", context, err)
			}
			post = latest == nil
		}
		if post {
			cs.Status = pending
			if err := postStatus(ctx, a.Poster, req.Trace, req.Delivery, cs); err != nil {
				statusPostErrors.WithLabelValues(cluster).Inc()
				return err
			}
			statusesPosted.WithLabelValues(cluster, "cluster", api.StatePending).Inc()
		}
		return a.record(ctx, key, cluster, func(cw *record.ClusterWork) { cw.Posted, cw.Intent = api.StatePending, nil })
	}
	final, ok := a.verdict(p, cw)
	if !ok {
		return nil
	}
	post := true
	if cw.Intent == nil || *cw.Intent != final {
		since := a.now()
		if err := a.record(ctx, key, cluster, func(cw *record.ClusterWork) { cw.Intent, cw.IntentSince = &final, since }); err != nil {
			return err
		}
		cw.IntentSince = since
	} else if a.Lookup != nil && req.SHA != "" {
		// Recorded before, by a leader that stopped: did it post?
		latest, err := a.Lookup.LatestStatus(ctx, req.Repository, req.SHA, context)
		if err != nil {
			return fmt.Errorf("look up status %s: %w", context, err)
		}
		post = latest == nil || *latest != final
	}
	if post {
		cs.Status = final
		if err := postStatus(ctx, a.Poster, req.Trace, req.Delivery, cs); err != nil {
			statusPostErrors.WithLabelValues(cluster).Inc()
			if !permanent(err) && a.now().Sub(cw.IntentSince) < a.ResultTimeout {
				return fmt.Errorf("post status %s: %w", context, err) // again at the next round
			}
			statusesLost.WithLabelValues(cluster).Inc()
			log.FromContext(ctx).Error(err, "status lost", "state", final.State)
		} else {
			statusesPosted.WithLabelValues(cluster, "cluster", final.State).Inc()
			log.FromContext(ctx).Info("status posted", "state", final.State, "description", final.Description, "repeat", false)
		}
	}
	if err := a.record(ctx, key, cluster, func(cw *record.ClusterWork) { cw.Posted, cw.Intent, cw.Final = final.State, nil, true }); err != nil {
		return err
	}
	resultSeconds.WithLabelValues("cluster", final.State).Observe(a.now().Sub(req.RequestedAt).Seconds())
	if a.Notifier != nil && req.SHA != "" {
		if err := a.Notifier.FinalPosted(ctx, req.Repository, req.SHA); err != nil {
			log.FromContext(ctx).Error(err, "notify final status")
		}
	}
	return nil
}

// verdict returns a cluster's final status once every target requested there has its
// result (or the cluster was never requested in time), ok false before.
func (a *Aggregator) verdict(p *record.Push, cw record.ClusterWork) (api.Status, bool) {
	if !cw.Done {
		if a.ResultTimeout > 0 && a.now().Sub(p.Request.RequestedAt) > 2*a.ResultTimeout {
			return observe.NotRequested("cluster " + cw.Cluster + " was not requested in time"), true
		}
		return api.Status{}, false
	}
	counts := map[string]int{}
	n := 0
	for ctxName, state := range p.Results {
		if strings.HasPrefix(ctxName, clusterContext(cw.Cluster)+"/") {
			if state == "" {
				return api.Status{}, false // a canary's result still awaited
			}
			counts[state]++
			n++
		}
	}
	if n < cw.Requested {
		return api.Status{}, false
	}
	return observe.Summary(counts, n, cw.Failure), true
}

// record changes one cluster's part of a push record.
func (a *Aggregator) record(ctx context.Context, key, cluster string, change func(*record.ClusterWork)) error {
	return a.Store.Update(ctx, key, func(p *record.Push) error {
		i := slices.IndexFunc(p.Clusters, func(cw record.ClusterWork) bool { return cw.Cluster == cluster })
		if i < 0 || p.Clusters[i].Final {
			return record.ErrNoChange
		}
		change(&p.Clusters[i])
		return nil
	})
}
