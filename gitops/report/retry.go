package report

import (
	"context"
	"errors"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/tracing"
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

// postStatus posts a status, unless its request has no commit (an OCI artifact that records
// none): there is nothing to post it on, and it is logged instead (the stream has it too).
// The post is a span of the push's trace, carried by its request (trace).
func postStatus(ctx context.Context, p StatusPoster, trace, delivery string, cs CommitStatus) (err error) {
	ctx, span := tracing.StartFrom(ctx, trace, "report.status", append(tracing.Push(delivery, cs.Repository, "", cs.SHA),
		tracing.ContextKey.String(cs.Context), tracing.StateKey.String(cs.State))...)
	defer func() { tracing.End(span, err) }()
	if cs.SHA == "" {
		log.FromContext(ctx).Info("result without a commit to post it on", "context", cs.Context, "state", cs.State,
			"description", cs.Description)
		return nil
	}
	return p.PostStatus(ctx, cs)
}

// send posts a status of req: to the forge, or, when the statuses of req's push are per
// cluster, to the aggregator (only logged without one).
func send(ctx context.Context, poster, aggregator StatusPoster, req record.Request, cs CommitStatus) error {
	if req.Aggregate == "" {
		return postStatus(ctx, poster, req.Trace, req.Delivery, cs)
	}
	if aggregator == nil {
		log.FromContext(ctx).Info("result of a push with per-cluster statuses, no aggregator", "context", cs.Context, "state", cs.State)
		return nil
	}
	cs.Push = req.Aggregate
	return aggregator.PostStatus(ctx, cs)
}
