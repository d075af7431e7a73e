package gitops

import (
	"context"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

var _ manager.LeaderElectionRunnable = (*Reporters)(nil)

// reporterRestart is how long a cluster's reporter waits before starting again after it
// stopped on an error (typically: its caches did not sync because the cluster is down).
const reporterRestart = 10 * time.Second

// Reporters runs one Reporter per cluster of a set, on the leader only (every replica
// requests reconciles, one posts the results), following the set as clusters come and go.
type Reporters struct {
	Clusters *ClusterSet
	// New builds the reporter of a cluster.
	New func(*Cluster) *Reporter
}

// NeedLeaderElection is true: statuses are posted once.
func (r *Reporters) NeedLeaderElection() bool { return true }

// Start runs the reporters until ctx ends.
func (r *Reporters) Start(ctx context.Context) error {
	type running struct {
		stop context.CancelFunc
		done chan struct{}
	}
	all := map[*Cluster]running{}
	stop := func(c *Cluster) {
		all[c].stop()
		<-all[c].done
		delete(all, c)
	}
	for {
		changed := r.Clusters.Changed()
		want := map[*Cluster]bool{}
		for _, c := range r.Clusters.Clusters() {
			want[c] = true
			if _, ok := all[c]; ok {
				continue
			}
			cctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			all[c] = running{cancel, done}
			go func() {
				defer close(done)
				r.run(cctx, c)
			}()
		}
		for c := range all {
			if !want[c] {
				stop(c) // removed, or replaced by a new Cluster of the same name
			}
		}
		select {
		case <-ctx.Done():
			for c := range all {
				stop(c)
			}
			return nil
		case <-changed:
		}
	}
}

// run runs one cluster's reporter until ctx ends, starting it again after an error.
func (r *Reporters) run(ctx context.Context, c *Cluster) {
	logger := log.FromContext(ctx).WithValues("cluster", c.Name)
	for {
		ctrl, err := r.New(c).Controller()
		if err == nil {
			err = ctrl.Start(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		logger.Error(err, "reporter stopped; starting again", "after", reporterRestart.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(reporterRestart):
		}
	}
}
