package report

import (
	"context"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/gitops/cluster"
)

var _ manager.LeaderElectionRunnable = (*Witnesses)(nil)

// Witnesses keeps, on every replica, the memory of the newest request record seen on each
// Flux object (cluster.Witness) as its caches see the objects change: the replica that takes
// the lead then knows a record put back from before, however long ago its predecessor saw
// the newer one. It costs one HMAC per change of an object that carries a record.
type Witnesses struct {
	Clusters *cluster.Set
}

// NeedLeaderElection is false: every replica may lead next.
func (w *Witnesses) NeedLeaderElection() bool { return false }

// Start witnesses every cluster's records until ctx ends.
func (w *Witnesses) Start(ctx context.Context) error {
	eachCluster(ctx, w.Clusters, witness)
	return nil
}

// witness registers a handler on the informer of every kind the cluster serves, again when
// they change, until ctx ends.
func witness(ctx context.Context, c *cluster.Cluster) {
	type registration struct {
		inf cache.Informer
		reg toolscache.ResourceEventHandlerRegistration
	}
	for {
		changed := c.KindsChanged()
		var regs []registration
		for _, k := range c.Kinds() {
			kind := k.Name()
			see := func(o any) {
				if obj, ok := o.(client.Object); ok {
					c.Witness(kind, obj)
				}
			}
			inf, err := c.GetCache().GetInformer(ctx, k.New(), cache.BlockUntilSynced(false))
			if err != nil {
				if ctx.Err() == nil {
					log.FromContext(ctx).Error(err, "witness records", "cluster", c.Name, "kind", kind)
				}
				continue
			}
			reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: see, UpdateFunc: func(_, o any) { see(o) }})
			if err == nil {
				regs = append(regs, registration{inf, reg})
			}
		}
		select {
		case <-ctx.Done():
		case <-changed:
		}
		for _, r := range regs {
			_ = r.inf.RemoveEventHandler(r.reg)
		}
		if ctx.Err() != nil {
			return
		}
	}
}
