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
