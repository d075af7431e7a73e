package report

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/gitops/cluster"
)

var _ manager.LeaderElectionRunnable = (*Reporters)(nil)

// reporterRestart is how long a cluster's reporter waits before starting again after it
// stopped on an error (typically: its caches did not sync because the cluster is down).
const reporterRestart = 10 * time.Second

// Reporters runs one Reporter per cluster of a set, on the leader only (every replica
// requests reconciles, one posts the results), following the set as clusters come and go.
type Reporters struct {
	Clusters *cluster.Set
	// New builds the reporter of a cluster.
	New func(*cluster.Cluster) *Reporter
}

// NeedLeaderElection is true: statuses are posted once.
func (r *Reporters) NeedLeaderElection() bool { return true }

// Start runs the reporters until ctx ends.
func (r *Reporters) Start(ctx context.Context) error {
	eachCluster(ctx, r.Clusters, r.run)
	return nil
}

// eachCluster runs run for every cluster of a set, each in its own goroutine with a context
// that ends when the cluster leaves the set (or is replaced by a new Cluster of the same
// name), until ctx ends; it returns once every run returned.
func eachCluster(ctx context.Context, set *cluster.Set, run func(context.Context, *cluster.Cluster)) {
	type running struct {
		stop context.CancelFunc
		done chan struct{}
	}
	all := map[*cluster.Cluster]running{}
	stop := func(c *cluster.Cluster) {
		all[c].stop()
		<-all[c].done
		delete(all, c)
	}
	for {
		changed := set.Changed()
		want := map[*cluster.Cluster]bool{}
		for _, c := range set.Clusters() {
			want[c] = true
			if _, ok := all[c]; ok {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			all[c] = running{cancel, done}
			go func() {
				defer close(done)
				run(cctx, c)
			}()
		}
		for c := range all {
			if !want[c] {
				stop(c)
			}
		}
		select {
		case <-ctx.Done():
			for c := range all {
				stop(c)
			}
			return
		case <-changed:
		}
	}
}

// run runs one cluster's reporter until ctx ends, starting it again after an error, and
// when the kinds the cluster serves change (a CRD installed or removed).
func (r *Reporters) run(ctx context.Context, c *cluster.Cluster) {
	logger := log.FromContext(ctx).WithValues("cluster", c.Name)
	initMetrics(c.Name)
	for {
		changed := c.KindsChanged()
		kctx, cancel := context.WithCancel(ctx)
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			select {
			case <-changed:
				cancel()
			case <-kctx.Done():
			}
		}()
		rep := r.New(c)
		ctrl, err := rep.Controller()
		followed := make(chan struct{})
		if err == nil {
			go func() {
				defer close(followed)
				rep.FollowRecordKey(kctx)
			}()
			err = ctrl.Start(kctx)
		} else {
			close(followed)
		}
		kindsChanged := kctx.Err() != nil && ctx.Err() == nil
		cancel()
		<-followed
		<-stopped
		if ctx.Err() != nil {
			return
		}
		if kindsChanged {
			logger.Info("reporter restarting for the cluster's kinds", "kinds", len(c.Kinds()))
			continue
		}
		logger.Error(err, "reporter stopped; starting again", "after", reporterRestart.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(reporterRestart):
		}
	}
}
