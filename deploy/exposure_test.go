package deploy_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
)

// asInt reads a decoded JSON number.
func asInt(v any) int64 {
	switch n := v.(type) {
	case float64:
		return int64(n)
	case int64:
		return n
	case int:
		return int64(n)
	}
	return -1
}

// gatewayDuration parses a Gateway API duration (e.g. 1h30m, 35m, 2100s, 500ms).
func gatewayDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	if !regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`).MatchString(s) {
		t.Fatalf("%q is not a Gateway API duration", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitStream is the longest a /hook?wait=true stream lasts (its largest timeout).
const waitStream = 30 * time.Minute

// How /hook and the platform API are exposed: an HTTPRoute (the chart's httpRoute, the
// httproute component) or an Ingress, each routing /hook to the Service's http port, and /api/
// to its platform port only when asked; the HTTPRoute's timeouts outlast a waiting stream.
// The Service has the platform port only with the platform API. Every rendering is applied
// to the API server with the Gateway API's CRDs (TestRenderedApplyDryRun).
func TestExposure(t *testing.T) {
	integration(t)
	type route struct{ path, port string }
	for _, tc := range []struct {
		name, values  string
		kustomize     bool // the catalyst overlay with the httproute component, not the chart
		ingress, http []route
		servicePorts  []string
	}{
		{name: "chart defaults", values: `{"global": {"sovereignFQDN": "fra1.example.eu"}}`,
			ingress: []route{{"/hook", "http"}}, servicePorts: []string{"http:80", "platform:8083"}},
		{name: "chart, no domain", values: `{}`, servicePorts: []string{"http:80", "platform:8083"}},
		{name: "chart, platform API exposed", values: `{"global": {"sovereignFQDN": "fra1.example.eu"}, "ingress": {"exposePlatformApi": true}}`,
			ingress: []route{{"/hook", "http"}, {"/api/", "platform"}}, servicePorts: []string{"http:80", "platform:8083"}},
		{name: "chart, platform API exposed but off", values: `{"global": {"sovereignFQDN": "fra1.example.eu"}, "ingress": {"exposePlatformApi": true}, "platformApi": {"enabled": false}}`,
			ingress: []route{{"/hook", "http"}}, servicePorts: []string{"http:80"}},
		{name: "chart, HTTPRoute", values: `{"global": {"sovereignFQDN": "fra1.example.eu"}, "ingress": {"enabled": false}, "httpRoute": {"enabled": true, "exposePlatformApi": true}}`,
			http: []route{{"/hook", "80"}, {"/api/", "8083"}}, servicePorts: []string{"http:80", "platform:8083"}},
		{name: "chart, both", values: `{"global": {"sovereignFQDN": "fra1.example.eu"}, "httpRoute": {"enabled": true, "timeouts": {"request": "1h", "backendRequest": "31m"}}}`,
			ingress: []route{{"/hook", "http"}}, http: []route{{"/hook", "80"}}, servicePorts: []string{"http:80", "platform:8083"}},
		{name: "overlay, httproute component", kustomize: true,
			http: []route{{"/hook", "80"}}, servicePorts: []string{"http:80", "platform:8083"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out []byte
			if tc.kustomize {
				out = tool(t, "kustomize", "build", overlayWith(t, "../../components/httproute"))
			} else {
				out = helmTemplate(t, catalystNS, valuesFile(t, tc.values))
			}
			objs := decode(t, out)
			var ingress, http []route
			var svcPorts []string
			for _, o := range objs {
				switch o.GetKind() {
				case "Ingress":
					rules, _, _ := unstructured.NestedSlice(o.Object, "spec", "rules")
					for _, r := range rules {
						if h, _, _ := unstructured.NestedString(r.(map[string]any), "host"); h != "flux-webhook.fra1.example.eu" {
							t.Errorf("Ingress host %s", h)
						}
						paths, _, _ := unstructured.NestedSlice(r.(map[string]any), "http", "paths")
						for _, p := range paths {
							pm := p.(map[string]any)
							port, _, _ := unstructured.NestedString(pm, "backend", "service", "port", "name")
							ingress = append(ingress, route{pm["path"].(string), port})
						}
					}
				case "HTTPRoute":
					if hosts, _, _ := unstructured.NestedStringSlice(o.Object, "spec", "hostnames"); !slices.Equal(hosts, []string{"flux-webhook.fra1.example.eu"}) {
						t.Errorf("HTTPRoute hostnames %v", hosts)
					}
					rules, _, _ := unstructured.NestedSlice(o.Object, "spec", "rules")
					for _, r := range rules {
						rm := r.(map[string]any)
						matches, _, _ := unstructured.NestedSlice(rm, "matches")
						p, _, _ := unstructured.NestedString(matches[0].(map[string]any), "path", "value")
						backends, _, _ := unstructured.NestedSlice(rm, "backendRefs")
						http = append(http, route{p, strconv.FormatInt(asInt(backends[0].(map[string]any)["port"]), 10)})
						if p != "/hook" {
							continue
						}
						// The waiting stream's route: both timeouts set and longer than it.
						for _, k := range []string{"request", "backendRequest"} {
							d, ok, _ := unstructured.NestedString(rm, "timeouts", k)
							if !ok || gatewayDuration(t, d) <= waitStream {
								t.Errorf("HTTPRoute /hook timeouts.%s %q: a waiting stream lasts up to %s", k, d, waitStream)
							}
						}
					}
				case "Service":
					ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
					for _, p := range ports {
						pm := p.(map[string]any)
						svcPorts = append(svcPorts, pm["name"].(string)+":"+strconv.FormatInt(asInt(pm["port"]), 10))
						if tp := pm["targetPort"]; tp != pm["name"] {
							t.Errorf("Service port %s targets %v, want the container port of its name", pm["name"], tp)
						}
					}
				}
			}
			if !slices.Equal(ingress, tc.ingress) || !slices.Equal(http, tc.http) || !slices.Equal(svcPorts, tc.servicePorts) {
				t.Errorf("Ingress %v, HTTPRoute %v, Service %v; want %v, %v, %v", ingress, http, svcPorts, tc.ingress, tc.http, tc.servicePorts)
			}
		})
	}
}

// overlayWith copies deploy/ and adds components to the copy of the Catalyst overlay (after
// its own); it returns the copy's overlay directory.
func overlayWith(t *testing.T, components ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "deploy")
	if err := os.CopyFS(dir, os.DirFS(path("deploy"))); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlays", filepath.Base(catalystDir))
	k := filepath.Join(overlay, "kustomization.yaml")
	b, err := os.ReadFile(k)
	if err != nil {
		t.Fatal(err)
	}
	add := "components:\n"
	for _, c := range components {
		add += "  - " + c + "\n"
	}
	if bytes.Count(b, []byte("\ncomponents:\n")) != 1 {
		t.Fatalf("%s/kustomization.yaml: want one components list", catalystDir)
	}
	if err := os.WriteFile(k, bytes.Replace(b, []byte("\ncomponents:\n"), []byte("\n"+add), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	return overlay
}

// The External Secrets API version and store are settings: the chart renders each
// ExternalSecret as external-secrets.io/v1beta1 (the default: Catalyst's ESO 0.10.7 serves
// no v1) or v1, from the ClusterSecretStore vault-region1 (the default, Catalyst's) or a
// SecretStore, and so do the base (v1beta1) and the externalsecrets-v1 component; the ESO
// CRDs (v0.16.2) serve both versions, and the API server accepts every rendered
// ExternalSecret of each, the record key's dataFrom extract included, with the platform's
// key paths catalyst/flux-webhook/<purpose> by default.
func TestExternalSecretVersions(t *testing.T) {
	integration(t)
	dc, err := discovery.NewDiscoveryClientForConfig(env.kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, gv := range []string{"external-secrets.io/v1", "external-secrets.io/v1beta1"} {
		res, err := dc.ServerResourcesForGroupVersion(gv)
		if err != nil || !slices.ContainsFunc(res.APIResources, func(r metav1.APIResource) bool { return r.Name == "externalsecrets" }) {
			t.Fatalf("%s does not serve externalsecrets: %v", gv, err)
		}
	}
	ns := "es-" + randomHex(3)
	ensureNamespace(t, ns)
	base := filepath.Join(t.TempDir(), "v1")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	rel := func(p string) string {
		r, err := filepath.Rel(base, path(p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := os.WriteFile(filepath.Join(base, "kustomization.yaml"), []byte("resources: ["+rel("deploy/base")+"]\ncomponents: ["+
		rel("deploy/components/shared-token")+", "+rel("deploy/components/externalsecrets-v1")+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		out        func(t *testing.T) []byte
		apiVersion string
		store      string // kind/name
	}{
		{"chart v1beta1", func(t *testing.T) []byte {
			return helmTemplate(t, ns, valuesFile(t, `{"sharedToken": {"enabled": true}}`))
		}, "external-secrets.io/v1beta1", "ClusterSecretStore/vault-region1"},
		{"chart v1, SecretStore", func(t *testing.T) []byte {
			return helmTemplate(t, ns, valuesFile(t, `{"sharedToken": {"enabled": true}, "externalSecrets": {"apiVersion": "external-secrets.io/v1", "storeKind": "SecretStore", "storeName": "openbao"}}`))
		}, "external-secrets.io/v1", "SecretStore/openbao"},
		{"base", func(t *testing.T) []byte { return kustomize(t, "deploy/base") }, "external-secrets.io/v1beta1", "ClusterSecretStore/vault-region1"},
		{"base with the v1 component", func(t *testing.T) []byte { return tool(t, "kustomize", "build", base) }, "external-secrets.io/v1", "ClusterSecretStore/vault-region1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			for _, o := range decode(t, tc.out(t)) {
				if o.GetKind() != "ExternalSecret" {
					continue
				}
				names = append(names, strings.TrimPrefix(o.GetName(), "flux-webhook-"))
				kind, _, _ := unstructured.NestedString(o.Object, "spec", "secretStoreRef", "kind")
				store, _, _ := unstructured.NestedString(o.Object, "spec", "secretStoreRef", "name")
				if o.GetAPIVersion() != tc.apiVersion || kind+"/"+store != tc.store {
					t.Errorf("%s: %s from %s/%s, want %s from %s", o.GetName(), o.GetAPIVersion(), kind, store, tc.apiVersion, tc.store)
				}
				var key string
				if data, _, _ := unstructured.NestedSlice(o.Object, "spec", "data"); len(data) > 0 {
					key, _, _ = unstructured.NestedString(data[0].(map[string]any), "remoteRef", "key")
				} else if from, _, _ := unstructured.NestedSlice(o.Object, "spec", "dataFrom"); len(from) > 0 {
					key, _, _ = unstructured.NestedString(from[0].(map[string]any), "extract", "key")
				}
				purpose := strings.TrimPrefix(o.GetName(), "flux-webhook-")
				if want := "catalyst/flux-webhook/" + map[string]string{"gitea": "gitea-token", "platform": "platform-token"}[purpose]; key != want && key != "catalyst/flux-webhook/"+purpose {
					t.Errorf("%s reads OpenBao key %q", o.GetName(), key)
				}
				o.SetNamespace(ns)
				apply(t, env.kube.Client, o, true)
			}
			slices.Sort(names)
			want := []string{"gitea", "hook-key", "platform", "record-key", "webhook-key"}
			if tc.name != "base" {
				want = []string{"gitea", "hook-key", "platform", "record-key", "shared-token", "webhook-key"}
			}
			if !slices.Equal(names, want) {
				t.Errorf("ExternalSecrets %v, want %v", names, want)
			}
		})
	}
}
