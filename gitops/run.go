package gitops

import (
	"context"
	"errors"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/manager"
)

var _ manager.LeaderElectionRunnable = (*Reporters)(nil)

// Reporters runs one Reporter per cluster of a set, on the leader only: every replica
// requests reconciles, one posts the results.
type Reporters struct {
	Clusters *ClusterSet
	// New builds the reporter of a cluster.
	New func(*Cluster) *Reporter
}

// NeedLeaderElection is true: statuses are posted once.
func (r *Reporters) NeedLeaderElection() bool { return true }

// Start runs the reporters until ctx ends or one fails.
func (r *Reporters) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clusters := r.Clusters.Clusters()
	errs := make(chan error, len(clusters))
	for _, c := range clusters {
		ctrl, err := r.New(c).Controller()
		if err != nil {
			return fmt.Errorf("reporter of cluster %s: %w", c.Name, err)
		}
		go func() {
			if err := ctrl.Start(ctx); err != nil {
				errs <- fmt.Errorf("reporter of cluster %s: %w", c.Name, err)
				return
			}
			errs <- nil
		}()
	}
	var all []error
	for range clusters {
		if err := <-errs; err != nil {
			all = append(all, err)
			cancel()
		}
	}
	return errors.Join(all...)
}
