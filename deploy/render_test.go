package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

const (
	catalystDir = "deploy/overlays/catalyst"
	catalystNS  = "flux-webhook"          // the overlay's namespace, the Blueprint's
	clustersNS  = "flux-webhook-clusters" // where the overlay's kubeconfig Secrets live
)

// setting is one line of the overlay's values.env: a chart value path (lists by index:
// networkPolicy.hookFromNamespaces.0) and its value.
type setting struct{ path, value string }

// catalystConfig reads the overlay's values.env: the Blueprint's configuration, each value
// under its chart value path, in file order.
func catalystConfig(t *testing.T) []setting {
	t.Helper()
	f, err := os.Open(path(catalystDir, "values.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []setting
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
		out = append(out, setting{k, v})
	}
	return out
}

// setPath sets the value at a dotted path in values, creating maps, and lists for numeric
// segments (which must come in order: 0, then 1, ...).
func setPath(t *testing.T, values map[string]any, p string, v any) {
	t.Helper()
	keys := strings.Split(p, ".")
	var cur any = values
	set := func(parent any, key string, child any) {
		switch c := parent.(type) {
		case map[string]any:
			c[key] = child
		case *[]any:
			i, _ := strconv.Atoi(key)
			(*c)[i] = child
		}
	}
	get := func(parent any, key string) any {
		switch c := parent.(type) {
		case map[string]any:
			return c[key]
		case *[]any:
			i, _ := strconv.Atoi(key)
			return (*c)[i]
		}
		return nil
	}
	for i, k := range keys {
		if l, ok := cur.(*[]any); ok {
			n, err := strconv.Atoi(k)
			if err != nil || n > len(*l) {
				t.Fatalf("%s: list index %q out of order", p, k)
			}
			if n == len(*l) {
				*l = append(*l, nil)
			}
		}
		if i == len(keys)-1 {
			set(cur, k, v)
			return
		}
		next := get(cur, k)
		if next == nil {
			if _, err := strconv.Atoi(keys[i+1]); err == nil {
				next = &[]any{}
			} else {
				next = map[string]any{}
			}
			set(cur, k, next)
		}
		cur = next
	}
}

// unpointer turns the *[]any setPath builds into plain lists.
func unpointer(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = unpointer(e)
		}
		return x
	case *[]any:
		for i, e := range *x {
			(*x)[i] = unpointer(e)
		}
		return *x
	}
	return v
}

// configValues turns settings into chart values, as Catalyst passes a Blueprint's
// configuration to its chart.
func configValues(t *testing.T, settings []setting) map[string]any {
	t.Helper()
	values := map[string]any{}
	for _, s := range settings {
		setPath(t, values, s.path, s.value)
	}
	return unpointer(values).(map[string]any)
}

// valuesFile writes values (a map, or JSON text) to a file for helm --values.
func valuesFile(t *testing.T, values any) string {
	t.Helper()
	b, ok := values.([]byte)
	if s, isString := values.(string); isString {
		b, ok = []byte(s), true
	}
	if !ok {
		var err error
		if b, err = json.Marshal(values); err != nil {
			t.Fatal(err)
		}
	}
	// Not under t.TempDir(): helm splits --values at commas, which test names may hold.
	dir, err := os.MkdirTemp("", "values-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "values.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// catalystValues is a values file of the overlay's configuration.
func catalystValues(t *testing.T) string {
	t.Helper()
	return valuesFile(t, configValues(t, catalystConfig(t)))
}

type rendering struct {
	name      string // golden file testdata/<name>.yaml
	namespace string // where namespaced objects without one go (kubectl apply's default)
	out       []byte
}

func render(t *testing.T) []rendering {
	t.Helper()
	values := catalystValues(t)
	must := func(out []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return []rendering{
		{"base", "default", kustomize(t, "deploy/base")},
		{"catalyst", catalystNS, kustomize(t, catalystDir)},
		// The Blueprint with the overlay's configuration on a Catalyst cluster (Cilium), and
		// the chart as it comes.
		{"chart-catalyst", catalystNS, must(helmTemplateAPIs(t, catalystNS, onCilium, values))},
		{"chart-defaults", catalystNS, helmTemplate(t, catalystNS)},
		// The overlay's options taken (its commented components and patch uncommented, as its
		// comments say), and the chart's values for the same.
		{"catalyst-options", catalystNS, tool(t, "kustomize", "build", catalystWithOptions(t))},
		{"chart-options", catalystNS, must(helmTemplateAPIs(t, catalystNS, onCilium, values, valuesFile(t, chartOptions)))},
	}
}

// The options the overlay offers commented out — no platform API, the shared token, an
// HTTPRoute instead of the Ingress, the monitoring kit, egress to a registered cluster's API
// server (remote-api-servers.yaml's example: an in-cluster vcluster in rtz) — and the chart's
// values for the same.
const chartOptions = `{"platformApi": {"enabled": false}, "sharedToken": {"enabled": true},
		"ingress": {"enabled": false}, "httpRoute": {"enabled": true},
		"monitoring": {"podMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}, "dashboard": {"enabled": true}},
		"networkPolicy": {"remoteApiServers": [{"namespace": "rtz", "ports": [8443]}]}}`

// overlayOptionCount is how many options the overlay's kustomization.yaml offers commented out
// (components and the patch): a test that uncommented fewer would prove less than it says.
const overlayOptionCount = 5

// catalystWithOptions copies deploy/ and uncomments, in the copy of the overlay's
// kustomization.yaml, each commented list item ("  # - ...") and the commented lines that
// continue it ("  #   "), and the key of a list commented whole ("# patches:"), as a user
// following its comments would; it returns the copy's overlay directory.
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
	n := 0
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "  # - ") {
			continue
		}
		n++
		// A list of its own, commented whole: its key too.
		if i > 0 && regexp.MustCompile(`^# [a-zA-Z]+:$`).MatchString(lines[i-1]) {
			lines[i-1] = lines[i-1][2:]
		}
		lines[i] = "  " + lines[i][4:]
		for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "  #   ") {
			i++
			lines[i] = "  " + lines[i][4:]
		}
	}
	if n != overlayOptionCount {
		t.Fatalf("%s/kustomization.yaml offers %d options, want %d", catalystDir, n, overlayOptionCount)
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

// Every rendered object is accepted by a real API server with the Flux, External Secrets,
// Gateway API and prometheus-operator CRDs (server-side apply, dry run), without a warning:
// the pod template passes the restricted Pod Security Standard, the admission policy's CEL
// compiles.
func TestRenderedApplyDryRun(t *testing.T) {
	integration(t)
	c, warnings := warningClient(t)
	for _, r := range render(t) {
		t.Run(r.name, func(t *testing.T) {
			objs := decode(t, r.out)
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			// The Namespaces for real (a dry run would not create what the rest needs).
			for _, o := range objs {
				if o.GetKind() == "Namespace" {
					apply(t, c, o, false)
				}
			}
			ensureNamespace(t, r.namespace)
			for _, o := range objs {
				if o.GetNamespace() != "" {
					ensureNamespace(t, o.GetNamespace())
				}
			}
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
	// judging (the Namespaces exist by now, so a dry run can judge the rest; the RBAC test's
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
	if err := applyErr(t, c, o, dryRun); err != nil {
		t.Fatal(err)
	}
}

func applyErr(t *testing.T, c client.Client, o *unstructured.Unstructured, dryRun bool) error {
	t.Helper()
	opts := []client.ApplyOption{client.ForceOwnership, client.FieldOwner("deploy-test")}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	if err := c.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(o.DeepCopy()), opts...); err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
	}
	return nil
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

// What Helm's conventions add and Kustomize has no use for: labels, and the annotation that
// keeps the kubeconfig Secrets' Namespace when the release is uninstalled.
var (
	helmOnlyLabels      = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}
	helmOnlyAnnotations = []string{"helm.sh/resource-policy"}
)

// The Blueprint's chart, given the overlay's configuration, renders the same objects as the
// Catalyst overlay (and so as the base): same kinds and names, same specs, rules,
// selectors and labels, but for what only Helm adds and the Namespace only the overlay
// creates (Helm installs into a namespace). So do the overlay with its options taken and the
// chart with the values for the same.
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
		if a := o.GetAnnotations(); a != nil {
			for _, k := range helmOnlyAnnotations {
				delete(a, k)
			}
			if len(a) == 0 {
				a = nil
			}
			o.SetAnnotations(a)
		}
		// Helm leaves the namespace to the install; the overlay names it.
		if namespaced(t, o) && o.GetNamespace() == "" {
			o.SetNamespace(catalystNS)
		}
		byKey[key(o)] = o
	}
	seen := 0
	for _, k := range kust {
		if k.GetKind() == "Namespace" && k.GetName() == catalystNS {
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

// helm lint finds nothing to warn about, with the defaults, with the Blueprint's
// configuration, and with that and the options' values.
func TestHelmLint(t *testing.T) {
	integration(t)
	values := catalystValues(t)
	for _, args := range [][]string{{}, {"--values", values}, {"--values", values, "--values", valuesFile(t, chartOptions)}} {
		out := tool(t, "helm", append([]string{"lint", "--strict", "--kube-version", env.kubeVersion, path(chartDir)}, args...)...)
		if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ERROR]")) || !bytes.Contains(out, []byte("0 chart(s) failed")) {
			t.Errorf("helm lint %v:\n%s", args, out)
		}
	}
}

// values.schema.json refuses bad values at install, naming the value; and the chart refuses
// what a schema cannot say, naming the value and why.
func TestValuesRefused(t *testing.T) {
	integration(t)
	const schemaError = "values don't meet the specifications of the schema"
	for _, tc := range []struct {
		name, values, want string
		template           bool // refused by a template's check, not the schema
	}{
		{"no replicas", `{"replicaCount": 0}`, "/replicaCount", false},
		{"replicas as text", `{"replicaCount": "two"}`, "/replicaCount", false},
		{"cluster name not a DNS label", `{"clusterName": "Fra_1"}`, "/clusterName", false},
		{"region not a DNS label", `{"region": "EU Central"}`, "/region", false},
		{"Gitea URL alias without its other half", `{"gitUrlAliases": ["https://gitea.example.eu"]}`, "/gitUrlAliases/0", false},
		{"two Gitea URL aliases in one", `{"gitUrlAliases": ["https://a.eu=http://a:3000,https://b.eu=http://b:3000"]}`, "/gitUrlAliases/0", false},
		{"Gitea URL without scheme", `{"giteaUrl": "gitea.example.eu"}`, "/giteaUrl", false},
		{"FQDN in capitals", `{"global": {"sovereignFQDN": "Fra1.Example.EU"}}`, "/global/sovereignFQDN", false},
		{"FQDN with a scheme", `{"global": {"sovereignFQDN": "https://fra1.example.eu"}}`, "/global/sovereignFQDN", false},
		{"misspelt key", `{"replicas": 3}`, "'replicas' not allowed", false},
		{"image digest not a digest", `{"image": {"digest": "latest"}}`, "/image/digest", false},
		{"unknown pull policy", `{"image": {"pullPolicy": "Sometimes"}}`, "/image/pullPolicy", false},
		{"log level the binary lacks", `{"logLevel": "warn"}`, "/logLevel", false},
		{"result timeout not a duration", `{"resultTimeout": "ten minutes"}`, "/resultTimeout", false},
		{"verify-claims as text", `{"verifyClaims": "no"}`, "/verifyClaims", false},
		{"status granularity unknown", `{"status": {"granularity": "repository"}}`, "/status/granularity", false},
		{"QPS of zero", `{"kubeClient": {"qps": 0}}`, "/kubeClient/qps", false},
		{"an extra argument that is no flag", `{"extraArgs": ["reconcile"]}`, "/extraArgs/0", false},
		{"an extra variable without a name", `{"extraEnv": [{"value": "x"}]}`, "/extraEnv/0", false},
		{"memory limit GOMEMLIMIT cannot be derived from", `{"resources": {"limits": {"memory": "lots"}}}`, "/resources/limits/memory", false},
		{"empty OpenBao key", `{"externalSecrets": {"hookKey": {"key": ""}}}`, "/externalSecrets/hookKey/key", false},
		{"record key with a property", `{"externalSecrets": {"recordKey": {"key": "k", "property": "token"}}}`, "'property' not allowed", false},
		{"External Secrets API ESO never served", `{"externalSecrets": {"apiVersion": "external-secrets.io/v2"}}`, "/externalSecrets/apiVersion", false},
		{"network policy flavor unknown", `{"networkPolicy": {"flavor": "calico"}}`, "/networkPolicy/flavor", false},
		{"Cilium setting misspelt", `{"networkPolicy": {"cilium": {"hookFromGateways": true}}}`, "'hookFromGateways' not allowed", false},
		{"unknown store kind", `{"externalSecrets": {"storeKind": "Vault"}}`, "/externalSecrets/storeKind", false},
		{"platform API switch as text", `{"platformApi": {"enabled": "no"}}`, "/platformApi/enabled", false},
		{"shared token switch misspelt", `{"sharedToken": {"enable": true}}`, "'enable' not allowed", false},
		{"clusters namespace not a DNS label", `{"clusters": {"secretsNamespace": "Flux_Clusters"}}`, "/clusters/secretsNamespace", false},
		{"insecure kubeconfig category unknown", `{"clusters": {"insecureKubeconfig": ["everything"]}}`, "/clusters/insecureKubeconfig/0", false},
		{"default grant with an empty entry", `{"clusters": {"defaultRepositories": "acme/*,,beta/*"}}`, "/clusters/defaultRepositories", false},
		{"default grant of an owner without its repositories", `{"clusters": {"defaultRepositories": "{cluster}"}}`, "/clusters/defaultRepositories", false},
		{"HTTPRoute without a Gateway", `{"httpRoute": {"parentRefs": []}}`, "/httpRoute/parentRefs", false},
		{"HTTPRoute timeout not a Gateway duration", `{"httpRoute": {"timeouts": {"request": "35 minutes"}}}`, "/httpRoute/timeouts/request", false},
		{"hook senders: none", `{"networkPolicy": {"hookFromNamespaces": []}}`, "/networkPolicy/hookFromNamespaces", false},
		{"hook sender not a namespace name", `{"networkPolicy": {"hookFromNamespaces": ["Ingress NGINX"]}}`, "/networkPolicy/hookFromNamespaces/0", false},
		{"API server anywhere by omission", `{"networkPolicy": {"apiServer": {"cidrs": []}}}`, "/networkPolicy/apiServer/cidrs", false},
		{"API server address without prefix length", `{"networkPolicy": {"apiServer": {"cidrs": ["10.0.0.1"]}}}`, "/networkPolicy/apiServer/cidrs/0", false},
		{"Gitea port out of range", `{"networkPolicy": {"gitea": {"ports": [70000]}}}`, "/networkPolicy/gitea/ports/0", false},
		{"remote API server without prefix length", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0", "ports": [8443]}]}}`, "/networkPolicy/remoteApiServers/0/cidr", false},
		{"remote API server not an address", `{"networkPolicy": {"remoteApiServers": [{"cidr": "vcluster.example.eu/32", "ports": [8443]}]}}`, "/networkPolicy/remoteApiServers/0/cidr", false},
		{"remote API server without ports", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16"}]}}`, "/networkPolicy/remoteApiServers/0", false},
		{"remote API server by address and namespace", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16", "namespace": "rtz", "ports": [8443]}]}}`, "/networkPolicy/remoteApiServers/0", false},
		{"remote API server by neither", `{"networkPolicy": {"remoteApiServers": [{"ports": [8443]}]}}`, "/networkPolicy/remoteApiServers/0", false},
		{"remote API server namespace not a DNS label", `{"networkPolicy": {"remoteApiServers": [{"namespace": "RTZ", "ports": [8443]}]}}`, "/networkPolicy/remoteApiServers/0", false},
		{"remote API server port by name", `{"networkPolicy": {"remoteApiServers": [{"cidr": "10.42.0.0/16", "ports": ["https"]}]}}`, "/networkPolicy/remoteApiServers/0/ports/0", false},
		{"monitoring toggle as text", `{"monitoring": {"podMonitor": {"enabled": "yes"}}}`, "/monitoring/podMonitor/enabled", false},
		{"another chart as upstream", `{"catalystBlueprint": {"upstream": {"chart": "flux2"}}}`, "/catalystBlueprint/upstream/chart", false},
		{"upstream version not semver", `{"catalystBlueprint": {"upstream": {"version": "1.0"}}}`, "/catalystBlueprint/upstream/version", false},
		{"enrolled repository without its owner", `{"enrollment": {"repositories": ["app"]}}`, "/enrollment/repositories/0", false},
		{"enrollment URL with a query", `{"enrollment": {"followed": true, "url": "https://fw.example.eu/?x=1"}}`, "/enrollment/url", false},
		// What a schema cannot compare, or what 0.2 took and 0.3 refuses with what to set.
		{"enrollment without a URL or a host", `{"enrollment": {"organizations": ["acme"]}}`, "enrollment: set enrollment.url", true},
		{"enrollment token holding the Gitea token's value", `{"enrollment": {"organizations": ["acme"], "url": "https://fw.example.eu", "token": {"key": "catalyst/flux-webhook/gitea-token", "property": "token"}}}`, "are the same OpenBao value", true},
		{"0.2's sovereignDomain", `{"sovereignDomain": "example.eu", "locationCode": "fra1"}`, "replaced in chart 0.3.0 by global.sovereignFQDN", true},
		{"0.2's locationCode alone", `{"locationCode": "fra1"}`, "set global.sovereignFQDN to <locationCode>.<sovereignDomain>", true},
		{"kubeconfig Secrets beside the tokens", `{"clusters": {"secretsNamespace": "flux-webhook"}}`, "the release's namespace, which holds the keys and tokens", true},
		{"two purposes, one OpenBao value", `{"externalSecrets": {"webhookKey": {"key": "catalyst/flux-webhook/hook-key", "property": "token"}}}`, "are the same OpenBao value", true},
		{"record key holding another purpose's value", `{"externalSecrets": {"recordKey": {"key": "catalyst/flux-webhook/gitea-token"}}}`, "are the same OpenBao value", true},
		{"HTTPRoute ending waiting streams", `{"httpRoute": {"enabled": true, "timeouts": {"request": "30m"}}}`, "httpRoute.timeouts.request 30m: a /hook?wait=true stream lasts up to 30m", true},
		{"HTTPRoute backend ending waiting streams", `{"httpRoute": {"enabled": true, "timeouts": {"request": "1h", "backendRequest": "29m59s"}}}`, "httpRoute.timeouts.backendRequest", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := helmTemplateErr(t, catalystNS, valuesFile(t, tc.values))
			if err == nil {
				t.Fatalf("helm accepted %s", tc.values)
			}
			if tc.template == strings.Contains(err.Error(), schemaError) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a %s error naming %q, got: %v", map[bool]string{false: "schema", true: "template"}[tc.template], tc.want, err)
			}
		})
	}
	// Two purposes under one OpenBao key, each with its own property, are two values.
	if _, err := helmTemplateErr(t, catalystNS, valuesFile(t, `{"externalSecrets": {"webhookKey": {"key": "catalyst/flux-webhook/hook-key", "property": "webhook"}}}`)); err != nil {
		t.Errorf("one OpenBao key, two properties: %v", err)
	}
}

// The Blueprint's chart, given the overlay's configuration, and the overlay pass the contract's
// settings: the keys and tokens by Secret, the service's namespace, and the kubeconfig
// Secrets' own namespace; every other flag of the contract reaches the service as its
// FLUX_WEBHOOK_<FLAG> when set, and only then.
func TestChartSettings(t *testing.T) {
	integration(t)
	const ns = catalystNS
	envOf := func(t *testing.T, values ...string) map[string]string {
		t.Helper()
		return containerOf(t, findKind(t, decode(t, helmTemplate(t, ns, values...)), "Deployment")).environment(t, ns)
	}
	defaults := envOf(t)
	for name, want := range map[string]string{
		"FLUX_WEBHOOK_NAMESPACE":                 ns,
		"FLUX_WEBHOOK_HOOK_KEY_SECRET":           ns + "/flux-webhook-hook-key",
		"FLUX_WEBHOOK_WEBHOOK_KEY_SECRET":        ns + "/flux-webhook-webhook-key",
		"FLUX_WEBHOOK_GITEA_TOKEN_SECRET":        ns + "/flux-webhook-gitea",
		"FLUX_WEBHOOK_RECORD_KEY_SECRET":         ns + "/flux-webhook-record-key",
		"FLUX_WEBHOOK_PLATFORM_TOKEN_SECRET":     ns + "/flux-webhook-platform",
		"FLUX_WEBHOOK_CLUSTER_SECRETS_NAMESPACE": ns + "-clusters",
		"FLUX_WEBHOOK_CLUSTER_NAME":              "local",
		"GOMEMLIMIT":                             "230MiB",
		// Each organization's vcluster, registered under its name, follows its repositories.
		"FLUX_WEBHOOK_CLUSTER_DEFAULT_REPOSITORIES": "{cluster}/*",
	} {
		if defaults[name] != want {
			t.Errorf("default %s=%q, want %q", name, defaults[name], want)
		}
	}
	for _, gone := range []string{"FLUX_WEBHOOK_TOKEN_SECRET", "FLUX_WEBHOOK_SHARED_TOKEN_SECRET", "FLUX_WEBHOOK_PLATFORM_LISTEN"} {
		if _, ok := defaults[gone]; ok {
			t.Errorf("the defaults set %s", gone)
		}
	}
	for _, tc := range []struct {
		values string
		env    map[string]string // "" means: not set
	}{
		{`{"logLevel": "debug", "logEncoding": "console"}`, map[string]string{"FLUX_WEBHOOK_LOG_LEVEL": "debug", "FLUX_WEBHOOK_LOG_ENCODING": "console"}},
		{`{"resultTimeout": "20m", "maxPushTargets": 5000, "verifyClaims": false}`,
			map[string]string{"FLUX_WEBHOOK_RESULT_TIMEOUT": "20m", "FLUX_WEBHOOK_MAX_PUSH_TARGETS": "5000", "FLUX_WEBHOOK_VERIFY_CLAIMS": "false"}},
		{`{"verifyClaims": true}`, map[string]string{"FLUX_WEBHOOK_VERIFY_CLAIMS": "true"}},
		{`{"status": {"granularity": "cluster", "targetUrl": "https://console.example.eu/{cluster}/{kind}/{namespace}/{name}"}}`,
			map[string]string{"FLUX_WEBHOOK_STATUS_GRANULARITY": "cluster", "FLUX_WEBHOOK_STATUS_TARGET_URL": "https://console.example.eu/{cluster}/{kind}/{namespace}/{name}"}},
		{`{"kubeClient": {"qps": 80, "burst": 400}, "clusters": {"qps": 20.5, "burst": 40}}`,
			map[string]string{"FLUX_WEBHOOK_KUBE_QPS": "80", "FLUX_WEBHOOK_KUBE_BURST": "400", "FLUX_WEBHOOK_CLUSTER_QPS": "20.5", "FLUX_WEBHOOK_CLUSTER_BURST": "40"}},
		{`{"leaderElection": {"leaseDuration": "30s", "renewDeadline": "20s", "retryPeriod": "4s"}}`,
			map[string]string{"FLUX_WEBHOOK_LEADER_ELECTION_LEASE_DURATION": "30s", "FLUX_WEBHOOK_LEADER_ELECTION_RENEW_DEADLINE": "20s", "FLUX_WEBHOOK_LEADER_ELECTION_RETRY_PERIOD": "4s"}},
		{`{"clusters": {"insecureKubeconfig": ["exec", "http"], "secretsNamespace": "vclusters"}}`,
			map[string]string{"FLUX_WEBHOOK_INSECURE_KUBECONFIG": "exec,http", "FLUX_WEBHOOK_CLUSTER_SECRETS_NAMESPACE": "vclusters"}},
		{`{"clusters": {"enabled": false, "insecureKubeconfig": ["exec"]}}`,
			map[string]string{"FLUX_WEBHOOK_CLUSTER_SECRETS_NAMESPACE": "", "FLUX_WEBHOOK_INSECURE_KUBECONFIG": "", "FLUX_WEBHOOK_CLUSTER_DEFAULT_REPOSITORIES": ""}},
		{`{"clusters": {"defaultRepositories": ""}}`, map[string]string{"FLUX_WEBHOOK_CLUSTER_DEFAULT_REPOSITORIES": ""}},
		{`{"clusters": {"defaultRepositories": "platform/*, {cluster}/*"}}`,
			map[string]string{"FLUX_WEBHOOK_CLUSTER_DEFAULT_REPOSITORIES": "platform/*, {cluster}/*"}},
		{`{"giteaUrl": "https://gitea.example.eu", "clusterName": "fra1", "region": "eu-central"}`,
			map[string]string{"FLUX_WEBHOOK_GITEA_URL": "https://gitea.example.eu", "FLUX_WEBHOOK_CLUSTER_NAME": "fra1", "FLUX_WEBHOOK_REGION": "eu-central"}},
		// The Sovereign's Gitea by default, giteaUrl when set.
		{`{"global": {"sovereignFQDN": "fra1.example.eu"}}`, map[string]string{"FLUX_WEBHOOK_GITEA_URL": "https://gitea.fra1.example.eu"}},
		{`{"global": {"sovereignFQDN": "fra1.example.eu"}, "giteaUrl": "http://gitea-http.gitea.svc:3000"}`,
			map[string]string{"FLUX_WEBHOOK_GITEA_URL": "http://gitea-http.gitea.svc:3000"}},
		{`{"platformApi": {"enabled": false}, "sharedToken": {"enabled": true}}`,
			map[string]string{"FLUX_WEBHOOK_PLATFORM_TOKEN_SECRET": "", "FLUX_WEBHOOK_SHARED_TOKEN_SECRET": ns + "/flux-webhook-shared-token"}},
		{`{"extraEnv": [{"name": "GOMEMLIMIT", "value": "100MiB"}, {"name": "FLUX_WEBHOOK_KUBE_QPS", "value": "70"}]}`,
			map[string]string{"GOMEMLIMIT": "100MiB", "FLUX_WEBHOOK_KUBE_QPS": "70"}},
		{`{"enrollment": {"organizations": ["acme", "platform"], "followed": true, "webhook": true, "rotationMax": "2h"}, "global": {"sovereignFQDN": "fra1.example.eu"}}`,
			map[string]string{"FLUX_WEBHOOK_ENROLL_TOKEN_SECRET": ns + "/flux-webhook-enroll", "FLUX_WEBHOOK_ENROLL_URL": "https://flux-webhook.fra1.example.eu",
				"FLUX_WEBHOOK_ENROLL_ORGANIZATION": "acme,platform", "FLUX_WEBHOOK_ENROLL_FOLLOWED": "true", "FLUX_WEBHOOK_ENROLL_WEBHOOK": "true",
				"FLUX_WEBHOOK_ENROLL_ROTATION_MAX": "2h", "FLUX_WEBHOOK_ENROLL_REPOSITORY": "", "FLUX_WEBHOOK_ENROLL_SCOPES_CONFIGMAP": "",
				"FLUX_WEBHOOK_GITEA_URL": "https://gitea.fra1.example.eu"}},
		{`{"enrollment": {"scopesConfigMap": "flux-webhook-scopes", "url": "https://hooks.example.eu/fra1"}}`,
			map[string]string{"FLUX_WEBHOOK_ENROLL_TOKEN_SECRET": ns + "/flux-webhook-enroll", "FLUX_WEBHOOK_ENROLL_URL": "https://hooks.example.eu/fra1",
				"FLUX_WEBHOOK_ENROLL_SCOPES_CONFIGMAP": "flux-webhook-scopes", "FLUX_WEBHOOK_ENROLL_FOLLOWED": ""}},
		{`{"fullnameOverride": "fw"}`, map[string]string{"FLUX_WEBHOOK_HOOK_KEY_SECRET": ns + "/fw-hook-key", "FLUX_WEBHOOK_WEBHOOK_KEY_SECRET": ns + "/fw-webhook-key",
			"FLUX_WEBHOOK_GITEA_TOKEN_SECRET": ns + "/fw-gitea", "FLUX_WEBHOOK_RECORD_KEY_SECRET": ns + "/fw-record-key", "FLUX_WEBHOOK_PLATFORM_TOKEN_SECRET": ns + "/fw-platform"}},
	} {
		t.Run(tc.values, func(t *testing.T) {
			got := envOf(t, valuesFile(t, tc.values))
			for name, want := range tc.env {
				if v, ok := got[name]; want == "" && ok || want != "" && v != want {
					t.Errorf("%s=%q (set: %v), want %q", name, v, ok, want)
				}
			}
			// Nothing else moved.
			for name, v := range defaults {
				if _, named := tc.env[name]; !named && got[name] != v {
					t.Errorf("%s=%q, the defaults' %q", name, got[name], v)
				}
			}
		})
	}
	// extraArgs follow `serve`; an extraEnv GOMEMLIMIT replaces the derived one, not joins it.
	d := containerOf(t, findKind(t, decode(t, helmTemplate(t, ns, valuesFile(t,
		`{"extraArgs": ["--kube-qps=80"], "extraEnv": [{"name": "GOMEMLIMIT", "value": "100MiB"}]}`))), "Deployment"))
	if !slices.Equal(d.args, []string{"serve", "--kube-qps=80"}) {
		t.Errorf("args %q", d.args)
	}
	n := 0
	for _, e := range d.env {
		if e.Name == "GOMEMLIMIT" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("GOMEMLIMIT set %d times", n)
	}
}

// GOMEMLIMIT is 90% of the memory limit, in MiB, for each way Kubernetes writes a quantity;
// none without a limit; and the Kustomize base's literal is 90% of the base's limit.
func TestGoMemLimit(t *testing.T) {
	integration(t)
	for _, tc := range []struct{ limit, want string }{
		{"256Mi", "230MiB"}, {"1Gi", "921MiB"}, {"512M", "439MiB"}, {"2G", "1716MiB"},
		{"268435456", "230MiB"}, {"1.5Gi", "1382MiB"}, {"100Mi", "90MiB"}, {"", ""},
	} {
		t.Run(tc.limit, func(t *testing.T) {
			values := `{"resources": {"limits": {"memory": "` + tc.limit + `"}}}`
			if tc.limit == "" {
				values = `{"resources": {"requests": {"memory": "64Mi"}, "limits": null}}`
			}
			got, ok := containerOf(t, findKind(t, decode(t, helmTemplate(t, catalystNS, valuesFile(t, values))), "Deployment")).environment(t, catalystNS)["GOMEMLIMIT"]
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("GOMEMLIMIT %q (set: %v), want %q", got, ok, tc.want)
			}
		})
	}
	dep := findKind(t, decode(t, kustomize(t, "deploy/base")), "Deployment")
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	limit, _, _ := unstructured.NestedString(containers[0].(map[string]any), "resources", "limits", "memory")
	mib, err := strconv.Atoi(strings.TrimSuffix(limit, "Mi"))
	if err != nil {
		t.Fatalf("the base's memory limit %q is not in Mi", limit)
	}
	if got, want := containerOf(t, dep).environment(t, "x")["GOMEMLIMIT"], fmt.Sprintf("%dMiB", mib*9/10); got != want {
		t.Errorf("the base sets GOMEMLIMIT=%s for a limit of %s: want %s", got, limit, want)
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
	values := catalystValues(t)
	// Objects of their own name (the cluster-wide ones would meet the other tests'), in a
	// namespace of their own.
	t.Setenv("KUBECONFIG", env.kube.Kubeconfig)
	out := tool(t, "helm", "install", "bp", path(chartDir), "--namespace", "bp", "--create-namespace",
		"--values", values, "--set", "fullnameOverride=bp-flux-webhook", "--set", "clusters.secretsNamespace=bp-clusters")
	if !bytes.Contains(out, []byte("STATUS: deployed")) {
		t.Errorf("helm install:\n%s", out)
	}
	_, notes, ok := bytes.Cut(out, []byte("NOTES:\n"))
	if !ok {
		t.Fatalf("no NOTES:\n%s", out)
	}
	for _, want := range [][]byte{[]byte("https://flux-webhook.fra1.example.eu/hook"), example, []byte("ALLOWED_HOST_LIST"),
		// The keys, the platform API and its token; where clusters register, and what a
		// registered cluster's kubeconfig needs.
		[]byte("flux-webhook token --repository"), []byte("flux-webhook/webhook-key"), []byte("flux-webhook/record-key"),
		[]byte("port 8083"), []byte("flux-webhook/platform-token (platform API)"),
		[]byte("in bp-clusters labelled flux-webhook.openova.io/cluster=<name>"), []byte("networkPolicy.remoteApiServers")} {
		if !bytes.Contains(notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, notes)
		}
	}
	// Every rule of the ClusterRole, which a registered cluster's kubeconfig needs there.
	flat := strings.Join(strings.Fields(string(notes)), " ")
	for _, r := range rulesOf(t, find(t, decode(t, helmTemplate(t, catalystNS, values)), "ClusterRole", "flux-webhook")) {
		group := r.APIGroups[0]
		if group == "" {
			group = "core" // how the NOTES name the core group
		}
		for _, want := range append(slices.Clone(r.Resources), strings.Join(r.Verbs, ", "), "("+group+")") {
			if !strings.Contains(flat, want) {
				t.Errorf("NOTES do not say that a registered cluster's identity needs %s %v on %v", r.APIGroups, r.Verbs, r.Resources)
				break
			}
		}
	}
}

// What deploy/README.md gives for a registered cluster: a ClusterRole with exactly the rules
// of the rendered ClusterRole (the same code runs against that cluster), and the rendered
// admission policy judging the identity flux-webhook's kubeconfig authenticates as there
// (the same policy but for that one condition); both are accepted by the API server.
func TestRemoteClusterDocumented(t *testing.T) {
	integration(t)
	readme, err := os.ReadFile(path("deploy", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var doc []*unstructured.Unstructured
	for _, block := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1) {
		if bytes.Contains(block[1], []byte("name: flux-webhook-remote")) {
			doc = append(doc, decode(t, block[1])...)
		}
	}
	if len(doc) == 0 {
		t.Fatal("deploy/README.md has no yaml block with the objects flux-webhook-remote")
	}
	base := decode(t, kustomize(t, "deploy/base"))
	want := rulesOf(t, find(t, base, "ClusterRole", "flux-webhook"))
	if got := rulesOf(t, find(t, doc, "ClusterRole", "flux-webhook-remote")); !reflect.DeepEqual(got, want) {
		t.Errorf("deploy/README.md's remote ClusterRole has rules\n%+v\nthe rendered ClusterRole\n%+v", got, want)
	}
	find(t, doc, "ClusterRoleBinding", "flux-webhook-remote")
	policy := find(t, base, "ValidatingAdmissionPolicy", "flux-webhook")
	remote := find(t, doc, "ValidatingAdmissionPolicy", "flux-webhook-remote")
	for _, o := range []*unstructured.Unstructured{policy, remote} {
		unstructured.RemoveNestedField(o.Object, "spec", "matchConditions")
	}
	if !reflect.DeepEqual(policy.Object["spec"], remote.Object["spec"]) {
		pb, _ := yaml.Marshal(policy.Object["spec"])
		rb, _ := yaml.Marshal(remote.Object["spec"])
		t.Errorf("deploy/README.md's remote policy differs from the rendered one beyond its matchConditions:\n%s", lineDiff(string(pb), string(rb)))
	}
	binding := find(t, doc, "ValidatingAdmissionPolicyBinding", "flux-webhook-remote")
	if p, _, _ := unstructured.NestedString(binding.Object, "spec", "policyName"); p != "flux-webhook-remote" {
		t.Errorf("the remote binding names policy %q", p)
	}
	for _, o := range doc {
		apply(t, env.kube.Client, o, true)
	}
}

// gitUrlAliases reach the service as FLUX_WEBHOOK_GIT_URL_ALIAS (comma-separated, as its
// --git-url-alias flag reads the environment), and only when set.
func TestChartGitURLAliases(t *testing.T) {
	integration(t)
	values := valuesFile(t, `{"gitUrlAliases": ["https://gitea.example.eu=http://gitea-http.gitea.svc:3000", "https://git.example.eu=http://gitea-http.gitea.svc:3000"]}`)
	out := string(helmTemplate(t, "flux-webhook", values))
	want := "- name: FLUX_WEBHOOK_GIT_URL_ALIAS\n              value: \"https://gitea.example.eu=http://gitea-http.gitea.svc:3000,https://git.example.eu=http://gitea-http.gitea.svc:3000\""
	if !strings.Contains(out, want) {
		t.Fatalf("rendered Deployment lacks %q", want)
	}
	if strings.Contains(string(helmTemplate(t, "flux-webhook")), "FLUX_WEBHOOK_GIT_URL_ALIAS") {
		t.Fatal("FLUX_WEBHOOK_GIT_URL_ALIAS rendered without aliases")
	}
}
