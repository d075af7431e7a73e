package cluster_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
)

// Whatever budget a write of the replica spends (a push's request, the reporter's
// bookkeeping), it is what the replica wrote last: the next request builds on it, not on an
// older write of its own that the API server has moved past (a conflict on every object).
func TestWrittenIsEveryWrite(t *testing.T) {
	fluxtest.Integration(t)
	ns := fluxtest.Namespace(t)
	ks := fluxtest.Kustomization(ns, "app", ns, "src")
	fluxtest.Create(t, ks)
	c := fluxtest.Local
	for _, b := range []cluster.Budget{cluster.Requests, cluster.Bookkeeping} {
		t.Run(b.String(), func(t *testing.T) {
			m, err := c.PatchMetadata(t.Context(), b, ks, c.Written(flux.RefOf(ks)), func(m *metav1.PartialObjectMetadata) error {
				m.Annotations["test.flux-webhook.openova.io/budget"] = b.String()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			w := c.Written(flux.RefOf(ks))
			switch {
			case w == nil:
				t.Fatal("the write is not remembered")
			case w.ResourceVersion != m.ResourceVersion:
				t.Fatalf("remembered resourceVersion %s, the API server answered %s", w.ResourceVersion, m.ResourceVersion)
			case w.Annotations["test.flux-webhook.openova.io/budget"] != b.String():
				t.Fatalf("remembered annotations %v", w.Annotations)
			}
		})
	}
}
