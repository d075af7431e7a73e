package flux

import (
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// helmRepository: an OCI HelmRepository names a registry path (oci://host/owner) its
// HelmCharts pull charts from. source-controller does not reconcile it (its status stays
// empty): it is no target, only the way from a chart pushed to the registry to the
// HelmCharts that pull it. HelmRepositories of Helm's HTTP index are never a forge's.
type helmRepository struct{}

func (helmRepository) Name() string { return sourcev1.HelmRepositoryKind }
func (helmRepository) Resource() schema.GroupVersionResource {
	return sourcev1.GroupVersion.WithResource("helmrepositories")
}
func (helmRepository) Stage() int                 { return 0 }
func (helmRepository) Target() bool               { return false }
func (helmRepository) New() client.Object         { return &sourcev1.HelmRepository{} }
func (helmRepository) NewList() client.ObjectList { return &sourcev1.HelmRepositoryList{} }
func (helmRepository) Suspended(o client.Object) bool {
	return o.(*sourcev1.HelmRepository).Spec.Suspend
}
func (helmRepository) Sources(client.Object) []Ref { return nil }
func (helmRepository) Status(o client.Object) Status {
	r := o.(*sourcev1.HelmRepository)
	return status(r, r.Status.ObservedGeneration, r.Status.Conditions, r.Status.LastHandledReconcileAt)
}

// URLs is the registry path of an OCI HelmRepository; a chart pushed there is at
// "<path>/<chart name>", which the matcher looks up by its parent.
func (helmRepository) URLs(o client.Object) []string {
	r := o.(*sourcev1.HelmRepository)
	if r.Spec.Type != sourcev1.HelmRepositoryTypeOCI {
		return nil
	}
	if b, err := normalizeBase(r.Spec.URL); err == nil {
		return []string{b}
	}
	return nil
}

// Follows: a chart pushed under the registry path (its HelmCharts decide which).
func (helmRepository) Follows(o client.Object, p Pushed, _ client.Object) bool {
	return p.OCI() && o.(*sourcev1.HelmRepository).Spec.Type == sourcev1.HelmRepositoryTypeOCI
}

// Slim: its status (source-controller leaves an OCI one empty).
func (helmRepository) Slim(o client.Object) {
	o.(*sourcev1.HelmRepository).Status.Artifact = nil
}

// Judge: nothing to judge, source-controller leaves it alone.
func (helmRepository) Judge(client.Object, Want, map[Ref]client.Object) Judgement { return Judgement{} }

func (helmRepository) Origin(client.Object) string { return "" }
