package report

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
)

const (
	// backlogPoll is how often the leader looks at the push records: a list of the few
	// ConfigMaps of one label.
	backlogPoll = 2 * time.Second
	// DefaultErrorGrace is how long a target a push could not request waits for the
	// sender's retry before its error status is posted: Gitea retries a failed delivery,
	// and an Actions step may too.
	DefaultErrorGrace = 10 * time.Second
)

var _ manager.LeaderElectionRunnable = (*Backlog)(nil)

// Backlog posts, on the leader, the error statuses push records owe: bounded (one record at
// a time), stopped with the manager, exactly once (the intent is recorded before each post;
// a successor asks Gitea whether it went out).
type Backlog struct {
	Store    *record.PushStore
	Clusters *cluster.Set
	Poster   StatusPoster
	Lookup   StatusLookup // optional
	// Aggregator takes what is owed to a push whose statuses are per cluster.
	Aggregator StatusPoster
	// Grace is how long an unpatched target waits for the sender's retry; DefaultErrorGrace
	// when zero. ResultTimeout bounds the retries of a post.
	Grace, ResultTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// NeedLeaderElection is true: statuses are posted once.
func (b *Backlog) NeedLeaderElection() bool { return true }

func (b *Backlog) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// Start works the backlog until ctx ends.
func (b *Backlog) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("backlog")
	t := time.NewTicker(backlogPoll)
	defer t.Stop()
	for {
		records, err := b.Store.List(ctx)
		if err != nil && ctx.Err() == nil {
			logger.Error(err, "list push records")
		}
		for _, st := range records {
			if ctx.Err() != nil {
				return nil
			}
			if err := b.work(ctx, st); err != nil && ctx.Err() == nil {
				logger.Error(err, "work push record", "repository", st.Request.Repository, "commit", st.Request.SHA)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// work posts what one push record owes, as far as it is due, and deletes it when done.
func (b *Backlog) work(ctx context.Context, rec *record.Stored) error {
	req, grace := rec.Request, b.Grace
	if grace == 0 {
		grace = DefaultErrorGrace
	}
	due := !b.now().Before(req.RequestedAt.Add(grace))
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("repository", req.Repository, "commit", req.SHA, "delivery", req.Delivery))
	pending, changed := false, false
	if rec.Pending() && b.ResultTimeout > 0 && b.now().Sub(req.RequestedAt) > 2*b.ResultTimeout {
		// The worker never finished it: its cluster was removed before. Nothing more will.
		var left []string
		for i := range rec.Clusters {
			if !rec.Clusters[i].Done {
				left = append(left, rec.Clusters[i].Cluster)
				rec.Clusters[i].Done = true
			}
		}
		log.FromContext(ctx).Error(errors.New("push never requested there"), "push record given up", "clusters", left)
		changed = true
	}
	for i := range rec.Owed {
		u := &rec.Owed[i]
		if u.Done {
			continue
		}
		changed = true
		if !due && !u.Now {
			pending = true
			continue
		}
		if b.requested(ctx, u.Target, req.PushKey()) {
			u.Done = true
			continue
		}
		st := api.Status{State: u.State, Description: observe.Text(u.Description)}
		cs := CommitStatus{Repository: req.Repository, SHA: req.SHA, Context: u.Context(), Target: u.Target, Status: st}
		post := true
		if u.Intent {
			if b.Lookup != nil && req.SHA != "" && req.Aggregate == "" {
				latest, err := b.Lookup.LatestStatus(ctx, req.Repository, req.SHA, u.Context())
				if err != nil {
					return b.save(ctx, rec, err)
				}
				post = latest == nil || *latest != st
			}
		} else {
			now := b.now()
			u.Intent, u.IntentSince = true, &now
			if err := b.save(ctx, rec, nil); err != nil {
				return err
			}
		}
		if post {
			if err := send(ctx, b.Poster, b.Aggregator, req, cs); err != nil {
				statusPostErrors.WithLabelValues(u.Cluster).Inc()
				// A record that says "intended" without when (not one this service wrote)
				// counts from now.
				since := b.now()
				if u.IntentSince != nil {
					since = *u.IntentSince
				}
				if !permanent(err) && b.now().Sub(since) < b.ResultTimeout {
					return b.save(ctx, rec, fmt.Errorf("post status %s: %w", u.Context(), err))
				}
				statusesLost.WithLabelValues(u.Cluster).Inc()
				log.FromContext(ctx).Error(err, "status lost", "context", u.Context(), "state", st.State)
			} else {
				statusesPosted.WithLabelValues(u.Cluster, u.Kind, st.State).Inc()
				log.FromContext(ctx).Info("status posted", "context", u.Context(), "state", st.State, "description", st.Description)
			}
		}
		u.Done = true
	}
	if !pending && !rec.Pending() && !slices.ContainsFunc(rec.Owed, func(u record.Owed) bool { return !u.Done }) {
		// Kept for the repeat window: a repeat of the push finds it, and owes nothing again.
		if b.now().Sub(req.RequestedAt) < record.RepeatWindow {
			if changed {
				return b.save(ctx, rec, nil)
			}
			return nil
		}
		return b.Store.Delete(ctx, rec)
	}
	return b.save(ctx, rec, nil)
}

// save writes the record's progress (failing on a conflict with another writer), then
// returns cause.
func (b *Backlog) save(ctx context.Context, rec *record.Stored, cause error) error {
	if err := b.Store.Save(ctx, rec); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// requested reports whether the target's record, as the API server has it, knows the push
// with the given key: a delivery of it requested the target, whose reporter reports it.
func (b *Backlog) requested(ctx context.Context, t api.Target, key string) bool {
	c := b.Clusters.Get(t.Cluster)
	if c == nil {
		return false
	}
	obj, err := c.Object(ctx, t)
	if err != nil {
		return false
	}
	m, err := c.ReadMetadata(ctx, cluster.Bookkeeping, obj)
	if err != nil {
		return false
	}
	rec, err := c.OpenRecord(t.Kind, m)
	return err == nil && slices.ContainsFunc(rec.Seen, func(s record.Seen) bool { return s.Key == key })
}
