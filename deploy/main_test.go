// Package deploy_test proves the three ways flux-webhook is installed — the image, the
// Kustomize base, components and overlay under deploy/, the Helm chart of the Catalyst
// Blueprint under platform/flux-webhook — against the real parts: helm and kustomize at
// pinned versions, a kube-apiserver with the Flux, External Secrets, Gateway API,
// prometheus-operator and Cilium CRDs and the Catalyst platform's Blueprint CRD (server-side
// dry-run applies, RBAC, the admission policy, helm install and upgrade), the flux-webhook
// binary built by the Dockerfile's own build step, and Gitea.
package deploy_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// env holds the real parts, started once for the package.
var env struct {
	root  string // the module root
	tools string // helm, kustomize
	kube  *testenv.Kube
	gitea *testenv.Gitea
	dir   string
	// The API server's version, e.g. v1.37.2: helm template and lint render for it (Helm's
	// default, v1.20.0, is below the chart's kubeVersion).
	kubeVersion string
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// go test runs a package's tests in its directory (runtime.Caller would not do: under
	// -trimpath, which the Makefile sets, it names the file by its import path).
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy setup:", err)
		return 1
	}
	env.root = filepath.Dir(wd)
	if testenv.Light() {
		return m.Run()
	}
	testenv.SetLogger()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "deploy setup:", err); return 1 }
	if env.tools, err = testenv.Paths().RequireTools(); err != nil {
		return fail(fmt.Errorf("%w (hack/testbin.sh tools)", err))
	}
	if env.dir, err = os.MkdirTemp("", "flux-webhook-deploy-"); err != nil {
		return fail(err)
	}
	defer os.RemoveAll(env.dir)
	ctx := context.Background()
	extra, err := testenv.RequireCRDsExtra()
	if err != nil {
		return fail(fmt.Errorf("%w (hack/testbin.sh crds-extra)", err))
	}
	if env.kube, err = testenv.StartKube(ctx, testenv.KubeOptions{Dir: filepath.Join(env.dir, "kube"), CRDs: true}); err != nil {
		return fail(err)
	}
	defer env.kube.Stop()
	// The HTTPRoute's, the monitoring kit's and the CiliumNetworkPolicy's kinds; and the
	// platform's Blueprint CRD (its copy in testdata).
	for _, dir := range []string{extra, filepath.Join(env.root, filepath.FromSlash(blueprintCRDDir))} {
		if err := env.kube.InstallCRDs(ctx, dir); err != nil {
			return fail(err)
		}
	}
	// Flagger's: the service follows canaries.
	flagger, err := testenv.Paths().RequireFlagger()
	if err != nil {
		return fail(fmt.Errorf("%w (hack/testbin.sh flagger)", err))
	}
	if err := env.kube.InstallCRDs(ctx, filepath.Join(flagger, "crd.yaml")); err != nil {
		return fail(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(env.kube.Config)
	if err != nil {
		return fail(err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return fail(err)
	}
	env.kubeVersion = v.GitVersion
	if env.gitea, err = testenv.StartGitea(ctx, filepath.Join(env.dir, "gitea")); err != nil {
		return fail(err)
	}
	defer env.gitea.Stop()
	return m.Run()
}

// integration skips a test under -short: it needs the real parts.
func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs helm, kustomize and a kube-apiserver (run without -short)")
	}
}

// path returns a path of the repository.
func path(elem ...string) string { return filepath.Join(append([]string{env.root}, elem...)...) }

// tool runs helm or kustomize and returns its standard output.
func tool(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := toolErr(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func toolErr(t *testing.T, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(env.tools, name), args...)
	cmd.Dir = env.root
	// helm keeps its state out of $HOME.
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(env.dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(env.dir, "helm", "config"), "HELM_DATA_HOME="+filepath.Join(env.dir, "helm", "data"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out, nil
}

// kustomize renders a kustomization directory of the repository.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	return tool(t, "kustomize", "build", path(dir))
}

// chartDir is the Blueprint's chart.
const chartDir = "platform/flux-webhook/chart"

// helmTemplate renders the chart as release flux-webhook in namespace ns with values files.
func helmTemplate(t *testing.T, ns string, valueFiles ...string) []byte {
	t.Helper()
	out, err := helmTemplateErr(t, ns, valueFiles...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func helmTemplateErr(t *testing.T, ns string, valueFiles ...string) ([]byte, error) {
	t.Helper()
	return helmTemplateAPIs(t, ns, nil, valueFiles...)
}

// onCilium are the API versions of a cluster on Cilium (Catalyst's), as helm template needs
// them told: the chart renders its CiliumNetworkPolicies there.
var onCilium = []string{"cilium.io/v2"}

// helmTemplateAPIs renders the chart for a cluster serving apiVersions besides the built-in
// ones (helm template --api-versions).
func helmTemplateAPIs(t *testing.T, ns string, apiVersions []string, valueFiles ...string) ([]byte, error) {
	t.Helper()
	args := []string{"template", "flux-webhook", path(chartDir), "--namespace", ns, "--kube-version", env.kubeVersion}
	for _, a := range apiVersions {
		args = append(args, "--api-versions", a)
	}
	for _, f := range valueFiles {
		args = append(args, "--values", f)
	}
	return toolErr(t, "helm", args...)
}

// decode splits a multi-document YAML stream into objects.
func decode(t *testing.T, stream []byte) []*unstructured.Unstructured {
	t.Helper()
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		err := d.Decode(&u.Object)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("decode rendered YAML: %v", err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// find returns the one object of kind and name.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := path("deploy", "testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered output differs from %s (run with -update to accept):\n%s", p, lineDiff(string(want), string(got)))
	}
}

// lineDiff shows the first differing lines of two texts, with a little context.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		if i < len(w) && i < len(g) && w[i] == g[i] {
			continue
		}
		from := max(0, i-3)
		var b strings.Builder
		for j := from; j < i+5; j++ {
			if j < len(w) {
				fmt.Fprintf(&b, "- %4d %s\n", j+1, w[j])
			}
			if j < len(g) {
				fmt.Fprintf(&b, "+ %4d %s\n", j+1, g[j])
			}
		}
		return b.String()
	}
	return "(no line differs)"
}
