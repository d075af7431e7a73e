package testenv

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Environment variables that point at the binaries built by hack/testbin.sh.
const (
	EnvKubebuilderAssets = "KUBEBUILDER_ASSETS"        // kube-apiserver, etcd, kubectl, kube-controller-manager, kube-scheduler
	EnvCRDs              = "FLUX_WEBHOOK_CRDS"         // directory of CRD yaml
	EnvGitea             = "FLUX_WEBHOOK_GITEA"        // gitea binary; its static files in ../static
	EnvGiteaRunner       = "FLUX_WEBHOOK_GITEA_RUNNER" // gitea actions runner binary
	EnvFluxBin           = "FLUX_WEBHOOK_FLUX_BIN"     // directory with source-controller, kustomize-controller
	EnvTools             = "FLUX_WEBHOOK_TOOLS"        // directory with helm, kustomize
	EnvESO               = "FLUX_WEBHOOK_ESO"          // External Secrets Operator's controller binary
	EnvKwok              = "FLUX_WEBHOOK_KWOK"         // directory with kwok and its stage files (stage/)
	EnvFlagger           = "FLUX_WEBHOOK_FLAGGER"      // directory with flagger and its CRDs (crd.yaml)
)

// Assets holds the paths of the test binaries as read from the environment. A field is
// empty when its variable is not set.
type Assets struct {
	KubebuilderAssets string // $KUBEBUILDER_ASSETS
	CRDs              string // $FLUX_WEBHOOK_CRDS
	Gitea             string // $FLUX_WEBHOOK_GITEA
	GiteaRunner       string // $FLUX_WEBHOOK_GITEA_RUNNER
	FluxBin           string // $FLUX_WEBHOOK_FLUX_BIN
	Tools             string // $FLUX_WEBHOOK_TOOLS
	ESO               string // $FLUX_WEBHOOK_ESO
	Kwok              string // $FLUX_WEBHOOK_KWOK
	Flagger           string // $FLUX_WEBHOOK_FLAGGER
}

// Paths reads the test binaries' paths from the environment. It does not check them; the
// Require methods do.
func Paths() Assets {
	return Assets{
		KubebuilderAssets: os.Getenv(EnvKubebuilderAssets),
		CRDs:              os.Getenv(EnvCRDs),
		Gitea:             os.Getenv(EnvGitea),
		GiteaRunner:       os.Getenv(EnvGiteaRunner),
		FluxBin:           os.Getenv(EnvFluxBin),
		Tools:             os.Getenv(EnvTools),
		ESO:               os.Getenv(EnvESO),
		Kwok:              os.Getenv(EnvKwok),
		Flagger:           os.Getenv(EnvFlagger),
	}
}

// RequireKube returns the directory holding kube-apiserver and etcd.
func (a Assets) RequireKube() (string, error) {
	return requireFiles(EnvKubebuilderAssets, a.KubebuilderAssets, "kube-apiserver", "etcd")
}

// RequireCRDs returns the directory of CRD manifests.
func (a Assets) RequireCRDs() (string, error) {
	return requireFiles(EnvCRDs, a.CRDs)
}

// RequireGitea returns the gitea binary and the directory of its static files
// (templates, options, public), which sits beside the binary as ../static.
func (a Assets) RequireGitea() (bin, static string, err error) {
	if _, err := requireFiles(EnvGitea, a.Gitea); err != nil {
		return "", "", err
	}
	static = filepath.Join(filepath.Dir(a.Gitea), "static")
	if _, err := requireFiles(EnvGitea, static, "templates", "options", "public"); err != nil {
		return "", "", err
	}
	return a.Gitea, static, nil
}

// RequireGiteaRunner returns the Gitea Actions runner binary.
func (a Assets) RequireGiteaRunner() (string, error) {
	return requireFiles(EnvGiteaRunner, a.GiteaRunner)
}

// RequireFlux returns the directory holding source-controller and kustomize-controller.
func (a Assets) RequireFlux() (string, error) {
	return requireFiles(EnvFluxBin, a.FluxBin, "source-controller", "kustomize-controller")
}

// RequireTools returns the directory holding helm and kustomize.
func (a Assets) RequireTools() (string, error) {
	return requireFiles(EnvTools, a.Tools, "helm", "kustomize")
}

// RequireKubeControllers returns the directory holding kube-controller-manager and
// kube-scheduler (the same as [Assets.RequireKube]'s).
func (a Assets) RequireKubeControllers() (string, error) {
	return requireFiles(EnvKubebuilderAssets, a.KubebuilderAssets, "kube-controller-manager", "kube-scheduler")
}

// RequireESO returns External Secrets Operator's controller binary and the directory of
// its CRDs, which sits beside it as crds/ (all of ESO's: its controller watches them all).
func (a Assets) RequireESO() (bin, crds string, err error) {
	if _, err := requireFiles(EnvESO, a.ESO); err != nil {
		return "", "", err
	}
	crds = filepath.Join(filepath.Dir(a.ESO), "crds")
	if _, err := requireFiles(EnvESO, crds, "external-secrets.io_externalsecrets.yaml", "generators.external-secrets.io_generatorstates.yaml"); err != nil {
		return "", "", err
	}
	return a.ESO, crds, nil
}

// RequireKwok returns the directory holding kwok and its stage files (stage/).
func (a Assets) RequireKwok() (string, error) {
	return requireFiles(EnvKwok, a.Kwok, "kwok", "stage")
}

// RequireFlagger returns the directory holding flagger and its CRDs (crd.yaml).
func (a Assets) RequireFlagger() (string, error) {
	return requireFiles(EnvFlagger, a.Flagger, "flagger", "crd.yaml")
}

// requireFiles checks that path (the value of env) exists and holds the named entries.
func requireFiles(env, path string, names ...string) (string, error) {
	const hint = "run `make testbin` (hack/testbin.sh) and export the KEY=VALUE lines it prints"
	if path == "" {
		return "", fmt.Errorf("%s is not set: %s", env, hint)
	}
	for _, p := range append([]string{path}, joinAll(path, names)...) {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %s is missing: %s", env, p, hint)
		}
	}
	return path, nil
}

func joinAll(dir string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = filepath.Join(dir, n)
	}
	return out
}

// Light reports whether this test binary runs without the real parts: under -short, or
// only to list tests or to fuzz (a TestMain then skips starting them; call it after
// flag.Parse).
func Light() bool {
	if testing.Short() {
		return true
	}
	for _, name := range []string{"test.list", "test.fuzz"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return true
		}
	}
	return false
}
