package gitops

import "sigs.k8s.io/controller-runtime/pkg/client"

// Seal writes rec onto o's annotations as the cluster's reporter would (with its MAC): for
// tests that play a flux-webhook replica that stopped half way.
func Seal(c *Cluster, o client.Object, rec Record) error {
	if o.GetAnnotations() == nil {
		o.SetAnnotations(map[string]string{})
	}
	return c.sealRecord(kindOf(o), o, rec)
}
