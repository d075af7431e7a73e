package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// previousChart is the chart of the previous Blueprint version, 0.2.0, as `helm package` made
// it from the repository's history (testdata/README.md says which commit): what an operator
// upgrades from.
const previousChart = "deploy/testdata/bp-flux-webhook-0.2.0.tgz"

// blueprintTest runs one of platform/flux-webhook/tests/ against the test's API server (which
// serves the Flux, External Secrets, Gateway API and Cilium CRDs), with the repository's helm
// and kubectl.
func blueprintTest(t *testing.T, script string, args []string, extraEnv ...string) string {
	t.Helper()
	out, err := blueprintTestErr(t, script, args, extraEnv...)
	if err != nil || !strings.Contains(out, "PASS") {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

func blueprintTestErr(t *testing.T, script string, args []string, extraEnv ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", append([]string{path("platform/flux-webhook/tests", script)}, args...)...)
	cmd.Dir = env.root
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+env.kube.Kubeconfig,
		"PATH="+env.tools+string(os.PathListSeparator)+testenv.Paths().KubebuilderAssets+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HELM_CACHE_HOME="+filepath.Join(env.dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(env.dir, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(env.dir, "helm", "data"))
	cmd.Env = append(cmd.Env, extraEnv...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The Blueprint's acceptance test (platform/flux-webhook/tests/integration.sh, the guide's
// tests/): `helm install` of the chart on a real API server — one that serves cilium.io/v2,
// so the release carries CiliumNetworkPolicies by the cluster's own capabilities, no flag —
// has every object, the platform's External Secrets defaults, the host and Gitea of the
// Sovereign's FQDN, a CPU request and limit, NOTES with the hook URL; `helm uninstall` removes
// it and keeps the clusters' namespace.
func TestBlueprintIntegration(t *testing.T) {
	integration(t)
	out := blueprintTest(t, "integration.sh", nil, "RELEASE=bp-it", "NAMESPACE=bp-it")
	t.Log(out)
}

// The Blueprint's upgrade test (platform/flux-webhook/tests/upgrade.sh, the guide's "upgrade
// tests against previous version"): the previous chart, 0.2.0, installed on a real API server
// and upgraded in place with `helm upgrade` — with a Catalyst configuration rewritten as the
// upgrade notes say, and with each version's defaults (their External Secrets API version
// and store change) — refuses 0.2's values as they are, naming what to set; recreates
// nothing (every object of both versions keeps its UID: the Deployment, its unchanged
// selector, the Service, the ExternalSecrets); and drops only the NetworkPolicies, which give
// way to CiliumNetworkPolicies on this Cilium-serving API server.
func TestBlueprintUpgrade(t *testing.T) {
	integration(t)
	// The packaged chart is the version blueprint.yaml declares it upgrades from.
	prev := tool(t, "helm", "show", "chart", path(previousChart))
	version, _ := at(readObject(t, blueprintFile), "spec.upgrades.from").([]any)
	if !strings.Contains(string(prev), "\nversion: 0.2.0\n") || len(version) != 1 || version[0] != "0.2.x" {
		t.Fatalf("%s is not the 0.2 blueprint.yaml upgrades from (%v):\n%s", previousChart, version, prev)
	}
	defaults := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(defaults, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"catalyst", []string{"RELEASE=bp-up", "NAMESPACE=bp-up"}},
		{"defaults", []string{"RELEASE=bp-up-defaults", "NAMESPACE=bp-up-defaults", "PREVIOUS_VALUES=" + defaults, "CURRENT_VALUES=" + defaults}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Log(blueprintTest(t, "upgrade.sh", []string{path(previousChart)}, tc.env...))
		})
	}
	// The test is live: a chart that would recreate an object, or change the Deployment's
	// selector, fails it.
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"a Service renamed", "templates/service.yaml", "name: {{ include \"flux-webhook.fullname\" . }}\n", "name: {{ include \"flux-webhook.fullname\" . }}-hook\n", "Service/bp-up-broken/bp-up-broken-flux-webhook is gone"},
		{"the selector changed", "templates/_helpers.tpl", "app.kubernetes.io/instance: {{ .Release.Name }}\n", "app.kubernetes.io/instance: {{ .Release.Name }}\napp.kubernetes.io/component: webhook\n", "field is immutable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chart := filepath.Join(t.TempDir(), "chart")
			if err := os.CopyFS(chart, os.DirFS(path(chartDir))); err != nil {
				t.Fatal(err)
			}
			replaceIn(t, filepath.Join(chart, tc.file), tc.old, tc.new)
			out, err := blueprintTestErr(t, "upgrade.sh", []string{path(previousChart), chart}, "RELEASE=bp-up-broken", "NAMESPACE=bp-up-broken")
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("upgrade.sh passed a chart with %s (%v):\n%s", tc.name, err, out)
			}
		})
	}
}
