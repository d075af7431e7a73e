package cluster

import (
	"net/http"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/openova-io/flux-webhook/gitops/flux"
)

// knownMappings returns, built once and shared by every registered cluster, the REST
// mappings of the kinds flux-webhook reads and writes in a cluster: the Flux kinds (each
// adapter names its resource) and the few Kubernetes kinds it touches (Events, a canary's
// Deployments). They are the same in every cluster, so nothing needs to be asked of each;
// controller-runtime's own mapper, asked instead, keeps per cluster every discovered group's
// resources, about 220 KiB a cluster (a heap profile of the binary with 50 clusters).
var knownMappings = sync.OnceValue(func() meta.RESTMapper {
	scheme := flux.SharedScheme()
	m := meta.NewDefaultRESTMapper(nil)
	add := func(gvk schema.GroupVersionKind, plural string) {
		m.AddSpecific(gvk, gvk.GroupVersion().WithResource(plural),
			gvk.GroupVersion().WithResource(strings.ToLower(gvk.Kind)), meta.RESTScopeNamespace)
	}
	for _, k := range flux.Kinds() {
		// Every kind's type is in the scheme (flux.NewScheme); one that were not would be
		// mapped by the dynamic mapper.
		if gvk, err := apiutil.GVKForObject(k.New(), scheme); err == nil {
			add(gvk, k.Resource().Resource)
		}
	}
	add(corev1.SchemeGroupVersion.WithKind("Event"), "events")
	add(eventsv1.SchemeGroupVersion.WithKind("Event"), "events")
	add(appsv1.SchemeGroupVersion.WithKind("Deployment"), "deployments")
	return m
})

// newMapper is a registered cluster's REST mapper: the known mappings first, and for any
// other kind controller-runtime's dynamic mapper of the cluster (which asks the cluster's
// discovery on first use, so never for the known kinds).
func newMapper(cfg *rest.Config, hc *http.Client) (meta.RESTMapper, error) {
	dyn, err := apiutil.NewDynamicRESTMapper(cfg, hc)
	if err != nil {
		return nil, err
	}
	return knownFirst{known: knownMappings(), other: dyn}, nil
}

// knownFirst asks known, then other when known has no match.
type knownFirst struct{ known, other meta.RESTMapper }

var _ meta.RESTMapper = knownFirst{}

func (m knownFirst) KindFor(r schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	if k, err := m.known.KindFor(r); !meta.IsNoMatchError(err) {
		return k, err
	}
	return m.other.KindFor(r)
}

func (m knownFirst) KindsFor(r schema.GroupVersionResource) ([]schema.GroupVersionKind, error) {
	if k, err := m.known.KindsFor(r); !meta.IsNoMatchError(err) {
		return k, err
	}
	return m.other.KindsFor(r)
}

func (m knownFirst) ResourceFor(r schema.GroupVersionResource) (schema.GroupVersionResource, error) {
	if k, err := m.known.ResourceFor(r); !meta.IsNoMatchError(err) {
		return k, err
	}
	return m.other.ResourceFor(r)
}

func (m knownFirst) ResourcesFor(r schema.GroupVersionResource) ([]schema.GroupVersionResource, error) {
	if k, err := m.known.ResourcesFor(r); !meta.IsNoMatchError(err) {
		return k, err
	}
	return m.other.ResourcesFor(r)
}

func (m knownFirst) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	if k, err := m.known.RESTMapping(gk, versions...); !meta.IsNoMatchError(err) {
		return k, err
	}
	return m.other.RESTMapping(gk, versions...)
}

func (m knownFirst) RESTMappings(gk schema.GroupKind, versions ...string) ([]*meta.RESTMapping, error) {
	if k, err := m.known.RESTMappings(gk, versions...); !meta.IsNoMatchError(err) {
		return k, err
	}
	return m.other.RESTMappings(gk, versions...)
}

func (m knownFirst) ResourceSingularizer(resource string) (string, error) {
	if s, err := m.known.ResourceSingularizer(resource); err == nil {
		return s, nil
	}
	return m.other.ResourceSingularizer(resource)
}
