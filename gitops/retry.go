package gitops

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Backoff of status posts that failed: doubling from postBackoffMin, capped at
// postBackoffMax, with jitter so that many statuses failing together do not retry together.
// The cap bounds how late a status arrives after Gitea comes back (a retry every 30 s per
// waiting status is cheap for Gitea).
const (
	postBackoffMin = time.Second
	postBackoffMax = 30 * time.Second
)

// Permanent is implemented by errors retrying cannot cure (Gitea answered 4xx).
type Permanent interface{ Permanent() bool }

func permanent(err error) bool {
	var p Permanent
	return errors.As(err, &p) && p.Permanent()
}

// backoff returns the wait before retry number n (from 0), with ±25% jitter.
func backoff(n int) time.Duration {
	d := postBackoffMin << min(n, 10)
	if d > postBackoffMax {
		d = postBackoffMax
	}
	return time.Duration(float64(d) * (0.75 + rand.Float64()/2))
}

// postWithRetry posts cs until it succeeds, Gitea refuses it for good, or within elapses;
// a status not posted is logged and counted as lost.
func postWithRetry(ctx context.Context, p StatusPoster, cs CommitStatus, within time.Duration, cluster, kind string) {
	logger := log.FromContext(ctx).WithValues("repository", cs.Repository, "commit", cs.SHA, "context", cs.Context)
	deadline := time.Now().Add(within)
	for n := 0; ; n++ {
		pctx, cancel := context.WithTimeout(ctx, postBackoffMax)
		err := p.PostStatus(pctx, cs)
		cancel()
		if err == nil {
			statusesPosted.WithLabelValues(cluster, kind, cs.State).Inc()
			return
		}
		statusPostErrors.WithLabelValues(cluster).Inc()
		wait := backoff(n)
		if permanent(err) || time.Now().Add(wait).After(deadline) {
			statusesLost.WithLabelValues(cluster).Inc()
			logger.Error(err, "status lost", "state", cs.State)
			return
		}
		select {
		case <-ctx.Done():
			statusesLost.WithLabelValues(cluster).Inc()
			logger.Error(ctx.Err(), "status lost", "state", cs.State)
			return
		case <-time.After(wait):
		}
	}
}
