package cluster

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/openova-io/flux-webhook/gitops/flux"
)

// asked is a mapper that only counts what it is asked, and knows one kind.
type asked struct {
	meta.RESTMapper
	n int
}

func newAsked() *asked {
	m := meta.NewDefaultRESTMapper(nil)
	gvk := schema.GroupVersionKind{Group: "example.com", Version: "v1", Kind: "Widget"}
	m.Add(gvk, meta.RESTScopeNamespace)
	return &asked{RESTMapper: m}
}

func (a *asked) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	a.n++
	return a.RESTMapper.RESTMapping(gk, versions...)
}

func (a *asked) KindFor(r schema.GroupVersionResource) (schema.GroupVersionKind, error) {
	a.n++
	return a.RESTMapper.KindFor(r)
}

// TestKnownMappingsFirst: the kinds flux-webhook reads are mapped without asking the
// cluster's own mapper (which would run its discovery), at the resource each adapter
// names; any other kind, or a known kind at another version, is the cluster's mapper's.
func TestKnownMappingsFirst(t *testing.T) {
	type want struct {
		resource string
		asked    int
	}
	tests := []struct {
		name     string
		gk       schema.GroupKind
		versions []string
		want     want
	}{
		{"an Event", schema.GroupKind{Kind: "Event"}, []string{"v1"}, want{"events", 0}},
		{"an events.k8s.io Event", schema.GroupKind{Group: "events.k8s.io", Kind: "Event"}, []string{"v1"}, want{"events", 0}},
		{"a canary's Deployment", schema.GroupKind{Group: "apps", Kind: "Deployment"}, []string{"v1"}, want{"deployments", 0}},
		{"another kind", schema.GroupKind{Group: "example.com", Kind: "Widget"}, []string{"v1"}, want{"widgets", 1}},
		{"a Flux kind at another version", schema.GroupKind{Group: "kustomize.toolkit.fluxcd.io", Kind: "Kustomization"}, []string{"v1beta1"}, want{"", 1}},
		{"a kind nobody knows", schema.GroupKind{Group: "example.com", Kind: "Gadget"}, []string{"v1"}, want{"", 1}},
	}
	for _, k := range flux.Kinds() {
		gvk, _, err := flux.SharedScheme().ObjectKinds(k.New())
		if err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct {
			name     string
			gk       schema.GroupKind
			versions []string
			want     want
		}{"Flux " + k.Name(), gvk[0].GroupKind(), []string{gvk[0].Version}, want{k.Resource().Resource, 0}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			other := newAsked()
			m := knownFirst{known: knownMappings(), other: other}
			got, err := m.RESTMapping(tt.gk, tt.versions...)
			switch {
			case tt.want.resource == "" && !meta.IsNoMatchError(err):
				t.Errorf("RESTMapping(%v) = %v, %v; want no match", tt.gk, got, err)
			case tt.want.resource != "" && err != nil:
				t.Fatalf("RESTMapping(%v): %v", tt.gk, err)
			case tt.want.resource != "" && (got.Resource.Resource != tt.want.resource || got.Scope.Name() != meta.RESTScopeNameNamespace):
				t.Errorf("RESTMapping(%v) = %s, scope %s; want %s, namespaced", tt.gk, got.Resource, got.Scope.Name(), tt.want.resource)
			}
			if other.n != tt.want.asked {
				t.Errorf("the cluster's mapper was asked %d times, want %d", other.n, tt.want.asked)
			}
		})
	}
	t.Run("KindFor", func(t *testing.T) {
		other := newAsked()
		m := knownFirst{known: knownMappings(), other: other}
		gvk, err := m.KindFor(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"})
		if err != nil || gvk.Kind != "Deployment" || other.n != 0 {
			t.Errorf("KindFor(deployments) = %v, %v, the cluster's asked %d times; want Deployment, asked none", gvk, err, other.n)
		}
		if gvk, err := m.KindFor(schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}); err != nil || gvk.Kind != "Widget" || other.n != 1 {
			t.Errorf("KindFor(widgets) = %v, %v, the cluster's asked %d times; want Widget, asked once", gvk, err, other.n)
		}
	})
}

// TestSharedScheme: every registered cluster gets the same scheme, with every Flux kind.
func TestSharedScheme(t *testing.T) {
	if flux.SharedScheme() != flux.SharedScheme() {
		t.Fatal("SharedScheme built twice")
	}
	for _, k := range flux.Kinds() {
		if _, _, err := flux.SharedScheme().ObjectKinds(k.New()); err != nil {
			t.Errorf("%s: %v", k.Name(), err)
		}
	}
}
