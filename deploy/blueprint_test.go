package deploy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/Masterminds/semver/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The Catalyst Blueprint (platform/flux-webhook) kept to the platform's guide,
// openova-io/openova docs/RUNBOOKS.md §3, and to the shape of the platform's own Blueprints
// (platform/flux, platform/gitea, platform/external-secrets, platform/newapi there); the
// platform's schema, CRD and CI guards: platform_test.go.

const (
	blueprintFile = "platform/flux-webhook/blueprint.yaml"
	valuesSchema  = chartDir + "/values.schema.json"
)

// readJSONish reads a YAML or JSON file of the repository as decoded JSON.
func readJSONish(t *testing.T, p string) any {
	t.Helper()
	b, err := os.ReadFile(path(p))
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	var v any
	if err := json.Unmarshal(j, &v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return v
}

func readObject(t *testing.T, p string) map[string]any {
	t.Helper()
	m, ok := readJSONish(t, p).(map[string]any)
	if !ok {
		t.Fatalf("%s is not an object", p)
	}
	return m
}

// at returns the value at a dotted path of decoded JSON (nil when absent).
func at(v any, p string) any {
	for _, k := range strings.Split(p, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func deepCopyJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// configSchema: the Blueprint's configuration (what the console's form asks for), generated
// from values.schema.json — one source of truth — for the values it marks x-catalyst-config,
// with their references inlined and values.yaml's defaults. `-update` rewrites blueprint.yaml's
// configSchema.
func TestBlueprintConfigSchema(t *testing.T) {
	want := configSchemaOf(t, readObject(t, valuesSchema), readObject(t, chartDir+"/values.yaml"))
	if *update {
		writeConfigSchema(t, want)
	}
	got := at(readObject(t, blueprintFile), "spec.configSchema")
	if !reflect.DeepEqual(got, deepCopyJSON(t, want)) {
		gb, _ := yaml.Marshal(got)
		wb, _ := yaml.Marshal(want)
		t.Errorf("%s configSchema is not what %s gives (go test ./deploy -run TestBlueprintConfigSchema -update):\n%s",
			blueprintFile, valuesSchema, lineDiff(string(wb), string(gb)))
	}
}

// configSchemaOf selects the properties of valuesSchema marked x-catalyst-config
// (required/optional), inlines their references and adds values' defaults.
func configSchemaOf(t *testing.T, valuesSchema, values map[string]any) map[string]any {
	t.Helper()
	c := &schemaChecker{root: valuesSchema}
	var inline func(v any) any
	inline = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			out := map[string]any{}
			if ref, ok := x["$ref"].(string); ok {
				target, err := c.resolve(ref)
				if err != nil {
					t.Fatal(err)
				}
				for k, e := range inline(target).(map[string]any) {
					out[k] = e
				}
			}
			for k, e := range x {
				if k == "$ref" || k == "x-catalyst-config" {
					continue
				}
				out[k] = inline(e)
			}
			return out
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				out[i] = inline(e)
			}
			return out
		}
		return v
	}
	var withDefaults func(s map[string]any, v any)
	withDefaults = func(s map[string]any, v any) {
		props, hasProps := s["properties"].(map[string]any)
		if m, ok := v.(map[string]any); ok && hasProps {
			for k, ps := range props {
				if pv, ok := m[k]; ok {
					withDefaults(ps.(map[string]any), pv)
				}
			}
			return
		}
		s["default"] = v
	}
	props := map[string]any{}
	var required []any
	for name, p := range valuesSchema["properties"].(map[string]any) {
		mark, _ := p.(map[string]any)["x-catalyst-config"].(string)
		switch mark {
		case "":
			continue
		case "required":
			required = append(required, name)
		case "optional":
		default:
			t.Fatalf("%s: x-catalyst-config %q, want required or optional", name, mark)
		}
		s := inline(p).(map[string]any)
		if v, ok := values[name]; ok {
			withDefaults(s, v)
		}
		props[name] = s
	}
	slices.SortFunc(required, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
	out := map[string]any{"type": "object", "required": required, "properties": props}
	for _, k := range []string{"if", "then"} {
		if v, ok := valuesSchema[k]; ok {
			out[k] = inline(v)
		}
	}
	return out
}

// writeConfigSchema replaces the configSchema block of blueprint.yaml.
func writeConfigSchema(t *testing.T, schema map[string]any) {
	t.Helper()
	b, err := os.ReadFile(path(blueprintFile))
	if err != nil {
		t.Fatal(err)
	}
	gen, err := yaml.Marshal(schema)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	i := slices.Index(lines, "  configSchema:")
	if i < 0 {
		t.Fatalf("%s has no line %q", blueprintFile, "  configSchema:")
	}
	j := i + 1
	for j < len(lines) && (lines[j] == "" || strings.HasPrefix(lines[j], "    ")) {
		j++
	}
	var block []string
	for _, l := range strings.Split(strings.TrimRight(string(gen), "\n"), "\n") {
		block = append(block, "    "+l)
	}
	out := append(append(slices.Clone(lines[:i+1]), block...), lines[j:]...)
	if err := os.WriteFile(path(blueprintFile), []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// deepMerge merges src into dst as Helm merges values files: maps key by key, the rest
// replaced.
func deepMerge(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = deepMerge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// The platform's Blueprints flux-webhook depends on, as named in openova-io/openova
// (platform/<folder>/blueprint.yaml metadata.name and the bootstrap kit's HelmReleases).
var platformBlueprints = map[string]string{
	"bp-flux":                    "platform/flux: the Flux controllers whose objects flux-webhook reconciles",
	"bp-external-secrets":        "platform/external-secrets: ESO, which syncs the keys and tokens",
	"bp-external-secrets-stores": "platform/external-secrets-stores: the ClusterSecretStore vault-region1 of OpenBao",
	"bp-gitea":                   "platform/gitea: where statuses go",
	"bp-gateway-api":             "platform/gateway-api: the Gateway API CRDs the HTTPRoute needs",
}

// The Blueprint's contract (the guide's §3.2, §3.3, §3.8, §3.11 and §3.12; the README's
// table): one version across blueprint.yaml, Chart.yaml and values.yaml's
// catalystBlueprint.upstream; the chart published as bp-flux-webhook with the no-upstream
// opt-out and no dependencies; a kubeVersion the API server satisfies; card, icon and
// documentation that exist; the platform's real Blueprints as dependencies; the overlay's
// values.env a valid configuration of configSchema, setting every required value.
func TestBlueprintContract(t *testing.T) {
	integration(t)
	bp := readObject(t, blueprintFile)
	chart := readObject(t, chartDir+"/Chart.yaml")
	values := readObject(t, chartDir+"/values.yaml")

	version := at(bp, "spec.version")
	if at(chart, "version") != version || at(values, "catalystBlueprint.upstream.version") != version {
		t.Errorf("versions: blueprint.yaml %v, Chart.yaml %v, values.yaml catalystBlueprint.upstream %v: want one",
			version, at(chart, "version"), at(values, "catalystBlueprint.upstream.version"))
	}
	if name := at(bp, "metadata.name"); at(chart, "name") != name || at(values, "catalystBlueprint.upstream.chart") != name {
		t.Errorf("names: blueprint.yaml %v, Chart.yaml %v, upstream chart %v", name, at(chart, "name"), at(values, "catalystBlueprint.upstream.chart"))
	}
	// §10: ghcr.io/openova-io/bp-<name>:<version>.
	if repo := at(values, "catalystBlueprint.upstream.repo"); repo != "oci://ghcr.io/openova-io" {
		t.Errorf("upstream repo %v", repo)
	}
	raw, err := os.ReadFile(path(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("catalystBlueprint:\n")) {
		t.Errorf("values.yaml does not open with the catalystBlueprint block")
	}

	// §11.1: no dependencies, hence the opt-out annotation.
	if at(chart, "apiVersion") != "v2" || at(chart, "dependencies") != nil {
		t.Errorf("Chart.yaml: apiVersion %v, dependencies %v", at(chart, "apiVersion"), at(chart, "dependencies"))
	}
	if _, err := os.Stat(path(chartDir, "charts")); err == nil {
		t.Errorf("the chart vendors charts/")
	}
	if ann, _ := at(chart, "annotations").(map[string]any); ann["catalyst.openova.io/no-upstream"] != "true" {
		t.Errorf("Chart.yaml annotations %v lack catalyst.openova.io/no-upstream: \"true\"", ann)
	}
	constraint, err := semver.NewConstraint(at(chart, "kubeVersion").(string))
	if err != nil {
		t.Fatalf("kubeVersion: %v", err)
	}
	if !constraint.Check(semver.MustParse(env.kubeVersion)) {
		t.Errorf("kubeVersion %v excludes the API server's %s", at(chart, "kubeVersion"), env.kubeVersion)
	}
	for _, f := range []string{"keywords", "maintainers", "icon", "home", "sources"} {
		if v := at(chart, f); v == nil || reflect.ValueOf(v).Len() == 0 {
			t.Errorf("Chart.yaml has no %s", f)
		}
	}
	// The icon and the documentation are this repository's files, at the paths the URLs name.
	if icon := at(chart, "icon").(string); !strings.HasSuffix(icon, "/platform/flux-webhook/card/icon.svg") {
		t.Errorf("Chart.yaml icon %s is not the card's icon", icon)
	}
	bpDir := filepath.Dir(blueprintFile)
	for _, p := range []string{at(bp, "spec.card.icon").(string), "card/icon.svg", "README.md", at(bp, "spec.manifests.chart").(string) + "/Chart.yaml"} {
		if _, err := os.Stat(path(bpDir, p)); err != nil {
			t.Errorf("blueprint.yaml names %s: %v", p, err)
		}
	}
	if doc := at(bp, "spec.card.documentation").(string); !strings.HasSuffix(doc, "/"+bpDir+"/README.md") {
		t.Errorf("card.documentation %s is not the Blueprint's README", doc)
	}

	// §5: the platform's Blueprints, by their real names; the HTTPRoute's only when it is on.
	for _, d := range at(bp, "spec.depends").([]any) {
		name := at(d, "blueprint").(string)
		if _, ok := platformBlueprints[name]; !ok {
			t.Errorf("depends on %s, which is none of the platform's Blueprints flux-webhook needs", name)
		}
		if when, _ := at(d, "when").(string); name == "bp-gateway-api" && when != "{{ .config.httpRoute.enabled }}" {
			t.Errorf("bp-gateway-api is needed only with the HTTPRoute, not when %q", when)
		}
	}

	// configSchema: the overlay's values.env configures the Blueprint — each key a value of
	// configSchema, every required one set — and, merged over the chart's defaults as Helm
	// merges values, passes configSchema and values.schema.json.
	configSchema := at(bp, "spec.configSchema").(map[string]any)
	settings := catalystConfig(t)
	var set []string
	for _, s := range settings {
		if !schemaHasPath(configSchema, s.path) {
			t.Errorf("values.env sets %s, which configSchema lacks", s.path)
		}
		set = append(set, strings.Split(s.path, ".")[0])
	}
	for _, r := range configSchema["required"].([]any) {
		if !slices.Contains(set, r.(string)) {
			t.Errorf("configSchema requires %s, which values.env does not set", r)
		}
	}
	merged := deepMerge(deepCopyJSON(t, values).(map[string]any), deepCopyJSON(t, configValues(t, settings)).(map[string]any))
	for name, schema := range map[string]map[string]any{"configSchema": configSchema, "values.schema.json": readObject(t, valuesSchema)} {
		if errs := schemaErrors(schema, merged); len(errs) > 0 {
			t.Errorf("values.env over the chart's defaults, against %s:\n%s", name, strings.Join(errs, "\n"))
		}
	}
	if errs := schemaErrors(readObject(t, valuesSchema), values); len(errs) > 0 {
		t.Errorf("values.yaml against values.schema.json:\n%s", strings.Join(errs, "\n"))
	}
}

// schemaHasPath reports whether a dotted values path (lists by index) is described by schema.
func schemaHasPath(schema map[string]any, p string) bool {
	var cur any = schema
	for _, k := range strings.Split(p, ".") {
		s, _ := cur.(map[string]any)
		if items, ok := s["items"]; ok && regexp.MustCompile(`^[0-9]+$`).MatchString(k) {
			cur = items
			continue
		}
		props, _ := s["properties"].(map[string]any)
		next, ok := props[k]
		if !ok {
			return false
		}
		cur = next
	}
	return true
}

// §11.1's guards that apply to a chart without dependencies: `helm package` pulls nothing (no
// dependency, no charts/, and no network: a proxy that refuses every connection), and the
// package holds the chart as bp-flux-webhook/, its schema and files, not its CI scripts.
func TestHelmPackagePullsNothing(t *testing.T) {
	integration(t)
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), filepath.Join(env.tools, "helm"), "package", path(chartDir), "--destination", dir)
	cmd.Env = append(os.Environ(), "HTTPS_PROXY=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9", "NO_PROXY=",
		"HELM_CACHE_HOME="+filepath.Join(dir, "cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, "config"), "HELM_DATA_HOME="+filepath.Join(dir, "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm package: %v\n%s", err, out)
	}
	version := at(readObject(t, chartDir+"/Chart.yaml"), "version").(string)
	f, err := os.Open(filepath.Join(dir, "bp-flux-webhook-"+version+".tgz"))
	if err != nil {
		t.Fatalf("%v (helm said: %s)", err, out)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "bp-flux-webhook/") || strings.HasPrefix(n, "bp-flux-webhook/charts/") || strings.HasPrefix(n, "bp-flux-webhook/tests/") {
			t.Errorf("the package holds %s", n)
		}
	}
	for _, want := range []string{"Chart.yaml", "values.yaml", "values.schema.json", "templates/deployment.yaml", "templates/NOTES.txt",
		"files/prometheus-rules.yaml", "files/dashboard.json", "files/notify-flux.yaml"} {
		if !slices.Contains(names, "bp-flux-webhook/"+want) {
			t.Errorf("the package lacks %s: %v", want, names)
		}
	}
}

// §11.1 GUARD 2: `helm template` at the default values renders a non-trivial output (at least
// five lines; here the whole service).
func TestSmokeRender(t *testing.T) {
	integration(t)
	out := helmTemplate(t, "smoke")
	if n := bytes.Count(out, []byte("\n")); n < 5 {
		t.Fatalf("the default render has %d lines", n)
	}
	var kinds []string
	for _, o := range decode(t, out) {
		kinds = append(kinds, o.GetKind())
	}
	for _, want := range []string{"Deployment", "Service", "ServiceAccount", "ClusterRole", "Role", "ExternalSecret", "NetworkPolicy", "PodDisruptionBudget", "ValidatingAdmissionPolicy"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("the default render has no %s: %v", want, kinds)
		}
	}
}

// §11.2: chart/tests/observability-toggle.sh, the platform's CI script, passes on the chart;
// and it is live: a chart whose toggle defaults on, or whose toggle renders nothing, fails it.
func TestObservabilityToggle(t *testing.T) {
	integration(t)
	script := path(chartDir, "tests", "observability-toggle.sh")
	run := func(t *testing.T, chart string) ([]byte, error) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "bash", script, chart)
		cmd.Env = append(os.Environ(), "PATH="+env.tools+string(os.PathListSeparator)+os.Getenv("PATH"),
			"KUBE_VERSION="+env.kubeVersion, "HELM_CACHE_HOME="+filepath.Join(env.dir, "helm", "cache"),
			"HELM_CONFIG_HOME="+filepath.Join(env.dir, "helm", "config"), "HELM_DATA_HOME="+filepath.Join(env.dir, "helm", "data"))
		return cmd.CombinedOutput()
	}
	if out, err := run(t, path(chartDir)); err != nil {
		t.Fatalf("observability-toggle.sh: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, chart string)
		want   string
	}{
		{"a PodMonitor on by default", func(t *testing.T, chart string) {
			replaceIn(t, filepath.Join(chart, "values.yaml"), "  podMonitor:\n    enabled: false", "  podMonitor:\n    enabled: true")
		}, "FAIL"},
		{"a dashboard on by default", func(t *testing.T, chart string) {
			replaceIn(t, filepath.Join(chart, "values.yaml"), "  dashboard:\n    enabled: false", "  dashboard:\n    enabled: true")
		}, "FAIL"},
		{"a PrometheusRule toggle wired to nothing", func(t *testing.T, chart string) {
			replaceIn(t, filepath.Join(chart, "templates", "monitoring.yaml"), "{{- if $m.prometheusRule.enabled }}", "{{- if false }}")
		}, "FAIL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chart := filepath.Join(t.TempDir(), "chart")
			if err := os.CopyFS(chart, os.DirFS(path(chartDir))); err != nil {
				t.Fatal(err)
			}
			tc.mutate(t, chart)
			out, err := run(t, chart)
			if err == nil || !bytes.Contains(out, []byte(tc.want)) {
				t.Fatalf("observability-toggle.sh passed a chart with %s (%v):\n%s", tc.name, err, out)
			}
		})
	}
}

func replaceIn(t *testing.T, file, old, new string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b, []byte(old)) != 1 {
		t.Fatalf("%s: want one %q", file, old)
	}
	if err := os.WriteFile(file, bytes.Replace(b, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

// §14: app.kubernetes.io/* labels on every object of every rendering, the monitoring kit and
// the HTTPRoute included (the options' renderings), and on the pod template; the chart's with
// Helm's version and manager besides.
func TestLabelsOnEveryObject(t *testing.T) {
	integration(t)
	for _, r := range render(t) {
		t.Run(r.name, func(t *testing.T) {
			want := []string{"app.kubernetes.io/name", "app.kubernetes.io/instance"}
			if strings.HasPrefix(r.name, "chart") {
				want = append(want, "app.kubernetes.io/version", "app.kubernetes.io/managed-by")
			}
			for _, o := range decode(t, r.out) {
				labels := o.GetLabels()
				if tmpl, ok, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels"); ok {
					for _, l := range want[:2] {
						if tmpl[l] == "" {
							t.Errorf("%s %s: the pod template lacks %s", o.GetKind(), o.GetName(), l)
						}
					}
				}
				for _, l := range want {
					if labels[l] == "" {
						t.Errorf("%s %s lacks label %s", o.GetKind(), o.GetName(), l)
					}
				}
			}
		})
	}
}

// §14's identity and secrets rules, in every rendering: no Secret is rendered (every key and
// token comes through an ExternalSecret), none of type kubernetes.io/service-account-token (no
// unbound long-lived token); the ServiceAccount mounts no token by default, and only the
// Deployment's pod asks for one: the kubelet's projected token, bound to the pod, audience-
// scoped and rotated.
func TestWorkloadIdentity(t *testing.T) {
	integration(t)
	for _, r := range render(t) {
		t.Run(r.name, func(t *testing.T) {
			pods := 0
			for _, o := range decode(t, r.out) {
				switch o.GetKind() {
				case "Secret":
					t.Errorf("Secret %s rendered: keys and tokens come through ExternalSecrets", o.GetName())
				case "ServiceAccount":
					if mount, ok, _ := unstructured.NestedBool(o.Object, "automountServiceAccountToken"); !ok || mount {
						t.Errorf("ServiceAccount %s: automountServiceAccountToken %v (set %v), want false", o.GetName(), mount, ok)
					}
				case "Deployment":
					pods++
					spec, _, _ := unstructured.NestedMap(o.Object, "spec", "template", "spec")
					if mount, ok, _ := unstructured.NestedBool(spec, "automountServiceAccountToken"); !ok || !mount {
						t.Errorf("Deployment %s: the pod does not ask for its projected token", o.GetName())
					}
					volumes, _, _ := unstructured.NestedSlice(spec, "volumes")
					for _, v := range volumes {
						if name, ok, _ := unstructured.NestedString(v.(map[string]any), "secret", "secretName"); ok {
							t.Errorf("Deployment %s mounts the Secret %s", o.GetName(), name)
						}
					}
				}
			}
			if pods != 1 {
				t.Errorf("%d Deployments rendered, want 1", pods)
			}
		})
	}
}

// The README's table of the guide's rules names tests that exist: each proof is a test of this
// package.
func TestGuideRulesTable(t *testing.T) {
	readme := mustRead(t, "platform/flux-webhook/README.md")
	_, table, ok := strings.Cut(readme, "## The guide's rules, and the test that proves each\n")
	if !ok {
		t.Fatal("platform/flux-webhook/README.md has no table of the guide's rules")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	var sources strings.Builder
	files, _ := filepath.Glob(path("deploy", "*_test.go"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sources.Write(b)
	}
	named := regexp.MustCompile("`(Test[A-Za-z]+)`").FindAllStringSubmatch(table, -1)
	if len(named) < 10 {
		t.Fatalf("the table names %d tests", len(named))
	}
	for _, m := range named {
		if !strings.Contains(sources.String(), "func "+m[1]+"(t *testing.T)") {
			t.Errorf("the table names %s, which deploy/ does not have", m[1])
		}
	}
}

// Every value of the chart is documented: platform/flux-webhook/README.md's values table names
// each leaf of values.yaml (a value whose schema describes no sub-keys), or a value above it;
// a name starting with "." continues the previous one's parent (`a.b`, `.c` is a.c).
func TestEveryValueDocumented(t *testing.T) {
	readme, err := os.ReadFile(path("platform/flux-webhook/README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n## Values\n")
	if !ok {
		t.Fatal("platform/flux-webhook/README.md has no section Values")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	var documented []string
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		prev := ""
		for _, m := range regexp.MustCompile("`([.a-zA-Z][.a-zA-Z0-9]*)`").FindAllStringSubmatch(cells[1], -1) {
			name := m[1]
			if strings.HasPrefix(name, ".") {
				parent := prev[:strings.LastIndex(prev, ".")]
				name = parent + name
			}
			documented = append(documented, name)
			prev = name
		}
	}
	schema := readObject(t, valuesSchema)
	c := &schemaChecker{root: schema}
	// describes returns the properties the schema node describes, through $ref and allOf.
	var describes func(s any) map[string]any
	describes = func(s any) map[string]any {
		m, _ := s.(map[string]any)
		if ref, ok := m["$ref"].(string); ok {
			target, err := c.resolve(ref)
			if err != nil {
				t.Fatal(err)
			}
			return describes(target)
		}
		if props, ok := m["properties"].(map[string]any); ok {
			return props
		}
		for _, sub := range asSlice(m["allOf"]) {
			if props := describes(sub); props != nil {
				return props
			}
		}
		return nil
	}
	var leaves []string
	var walk func(prefix string, v any, s any)
	walk = func(prefix string, v any, s any) {
		props := describes(s)
		m, isMap := v.(map[string]any)
		if !isMap || props == nil {
			leaves = append(leaves, prefix)
			return
		}
		for _, k := range sortedKeys(m) {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, m[k], props[k])
		}
	}
	walk("", readObject(t, chartDir+"/values.yaml"), schema)
	for _, l := range leaves {
		if !slices.ContainsFunc(documented, func(d string) bool { return d == l || strings.HasPrefix(l, d+".") }) {
			t.Errorf("value %s is not in platform/flux-webhook/README.md's values table", l)
		}
	}
	for _, d := range documented {
		if !slices.ContainsFunc(leaves, func(l string) bool { return d == l || strings.HasPrefix(l, d+".") }) {
			t.Errorf("the values table names %s, which values.yaml lacks", d)
		}
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// The chart works as a subchart (an umbrella's dependency, as Catalyst's composite Blueprints
// bundle theirs): its schema admits the parent's `global` values, reads global.imageRegistry,
// and takes its values under its name; `helm dependency build` resolves it from a file://
// repository, without a network.
func TestChartAsSubchart(t *testing.T) {
	integration(t)
	parent := filepath.Join(t.TempDir(), "parent")
	if err := os.MkdirAll(filepath.Join(parent, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	chart := readObject(t, chartDir+"/Chart.yaml")
	files := map[string]string{
		"Chart.yaml": "apiVersion: v2\nname: parent\nversion: 1.0.0\ndependencies:\n  - name: bp-flux-webhook\n    version: \"" +
			at(chart, "version").(string) + "\"\n    repository: file://" + path(chartDir) + "\n",
		"values.yaml": "global:\n  imageRegistry: harbor.example.eu/proxy-ghcr\n  sovereignFQDN: fra1.example.eu\n" +
			"bp-flux-webhook:\n  clusterName: fra1\n  giteaUrl: https://gitea.fra1.example.eu\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(parent, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tool(t, "helm", "dependency", "build", parent)
	out := tool(t, "helm", "template", "flux-webhook", parent, "--namespace", catalystNS, "--kube-version", env.kubeVersion)
	c := containerOf(t, find(t, decode(t, out), "Deployment", "flux-webhook"))
	envs := c.environment(t, catalystNS)
	if envs["FLUX_WEBHOOK_CLUSTER_NAME"] != "fra1" || envs["FLUX_WEBHOOK_GITEA_URL"] != "https://gitea.fra1.example.eu" {
		t.Errorf("the subchart's settings %v", envs)
	}
	dep := find(t, decode(t, out), "Deployment", "flux-webhook")
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if image := containers[0].(map[string]any)["image"]; image != "harbor.example.eu/proxy-ghcr/openova-io/flux-webhook:"+at(chart, "appVersion").(string) {
		t.Errorf("image %v: global.imageRegistry not applied", image)
	}
}
