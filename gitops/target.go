package gitops

import (
	"fmt"
	"strings"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The Flux kinds flux-webhook requests and reports on, sources first.
const (
	KindGitRepository = sourcev1.GitRepositoryKind
	KindHelmChart     = sourcev1.HelmChartKind
	KindKustomization = kustomizev1.KustomizationKind
	KindHelmRelease   = helmv2.HelmReleaseKind
)

// Kinds lists the kinds in request order: a source before what is built from it.
var Kinds = []string{KindGitRepository, KindHelmChart, KindKustomization, KindHelmRelease}

// Target names one Flux object in one cluster.
type Target struct {
	Cluster   string `json:"cluster"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Context is the Gitea commit status context of the target:
// flux/<cluster>/<kind in lower case>/<namespace>/<name>.
func (t Target) Context() string {
	return fmt.Sprintf("flux/%s/%s/%s/%s", t.Cluster, strings.ToLower(t.Kind), t.Namespace, t.Name)
}

func (t Target) String() string {
	return fmt.Sprintf("%s/%s/%s/%s", t.Cluster, t.Kind, t.Namespace, t.Name)
}

// NewScheme returns a scheme with the Kubernetes built-ins and the Flux kinds flux-webhook
// reads.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(sourcev1.AddToScheme(s))
	utilruntime.Must(kustomizev1.AddToScheme(s))
	utilruntime.Must(helmv2.AddToScheme(s))
	return s
}

// newObject returns an empty typed object of a Flux kind, nil for any other kind.
func newObject(kind string) client.Object {
	switch kind {
	case KindGitRepository:
		return &sourcev1.GitRepository{}
	case KindHelmChart:
		return &sourcev1.HelmChart{}
	case KindKustomization:
		return &kustomizev1.Kustomization{}
	case KindHelmRelease:
		return &helmv2.HelmRelease{}
	}
	return nil
}

// kindOf returns the Flux kind of a typed object.
func kindOf(o client.Object) string {
	switch o.(type) {
	case *sourcev1.GitRepository:
		return KindGitRepository
	case *sourcev1.HelmChart:
		return KindHelmChart
	case *kustomizev1.Kustomization:
		return KindKustomization
	case *helmv2.HelmRelease:
		return KindHelmRelease
	}
	return ""
}

// suspended reports whether Flux is told to leave the object alone.
func suspended(o client.Object) bool {
	switch o := o.(type) {
	case *sourcev1.GitRepository:
		return o.Spec.Suspend
	case *sourcev1.HelmChart:
		return o.Spec.Suspend
	case *kustomizev1.Kustomization:
		return o.Spec.Suspend
	case *helmv2.HelmRelease:
		return o.Spec.Suspend
	}
	return false
}

// lastHandled returns status.lastHandledReconcileAt.
func lastHandled(o client.Object) string {
	switch o := o.(type) {
	case *sourcev1.GitRepository:
		return o.Status.LastHandledReconcileAt
	case *sourcev1.HelmChart:
		return o.Status.LastHandledReconcileAt
	case *kustomizev1.Kustomization:
		return o.Status.LastHandledReconcileAt
	case *helmv2.HelmRelease:
		return o.Status.LastHandledReconcileAt
	}
	return ""
}

// observedGeneration returns status.observedGeneration.
func observedGeneration(o client.Object) int64 {
	switch o := o.(type) {
	case *sourcev1.GitRepository:
		return o.Status.ObservedGeneration
	case *sourcev1.HelmChart:
		return o.Status.ObservedGeneration
	case *kustomizev1.Kustomization:
		return o.Status.ObservedGeneration
	case *helmv2.HelmRelease:
		return o.Status.ObservedGeneration
	}
	return 0
}

// sourceRefs returns what an object builds from, in its cluster: the GitRepository of a
// Kustomization or HelmChart, the HelmChart of a HelmRelease (the one helm-controller
// reports, else the one its template generates, else its chartRef). Sources of other kinds
// are none of flux-webhook's business.
func sourceRefs(o client.Object) (gitRepository, helmChart *types.NamespacedName) {
	switch o := o.(type) {
	case *kustomizev1.Kustomization:
		if o.Spec.SourceRef.Kind == KindGitRepository {
			ns := o.Spec.SourceRef.Namespace
			if ns == "" {
				ns = o.Namespace
			}
			return &types.NamespacedName{Namespace: ns, Name: o.Spec.SourceRef.Name}, nil
		}
	case *sourcev1.HelmChart:
		if o.Spec.SourceRef.Kind == KindGitRepository {
			return &types.NamespacedName{Namespace: o.Namespace, Name: o.Spec.SourceRef.Name}, nil
		}
	case *helmv2.HelmRelease:
		ref := o.Status.GetHelmChartReference()
		if ref == nil {
			ref = o.GetHelmChartTemplateReference()
		}
		if ref == nil {
			ref = o.GetHelmChartReference()
		}
		if ref != nil && ref.Kind == KindHelmChart {
			return nil, &types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
		}
	}
	return nil, nil
}
