package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const slotExample = "examples/catalyst/15b-bp-flux-webhook.yaml"

// platformVariables are the post-build substitutions the platform's bootstrap kit provides
// that the slot may use: the Sovereign's FQDN (every slot's), and the region's key (the
// per-region bootstrap kit's, clusters/<SOVEREIGN_FQDN>/<SOVEREIGN_REGION_KEY>/bootstrap-kit;
// empty on a single-region Sovereign).
var platformVariables = []string{"SOVEREIGN_FQDN", "SOVEREIGN_REGION_KEY"}

// substituteVar is Flux's post-build substitution of one ${NAME}, ${NAME:=default} or
// ${NAME:-default} (drone/envsubst, as kustomize-controller runs it): the value when set and
// not empty, else the default.
var substituteVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[=-]([^}]*))?\}`)

func substitute(t *testing.T, text string, vars map[string]string) (string, []string) {
	t.Helper()
	var used []string
	out := substituteVar.ReplaceAllStringFunc(text, func(s string) string {
		m := substituteVar.FindStringSubmatch(s)
		used = append(used, m[1])
		if v := vars[m[1]]; v != "" {
			return v
		}
		return m[2]
	})
	return out, used
}

// The bootstrap-kit slot installs the Blueprint as the platform's slots do
// (clusters/_template/bootstrap-kit/NN-bp-<name>.yaml): the file named by its slot, which the
// HelmRelease's catalyst.openova.io/slot label repeats; its Namespace labelled with the
// Sovereign; an OCI HelmRepository of ghcr.io/openova-io; a HelmRelease of bp-flux-webhook at
// the chart's version, after the HelmReleases of the Blueprint's depends, with the platform's
// install and upgrade remediation and timeouts. It uses only the platform's variables; once
// Flux has substituted them — on a multi-region Sovereign and on a single-region one, whose
// region key is empty — a real API server with Flux's CRDs accepts every object (server-side
// dry run), and the chart takes the HelmRelease's values (its schema, then a render on a
// Cilium cluster): /hook on flux-webhook.<FQDN>, statuses to https://gitea.<FQDN>, the
// region's key as cluster name and region, CiliumNetworkPolicies.
func TestBootstrapKitSlotExample(t *testing.T) {
	integration(t)
	raw, err := os.ReadFile(path(slotExample))
	if err != nil {
		t.Fatal(err)
	}
	slot := regexp.MustCompile(`^([0-9]{2}[a-z]?)-bp-flux-webhook\.yaml$`).FindStringSubmatch(filepath.Base(slotExample))
	if slot == nil {
		t.Fatalf("%s is not named NN-bp-<name>.yaml", slotExample)
	}
	chart := readObject(t, chartDir+"/Chart.yaml")
	var depends []string
	for _, d := range at(readObject(t, blueprintFile), "spec.depends").([]any) {
		depends = append(depends, at(d, "blueprint").(string))
	}
	for _, tc := range []struct {
		name      string
		vars      map[string]string
		regionKey string // what clusterName and region become
	}{
		{"multi-region", map[string]string{"SOVEREIGN_FQDN": "omantel.example.eu", "SOVEREIGN_REGION_KEY": "hel1"}, "hel1"},
		{"single-region", map[string]string{"SOVEREIGN_FQDN": "omantel.example.eu"}, "local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text, used := substitute(t, string(raw), tc.vars)
			for _, v := range used {
				if !slices.Contains(platformVariables, v) {
					t.Errorf("%s uses ${%s}, which the platform does not substitute", slotExample, v)
				}
			}
			objs := decode(t, []byte(text))
			if len(objs) != 3 {
				t.Errorf("%s has %d objects, want the Namespace, the HelmRepository and the HelmRelease", slotExample, len(objs))
			}
			ns := find(t, objs, "Namespace", catalystNS)
			if ns.GetLabels()["catalyst.openova.io/sovereign"] != tc.vars["SOVEREIGN_FQDN"] {
				t.Errorf("Namespace labels %v", ns.GetLabels())
			}
			repo := find(t, objs, "HelmRepository", "bp-flux-webhook")
			for field, want := range map[string]string{"type": "oci", "url": "oci://ghcr.io/openova-io", "secretRef.name": "ghcr-pull"} {
				if got, _, _ := unstructured.NestedString(repo.Object, append([]string{"spec"}, strings.Split(field, ".")...)...); got != want {
					t.Errorf("HelmRepository spec.%s %q, want %q", field, got, want)
				}
			}
			hr := find(t, objs, "HelmRelease", "bp-flux-webhook")
			if got := hr.GetLabels()["catalyst.openova.io/slot"]; got != slot[1] {
				t.Errorf("HelmRelease slot label %q, the file's slot %q", got, slot[1])
			}
			for fields, want := range map[string]any{
				"spec.chart.spec.chart":               at(chart, "name"),
				"spec.chart.spec.version":             at(chart, "version"),
				"spec.chart.spec.sourceRef.kind":      "HelmRepository",
				"spec.chart.spec.sourceRef.name":      repo.GetName(),
				"spec.chart.spec.sourceRef.namespace": repo.GetNamespace(),
				"spec.releaseName":                    "flux-webhook",
				"spec.targetNamespace":                catalystNS,
				"spec.install.timeout":                "15m",
				"spec.install.disableWait":            true,
				"spec.install.remediation.retries":    int64(-1),
				"spec.upgrade.timeout":                "15m",
				"spec.upgrade.disableWait":            true,
				"spec.upgrade.remediation.retries":    int64(3),
			} {
				got, _, _ := unstructured.NestedFieldNoCopy(hr.Object, strings.Split(fields, ".")...)
				if !jsonEqual(got, want) {
					t.Errorf("HelmRelease %s %v, want %v", fields, got, want)
				}
			}
			deps, _, _ := unstructured.NestedSlice(hr.Object, "spec", "dependsOn")
			var names []string
			for _, d := range deps {
				names = append(names, d.(map[string]any)["name"].(string))
			}
			slices.Sort(names)
			want := slices.Sorted(slices.Values(depends))
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
			out, err := helmTemplateAPIs(t, catalystNS, onCilium, valuesFile(t, vb))
			if err != nil {
				t.Fatal(err)
			}
			rendered := decode(t, out)
			route := find(t, rendered, "HTTPRoute", "flux-webhook")
			if hosts, _, _ := unstructured.NestedStringSlice(route.Object, "spec", "hostnames"); !slices.Equal(hosts, []string{"flux-webhook." + tc.vars["SOVEREIGN_FQDN"]}) {
				t.Errorf("HTTPRoute hostnames %v", hosts)
			}
			find(t, rendered, "CiliumNetworkPolicy", "flux-webhook")
			envs := containerOf(t, find(t, rendered, "Deployment", "flux-webhook")).environment(t, catalystNS)
			for name, want := range map[string]string{
				"FLUX_WEBHOOK_GITEA_URL": "https://gitea." + tc.vars["SOVEREIGN_FQDN"], "FLUX_WEBHOOK_CLUSTER_NAME": tc.regionKey, "FLUX_WEBHOOK_REGION": tc.regionKey,
			} {
				if envs[name] != want {
					t.Errorf("%s=%q, want %q", name, envs[name], want)
				}
			}

			ensureNamespace(t, "flux-system")
			for _, o := range objs {
				apply(t, env.kube.Client, o, true)
			}
		})
	}
}
