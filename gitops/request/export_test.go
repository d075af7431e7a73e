package request

import (
	"context"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/record"
)

// Work works the push of rec in c, as the worker's queue does with the copy its informer
// holds.
func (w *Worker) Work(ctx context.Context, c *cluster.Cluster, rec *record.Push) ([]api.Outcome, bool, error) {
	return w.work(ctx, c, rec)
}

// MarkDone records a cluster's done mark of the push of key, as work does once the push is
// requested there.
func (w *Worker) MarkDone(ctx context.Context, key, cluster string, requested int) error {
	return w.marks.record(ctx, w.Store, key, doneMark{cluster: cluster, requested: requested})
}
