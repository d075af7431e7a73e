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
// they change, until ctx ends; none while the cluster's reporter runs in this process and
// witnesses in its own (observed).
func witness(ctx context.Context, c *cluster.Cluster) {
	type registration struct {
		inf cache.Informer
		reg toolscache.ResourceEventHandlerRegistration
	}
	for {
		changed := c.KindsChanged()
		aside, _ := reporting.of(c)
		var regs []registration
		for _, k := range c.Kinds() {
			if aside {
				break // the reporter's handlers witness (observed)
			}
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
		// Until the kinds change or this cluster's reporter starts or stops witnessing (other
		// clusters' reporters change the set too: those do not matter here).
		for wait := true; wait; {
			now, next := reporting.of(c)
			if now != aside {
				break
			}
			select {
			case <-ctx.Done():
				wait = false
			case <-changed:
				wait = false
			case <-next:
			}
		}
		for _, r := range regs {
			_ = r.inf.RemoveEventHandler(r.reg)
		}
		if ctx.Err() != nil {
			return
		}
	}
}
