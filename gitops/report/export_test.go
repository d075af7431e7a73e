package report

import "github.com/openova-io/flux-webhook/gitops/cluster"

// Reporting reports whether c's reporter witnesses its records in this process (its
// witness standing aside).
func Reporting(c *cluster.Cluster) bool {
	on, _ := reporting.of(c)
	return on
}
