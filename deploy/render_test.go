package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

const (
	catalystDir = "deploy/overlays/catalyst"
	catalystNS  = "flux-webhook" // the overlay's namespace, the Blueprint's
)

// blueprint is platform/flux-webhook/blueprint.yaml.
type blueprint struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version     string `json:"version"`
		Description string `json:"description"`
		Chart       struct {
			Path string `json:"path"`
			Name string `json:"name"`
		} `json:"chart"`
		Namespace string   `json:"namespace"`
		Requires  []string `json:"requires"`
		Inputs    []struct {
			Name        string `json:"name"`
			Description string `json:"description"`
			Required    bool   `json:"required"`
			Value       string `json:"value"`
		} `json:"inputs"`
		Outputs []struct {
			Name        string `json:"name"`
			Description string `json:"description"`
			Value       string `json:"value"`
		} `json:"outputs"`
	} `json:"spec"`
}

func readYAML(t *testing.T, p string, into any) {
	t.Helper()
	b, err := os.ReadFile(path(p))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func readBlueprint(t *testing.T) blueprint {
	t.Helper()
	var bp blueprint
	readYAML(t, "platform/flux-webhook/blueprint.yaml", &bp)
	return bp
}

// catalystInputs reads the overlay's values.env: the Blueprint's inputs, each under its
// name in UPPER_SNAKE case (sovereignDomain is SOVEREIGN_DOMAIN).
func catalystInputs(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(path(catalystDir, "values.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("values.env: %q is not KEY=VALUE", line)
		}
		in[camel(k)] = v
	}
	return in
}

func camel(upperSnake string) string {
	parts := strings.Split(strings.ToLower(upperSnake), "_")
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

// chartValues turns Blueprint inputs into a chart values file, through each input's
// value path, as Catalyst does.
func chartValues(t *testing.T, bp blueprint, inputs map[string]string) string {
	t.Helper()
	values := map[string]any{}
	for _, in := range bp.Spec.Inputs {
		v, ok := inputs[in.Name]
		if !ok {
			continue
		}
		m := values
		keys := strings.Split(in.Value, ".")
		for _, k := range keys[:len(keys)-1] {
			if _, ok := m[k].(map[string]any); !ok {
				m[k] = map[string]any{}
			}
			m = m[k].(map[string]any)
		}
		m[keys[len(keys)-1]] = v
	}
	b, _ := json.Marshal(values)
	p := filepath.Join(t.TempDir(), "values.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type rendering struct {
	name      string // golden file testdata/<name>.yaml
	namespace string // where namespaced objects without one go (kubectl apply's default)
	out       []byte
}

func render(t *testing.T) []rendering {
	t.Helper()
	bp := readBlueprint(t)
	values := chartValues(t, bp, catalystInputs(t))
	return []rendering{
		{"base", "default", kustomize(t, "deploy/base")},
		{"catalyst", catalystNS, kustomize(t, catalystDir)},
		// The Blueprint with the overlay's inputs, and the chart as it comes.
		{"chart-catalyst", catalystNS, helmTemplate(t, catalystNS, values)},
		{"chart-defaults", catalystNS, helmTemplate(t, catalystNS)},
		// The overlay's options taken (its commented component and patch uncommented, as its
		// comments say), and the chart's values for the same.
		{"catalyst-options", catalystNS, tool(t, "kustomize", "build", catalystWithOptions(t))},
		{"chart-options", catalystNS, helmTemplate(t, catalystNS, values, optionValues(t))},
	}
}

// The options the overlay offers commented out: the platform API off, and egress to the
// API server of a registered cluster (remote-api-servers.yaml's example).
var (
	overlayOptions = []string{"components:", "patches:"}
	chartOptions   = `{"platformApi": {"enabled": false},
		"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16", "ports": [8443]}]}}`
)

func optionValues(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "options.json")
	if err := os.WriteFile(p, []byte(chartOptions), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// catalystWithOptions copies deploy/ and uncomments, in the copy of the overlay's
// kustomization.yaml, each commented block of overlayOptions (its "# <head>" line and the
// indented commented lines after it), as a user following its comments would; it returns
// the copy's overlay directory.
func catalystWithOptions(t *testing.T) string {
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
	lines := strings.Split(string(b), "\n")
	for _, head := range overlayOptions {
		i := slices.Index(lines, "# "+head)
		if i < 0 || slices.Index(lines[i+1:], "# "+head) >= 0 {
			t.Fatalf("%s/kustomization.yaml: want one commented %q", catalystDir, head)
		}
		lines[i] = head
		for i++; i < len(lines) && strings.HasPrefix(lines[i], "#   "); i++ {
			lines[i] = lines[i][2:]
		}
	}
	if err := os.WriteFile(k, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return overlay
}

// The rendered manifests are reviewed as golden files (go test ./deploy -update).
func TestRenderedGolden(t *testing.T) {
	integration(t)
	for _, r := range render(t) {
		golden(t, r.name+".yaml", r.out)
	}
}

// Every rendered object is accepted by a real API server with the Flux and External
// Secrets CRDs (server-side apply, dry run), and the pod template passes the restricted Pod
// Security Standard without a warning.
func TestRenderedApplyDryRun(t *testing.T) {
	integration(t)
	c, warnings := warningClient(t)
	for _, r := range render(t) {
		t.Run(r.name, func(t *testing.T) {
			objs := decode(t, r.out)
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			// The Namespace for real (a dry run would not create what the rest needs).
			for _, o := range objs {
				if o.GetKind() == "Namespace" {
					apply(t, c, o, false)
				}
			}
			ensureNamespace(t, r.namespace)
			*warnings = nil
			for _, o := range objs {
				if o.GetKind() == "Namespace" {
					continue
				}
				if namespaced(t, o) && o.GetNamespace() == "" {
					o.SetNamespace(r.namespace)
				}
				apply(t, c, o, true)
			}
			if len(*warnings) > 0 {
				t.Errorf("warnings: %q", *warnings)
			}
		})
	}
	// What the overlay's README says, literally: kubectl's own Kustomize, the API server
	// judging (the Namespace exists by now, so a dry run can judge the rest; the RBAC test's
	// field manager may own the cluster-scoped objects).
	t.Run("kubectl-apply-k", func(t *testing.T) {
		kubectl := filepath.Join(testenv.Paths().KubebuilderAssets, "kubectl")
		cmd := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", env.kube.Kubeconfig,
			"apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", path(catalystDir))
		out, err := cmd.CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("Warning")) {
			t.Fatalf("kubectl apply -k %s: %v\n%s", catalystDir, err, out)
		}
		if n := bytes.Count(out, []byte("(server dry run)")); n != len(decode(t, kustomize(t, catalystDir))) {
			t.Fatalf("kubectl applied %d objects:\n%s", n, out)
		}
	})
	// The check is live: a pod template that may run as root draws the warning.
	t.Run("restricted-is-enforced", func(t *testing.T) {
		d := find(t, decode(t, kustomize(t, catalystDir)), "Deployment", "flux-webhook")
		unstructured.RemoveNestedField(d.Object, "spec", "template", "spec", "securityContext", "runAsNonRoot")
		*warnings = nil
		apply(t, c, d, true)
		if !slices.ContainsFunc(*warnings, func(w string) bool { return strings.Contains(w, `"restricted:latest"`) }) {
			t.Fatalf("no Pod Security warning for a template without runAsNonRoot: %q", *warnings)
		}
	})
}

// warningClient is an admin client that collects the API server's warnings.
func warningClient(t *testing.T) (client.Client, *[]string) {
	t.Helper()
	var (
		mu       sync.Mutex
		warnings []string
	)
	cfg := rest.CopyConfig(env.kube.Config)
	cfg.WarningHandler = warningFunc(func(msg string) {
		mu.Lock()
		warnings = append(warnings, msg)
		mu.Unlock()
	})
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c, &warnings
}

type warningFunc func(string)

func (f warningFunc) HandleWarningHeader(_ int, _ string, msg string) { f(msg) }

// apply server-side applies o as the test's field manager.
func apply(t *testing.T, c client.Client, o *unstructured.Unstructured, dryRun bool) {
	t.Helper()
	opts := []client.ApplyOption{client.ForceOwnership, client.FieldOwner("deploy-test")}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	if err := c.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(o.DeepCopy()), opts...); err != nil {
		t.Fatalf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
	}
}

func namespaced(t *testing.T, o *unstructured.Unstructured) bool {
	t.Helper()
	ok, err := env.kube.Client.IsObjectNamespaced(o)
	if err != nil {
		t.Fatalf("%s: %v", o.GetKind(), err)
	}
	return ok
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	if err := env.kube.Client.Get(t.Context(), client.ObjectKey{Name: name}, ns); err == nil {
		return
	}
	apply(t, env.kube.Client, ns, false)
}

// helmOnlyLabels are what Helm's conventions add and Kustomize has no use for.
var helmOnlyLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}

// The Blueprint's chart, given the overlay's inputs, renders the same objects as the
// Catalyst overlay (and so as the base): same kinds and names, same specs, rules,
// selectors and labels, but for the labels only Helm adds and the Namespace only the
// overlay creates (Helm installs into a namespace). So do the overlay with its options
// taken and the chart with the values for the same.
func TestChartMatchesKustomize(t *testing.T) {
	integration(t)
	out := map[string][]byte{}
	for _, r := range render(t) {
		out[r.name] = r.out
	}
	for kust, chart := range map[string]string{"catalyst": "chart-catalyst", "catalyst-options": "chart-options"} {
		t.Run(kust, func(t *testing.T) { sameObjects(t, decode(t, out[kust]), decode(t, out[chart])) })
	}
}

func sameObjects(t *testing.T, kust, chart []*unstructured.Unstructured) {
	t.Helper()
	key := func(o *unstructured.Unstructured) string { return o.GetKind() + "/" + o.GetName() }
	byKey := map[string]*unstructured.Unstructured{}
	for _, o := range chart {
		labels := o.GetLabels()
		for _, l := range helmOnlyLabels {
			if _, ok := labels[l]; !ok {
				t.Errorf("chart %s lacks label %s", key(o), l)
			}
			delete(labels, l)
		}
		o.SetLabels(labels)
		// Helm leaves the namespace to the install; the overlay names it.
		if namespaced(t, o) {
			o.SetNamespace(catalystNS)
		}
		byKey[key(o)] = o
	}
	seen := 0
	for _, k := range kust {
		if k.GetKind() == "Namespace" {
			continue
		}
		c, ok := byKey[key(k)]
		if !ok {
			t.Errorf("the chart renders no %s", key(k))
			continue
		}
		seen++
		if !reflect.DeepEqual(k.Object, c.Object) {
			kb, _ := yaml.Marshal(k.Object)
			cb, _ := yaml.Marshal(c.Object)
			t.Errorf("%s differs (- kustomize, + chart):\n%s", key(k), lineDiff(string(kb), string(cb)))
		}
	}
	if seen != len(chart) {
		t.Errorf("the chart renders %d objects, the overlay %d (without its Namespace)", len(chart), seen)
	}
}

// helm lint finds nothing to warn about, with the defaults, with the Blueprint's inputs, and
// with those and the options' values.
func TestHelmLint(t *testing.T) {
	integration(t)
	values := chartValues(t, readBlueprint(t), catalystInputs(t))
	for _, args := range [][]string{{}, {"--values", values}, {"--values", values, "--values", optionValues(t)}} {
		out := tool(t, "helm", append([]string{"lint", "--strict", path(chartDir)}, args...)...)
		if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ERROR]")) || !bytes.Contains(out, []byte("0 chart(s) failed")) {
			t.Errorf("helm lint %v:\n%s", args, out)
		}
	}
}

// values.schema.json refuses bad values at install, naming the value.
func TestValuesSchemaRejects(t *testing.T) {
	integration(t)
	for _, tc := range []struct {
		name, values, want string
	}{
		{"no replicas", `{"replicaCount": 0}`, "/replicaCount"},
		{"replicas as text", `{"replicaCount": "two"}`, "/replicaCount"},
		{"cluster name not a DNS label", `{"clusterName": "Fra_1"}`, "/clusterName"},
		{"region not a DNS label", `{"region": "EU Central"}`, "/region"},
		{"Gitea URL alias without its other half", `{"gitUrlAliases": ["https://gitea.example.eu"]}`, "/gitUrlAliases/0"},
		{"two Gitea URL aliases in one", `{"gitUrlAliases": ["https://a.eu=http://a:3000,https://b.eu=http://b:3000"]}`, "/gitUrlAliases/0"},
		{"Gitea URL without scheme", `{"giteaUrl": "gitea.example.eu"}`, "/giteaUrl"},
		{"domain in capitals", `{"sovereignDomain": "Example.EU", "locationCode": "fra1"}`, "/sovereignDomain"},
		{"domain without location", `{"sovereignDomain": "example.eu"}`, "/locationCode"},
		{"misspelt key", `{"replicas": 3}`, "'replicas' not allowed"},
		{"empty OpenBao key", `{"externalSecrets": {"hookToken": {"key": ""}}}`, "/externalSecrets/hookToken/key"},
		{"empty platform token key", `{"externalSecrets": {"platformToken": {"key": ""}}}`, "/externalSecrets/platformToken/key"},
		{"platform API switch as text", `{"platformApi": {"enabled": "no"}}`, "/platformApi/enabled"},
		{"platform API switch misspelt", `{"platformApi": {"enable": false}}`, "'enable' not allowed"},
		{"remote API server without prefix length", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0", "ports": [8443]}]}}`, "/networkPolicy/remoteApiServers/0/cidr"},
		{"remote API server not an address", `{"networkPolicy": {"remoteApiServers": [{"cidr": "vcluster.example.eu/32", "ports": [8443]}]}}`, "/networkPolicy/remoteApiServers/0/cidr"},
		{"remote API server without ports", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16"}]}}`, "/networkPolicy/remoteApiServers/0"},
		{"remote API server with an empty port list", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16", "ports": []}]}}`, "/networkPolicy/remoteApiServers/0/ports"},
		{"remote API server port out of range", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16", "ports": [70000]}]}}`, "/networkPolicy/remoteApiServers/0/ports/0"},
		{"remote API server port by name", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16", "ports": ["https"]}]}}`, "/networkPolicy/remoteApiServers/0/ports/0"},
		{"remote API server misspelt", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16", "port": [8443]}]}}`, "'port' not allowed"},
		{"another Blueprint", `{"catalystBlueprint": {"name": "bp-other"}}`, "/catalystBlueprint/name"},
		{"version not semver", `{"catalystBlueprint": {"version": "1.0"}}`, "/catalystBlueprint/version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "values.json")
			if err := os.WriteFile(p, []byte(tc.values), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := helmTemplateErr(t, catalystNS, p)
			if err == nil {
				t.Fatalf("helm accepted %s", tc.values)
			}
			if !strings.Contains(err.Error(), "values don't meet the specifications of the schema") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a schema error at %s, got: %v", tc.want, err)
			}
		})
	}
}

var semver = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// The Blueprint contract (platform/flux-webhook/README.md): one name and version across
// blueprint.yaml, Chart.yaml and the values' catalystBlueprint block; a chart without
// dependencies; every input set through a value the chart has; the APIs it requires served;
// the hookUrl output the URL the chart and the overlay expose.
func TestBlueprintContract(t *testing.T) {
	integration(t)
	bp := readBlueprint(t)
	if bp.APIVersion != "catalyst.openova.io/v1alpha1" || bp.Kind != "Blueprint" || bp.Metadata.Name != "bp-flux-webhook" {
		t.Errorf("blueprint.yaml is %s %s %s", bp.APIVersion, bp.Kind, bp.Metadata.Name)
	}
	if !semver.MatchString(bp.Spec.Version) || bp.Spec.Description == "" || bp.Spec.Namespace != catalystNS {
		t.Errorf("version %q, description %q, namespace %q (the overlay's is %s)", bp.Spec.Version, bp.Spec.Description, bp.Spec.Namespace, catalystNS)
	}
	var chart struct {
		APIVersion   string `json:"apiVersion"`
		Name         string `json:"name"`
		Version      string `json:"version"`
		AppVersion   string `json:"appVersion"`
		Dependencies []any  `json:"dependencies"`
	}
	chartPath := filepath.Join("platform/flux-webhook", bp.Spec.Chart.Path)
	if b, err := os.ReadFile(path(chartPath, "Chart.yaml")); err != nil {
		t.Fatal(err)
	} else if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	if chart.Name != bp.Spec.Chart.Name || chart.Version != bp.Spec.Version || chart.APIVersion != "v2" {
		t.Errorf("Chart.yaml: %s %s %s, blueprint.yaml: chart %s version %s", chart.APIVersion, chart.Name, chart.Version, bp.Spec.Chart.Name, bp.Spec.Version)
	}
	if len(chart.Dependencies) > 0 {
		t.Errorf("Chart.yaml has dependencies: %v", chart.Dependencies)
	}
	if _, err := os.Stat(path(chartPath, "charts")); err == nil {
		t.Errorf("the chart vendors charts/")
	}

	raw, err := os.ReadFile(path(chartPath, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte("catalystBlueprint:\n")) {
		t.Errorf("values.yaml does not start with the catalystBlueprint block")
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	meta, _ := values["catalystBlueprint"].(map[string]any)
	if meta["name"] != bp.Metadata.Name || meta["version"] != bp.Spec.Version || meta["blueprint"] != "platform/flux-webhook/blueprint.yaml" {
		t.Errorf("catalystBlueprint block %v, blueprint %s %s", meta, bp.Metadata.Name, bp.Spec.Version)
	}

	inputs := catalystInputs(t)
	var names []string
	for _, in := range bp.Spec.Inputs {
		names = append(names, in.Name)
		if !in.Required || in.Description == "" {
			t.Errorf("input %s: required %v, description %q", in.Name, in.Required, in.Description)
		}
		v := any(values)
		for _, k := range strings.Split(in.Value, ".") {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		if _, ok := v.(string); !ok {
			t.Errorf("input %s sets %s, which values.yaml lacks as a string", in.Name, in.Value)
		}
		if _, ok := inputs[in.Name]; !ok {
			t.Errorf("input %s is not in %s/values.env", in.Name, catalystDir)
		}
	}
	for k := range inputs {
		if !slices.Contains(names, k) {
			t.Errorf("values.env sets %s, which is no input of the Blueprint", k)
		}
	}
	for _, want := range []string{"sovereignDomain", "locationCode", "giteaUrl", "clusterName", "region", "openbaoStore", "hookTokenKey", "giteaTokenKey", "platformTokenKey"} {
		if !slices.Contains(names, want) {
			t.Errorf("the Blueprint has no input %s", want)
		}
	}

	dc, err := discovery.NewDiscoveryClientForConfig(env.kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, gv := range bp.Spec.Requires {
		if _, err := dc.ServerResourcesForGroupVersion(gv); err != nil {
			t.Errorf("requires %s: %v", gv, err)
		}
	}

	if len(bp.Spec.Outputs) != 1 || bp.Spec.Outputs[0].Name != "hookUrl" {
		t.Fatalf("outputs %+v, want hookUrl", bp.Spec.Outputs)
	}
	hookURL := regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(bp.Spec.Outputs[0].Value, func(s string) string {
		return inputs[s[2:len(s)-1]]
	})
	for _, r := range render(t) {
		if r.name != "catalyst" && r.name != "chart-catalyst" {
			continue
		}
		ing := find(t, decode(t, r.out), "Ingress", "flux-webhook")
		rules, _, _ := unstructured.NestedSlice(ing.Object, "spec", "rules")
		host, _, _ := unstructured.NestedString(rules[0].(map[string]any), "host")
		paths, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "http", "paths")
		p, _, _ := unstructured.NestedString(paths[0].(map[string]any), "path")
		if got := "https://" + host + p; got != hookURL {
			t.Errorf("%s exposes %s, the Blueprint's hookUrl is %s", r.name, got, hookURL)
		}
	}
}

// `helm install` works the first time, into a new namespace, and NOTES.txt shows the hook URL
// and the example workflow, which is the README's examples/.gitea/workflows/notify-flux.yaml
// verbatim.
func TestHelmInstallAndNotes(t *testing.T) {
	integration(t)
	example, err := os.ReadFile(path("examples/.gitea/workflows/notify-flux.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	inChart, err := os.ReadFile(path(chartDir, "files/notify-flux.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(example, inChart) {
		t.Fatalf("%s/files/notify-flux.yaml differs from examples/.gitea/workflows/notify-flux.yaml: copy it", chartDir)
	}
	values := chartValues(t, readBlueprint(t), catalystInputs(t))
	// Another release name keeps clear of the objects the other tests apply.
	t.Setenv("KUBECONFIG", env.kube.Kubeconfig)
	out := tool(t, "helm", "install", "bp", path(chartDir), "--namespace", "bp", "--create-namespace", "--values", values)
	if !bytes.Contains(out, []byte("STATUS: deployed")) {
		t.Errorf("helm install:\n%s", out)
	}
	_, notes, ok := bytes.Cut(out, []byte("NOTES:\n"))
	if !ok {
		t.Fatalf("no NOTES:\n%s", out)
	}
	for _, want := range [][]byte{[]byte("https://flux-webhook.fra1.example.eu/hook"), example, []byte("ALLOWED_HOST_LIST"),
		// The platform API and its token; what a registered cluster's kubeconfig needs.
		[]byte("POST /api/v1/reconcile"), []byte("flux-webhook/platform-token (platform API)"),
		[]byte("flux-webhook.openova.io/cluster=<name>"), []byte("networkPolicy.remoteApiServers")} {
		if !bytes.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
	// Every rule of the ClusterRole, which a registered cluster's kubeconfig needs there.
	flat := strings.Join(strings.Fields(string(notes)), " ")
	for _, r := range rulesOf(t, find(t, decode(t, helmTemplate(t, catalystNS, values)), "ClusterRole", "flux-webhook")) {
		for _, want := range append(slices.Clone(r.Resources), strings.Join(r.Verbs, ", "), "("+r.APIGroups[0]+")") {
			if !strings.Contains(flat, want) {
				t.Errorf("NOTES do not say that a registered cluster's identity needs %s %v on %v", r.APIGroups, r.Verbs, r.Resources)
				break
			}
		}
	}
}

// The ClusterRole deploy/README.md gives for a registered cluster's kubeconfig identity has
// exactly the rules of the rendered ClusterRole (the same code runs against that cluster),
// and it and its binding are accepted by the API server.
func TestRemoteClusterRoleDocumented(t *testing.T) {
	integration(t)
	readme, err := os.ReadFile(path("deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var doc []*unstructured.Unstructured
	for _, block := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1) {
		if bytes.Contains(block[1], []byte("name: flux-webhook-remote")) {
			doc = decode(t, block[1])
		}
	}
	if len(doc) == 0 {
		t.Fatal("deploy/README.md has no yaml block with the ClusterRole flux-webhook-remote")
	}
	want := rulesOf(t, find(t, decode(t, kustomize(t, "deploy/base")), "ClusterRole", "flux-webhook"))
	if got := rulesOf(t, find(t, doc, "ClusterRole", "flux-webhook-remote")); !reflect.DeepEqual(got, want) {
		t.Errorf("deploy/README.md's remote ClusterRole has rules\n%+v\nthe rendered ClusterRole\n%+v", got, want)
	}
	find(t, doc, "ClusterRoleBinding", "flux-webhook-remote")
	for _, o := range doc {
		apply(t, env.kube.Client, o, true)
	}
}

// gitUrlAliases reach the service as FLUX_WEBHOOK_GIT_URL_ALIAS (comma-separated, as its
// --git-url-alias flag reads the environment), and only when set.
func TestChartGitURLAliases(t *testing.T) {
	values := filepath.Join(t.TempDir(), "aliases.json")
	if err := os.WriteFile(values, []byte(`{"gitUrlAliases": ["https://gitea.example.eu=http://gitea-http.gitea.svc:3000", "https://git.example.eu=http://gitea-http.gitea.svc:3000"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := string(helmTemplate(t, "flux-webhook", values))
	want := "- name: FLUX_WEBHOOK_GIT_URL_ALIAS\n              value: \"https://gitea.example.eu=http://gitea-http.gitea.svc:3000,https://git.example.eu=http://gitea-http.gitea.svc:3000\""
	if !strings.Contains(out, want) {
		t.Fatalf("rendered Deployment lacks %q", want)
	}
	if strings.Contains(string(helmTemplate(t, "flux-webhook")), "FLUX_WEBHOOK_GIT_URL_ALIAS") {
		t.Fatal("FLUX_WEBHOOK_GIT_URL_ALIAS rendered without aliases")
	}
}
