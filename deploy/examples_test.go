package deploy_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const fluxExample = "examples/catalyst/flux-webhook.yaml"

// The post-build substitutions fluxExample uses, with values for the test.
var fluxExampleVars = map[string]string{
	"SOVEREIGN_DOMAIN": "example.eu",
	"LOCATION_CODE":    "fra1",
	"REGION":           "eu-central",
	"CLUSTER_NAME":     "fra1",
	"SOVEREIGN_FQDN":   "fra1.example.eu",
	"API_SERVER_CIDR":  "10.0.0.2/32",
}

// The Flux example installs the Blueprint as the platform's bootstrap kit does: an OCI
// HelmRepository of ghcr.io/openova-io (§10) and a HelmRelease of bp-flux-webhook at the
// chart's version, depending on the HelmReleases of the Blueprint's depends. A real API
// server with Flux's CRDs accepts both (server-side dry run), and the chart accepts the
// HelmRelease's values (its schema, then a render) once Flux has substituted them.
func TestFluxHelmReleaseExample(t *testing.T) {
	integration(t)
	raw, err := os.ReadFile(path(fluxExample))
	if err != nil {
		t.Fatal(err)
	}
	substituted := regexp.MustCompile(`\$\{([A-Z_]+)\}`).ReplaceAllStringFunc(string(raw), func(s string) string {
		v, ok := fluxExampleVars[s[2:len(s)-1]]
		if !ok {
			t.Errorf("%s uses %s, which the test has no value for", fluxExample, s)
		}
		return v
	})
	objs := decode(t, []byte(substituted))
	repo := find(t, objs, "HelmRepository", "bp-flux-webhook")
	hr := find(t, objs, "HelmRelease", "bp-flux-webhook")
	if len(objs) != 2 {
		t.Errorf("%s has %d objects, want the HelmRepository and the HelmRelease", fluxExample, len(objs))
	}
	for field, want := range map[string]string{"type": "oci", "url": "oci://ghcr.io/openova-io"} {
		if got, _, _ := unstructured.NestedString(repo.Object, "spec", field); got != want {
			t.Errorf("HelmRepository spec.%s %q, want %q", field, got, want)
		}
	}
	chart := readObject(t, chartDir+"/Chart.yaml")
	for fields, want := range map[string]string{
		"spec.chart.spec.chart":               at(chart, "name").(string),
		"spec.chart.spec.version":             at(chart, "version").(string),
		"spec.chart.spec.sourceRef.kind":      "HelmRepository",
		"spec.chart.spec.sourceRef.name":      repo.GetName(),
		"spec.chart.spec.sourceRef.namespace": repo.GetNamespace(),
		"spec.releaseName":                    "flux-webhook",
		"spec.targetNamespace":                catalystNS,
	} {
		if got, _, _ := unstructured.NestedString(hr.Object, strings.Split(fields, ".")...); got != want {
			t.Errorf("HelmRelease %s %q, want %q", fields, got, want)
		}
	}
	// dependsOn: the bootstrap kit's HelmReleases of every Blueprint blueprint.yaml depends on.
	deps, _, _ := unstructured.NestedSlice(hr.Object, "spec", "dependsOn")
	var names []string
	for _, d := range deps {
		names = append(names, d.(map[string]any)["name"].(string))
	}
	var want []string
	for _, d := range at(readObject(t, blueprintFile), "spec.depends").([]any) {
		want = append(want, at(d, "blueprint").(string))
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("HelmRelease dependsOn %v, the Blueprint's depends %v", names, want)
	}

	values, _, _ := unstructured.NestedMap(hr.Object, "spec", "values")
	merged := deepMerge(deepCopyJSON(t, readObject(t, chartDir+"/values.yaml")).(map[string]any), deepCopyJSON(t, values).(map[string]any))
	if errs := schemaErrors(readObject(t, valuesSchema), merged); len(errs) > 0 {
		t.Errorf("the HelmRelease's values against values.schema.json:\n%s", strings.Join(errs, "\n"))
	}
	vb, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	rendered := decode(t, helmTemplate(t, catalystNS, valuesFile(t, vb)))
	route := find(t, rendered, "HTTPRoute", "flux-webhook")
	if hosts, _, _ := unstructured.NestedStringSlice(route.Object, "spec", "hostnames"); !slices.Equal(hosts, []string{"flux-webhook.fra1.example.eu"}) {
		t.Errorf("the example's HTTPRoute hostnames %v", hosts)
	}

	ensureNamespace(t, "flux-system")
	for _, o := range objs {
		apply(t, env.kube.Client, o, true)
	}
}
