package testenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/openova-io/flux-webhook/gitops/flux"
)

// KubeOptions configures StartKube.
type KubeOptions struct {
	// Dir receives the admin kubeconfig, the API server's certificates and the logs of
	// kube-apiserver and etcd. Required for StartKube; NewKube defaults it to t.TempDir().
	Dir string
	// CRDs installs every CRD in $FLUX_WEBHOOK_CRDS (Flux source, kustomize and helm,
	// External Secrets) before StartKube returns.
	CRDs bool
	// WithoutCRDs leaves out, of those, the CRDs of these resources ("<group>_<plural>",
	// e.g. "helm.toolkit.fluxcd.io_helmreleases"): a cluster as a Flux installed without
	// one of its controllers has it; CRDFile finds one left out, to install later.
	WithoutCRDs []string
}

// Kube is a running kube-apiserver with etcd (controller-runtime envtest): no kubelet, no
// controller-manager, so Pods never run and nothing garbage-collects.
type Kube struct {
	Env        *envtest.Environment
	Config     *rest.Config  // admin (system:masters)
	Kubeconfig string        // path of an admin kubeconfig file in Dir
	Client     client.Client // admin client with Scheme()
	Dir        string

	logs     []*os.File
	stopOnce sync.Once
	stopErr  error
}

// Scheme returns a scheme with the Kubernetes built-in types and Flux's GitRepository,
// HelmChart (source v1), Kustomization (kustomize v1) and HelmRelease (helm v2).
func Scheme() *runtime.Scheme { return flux.NewScheme() }

// StartKube starts etcd and kube-apiserver from $KUBEBUILDER_ASSETS, installs the CRDs if
// asked, and writes an admin kubeconfig to Dir/kubeconfig. It costs 3-5 s with the CRDs
// (measured on 2 busy cores; three in parallel ~12 s) and ~350 MiB, stopping ~2 s; each
// component may take up to 2 min to come up before it counts as failed. The first call also sets controller-runtime's logger (see SetLogger).
func StartKube(ctx context.Context, opts KubeOptions) (*Kube, error) {
	k, err := startKube(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("start kube: %w", err)
	}
	return k, nil
}

func startKube(ctx context.Context, opts KubeOptions) (*Kube, error) {
	a := Paths()
	assets, err := a.RequireKube()
	if err != nil {
		return nil, err
	}
	var crds []string
	if opts.CRDs {
		dir, err := a.RequireCRDs()
		if err != nil {
			return nil, err
		}
		crds = []string{dir}
	}
	if opts.Dir == "" {
		return nil, errors.New("KubeOptions.Dir is empty")
	}
	if len(opts.WithoutCRDs) > 0 {
		if !opts.CRDs {
			return nil, errors.New("KubeOptions.WithoutCRDs needs CRDs")
		}
		if crds[0], err = crdsWithout(crds[0], filepath.Join(opts.Dir, "crds"), opts.WithoutCRDs); err != nil {
			return nil, err
		}
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	// The API server's certificates live under Dir, not in a temporary directory.
	certDir := filepath.Join(dir, "apiserver")
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		return nil, err
	}
	SetLogger()

	k := &Kube{Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig")}
	apiLog, err := k.openLog("kube-apiserver.log")
	if err != nil {
		return nil, err
	}
	etcdLog, err := k.openLog("etcd.log")
	if err != nil {
		k.closeLogs()
		return nil, err
	}
	k.Env = &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        crds,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
		ControlPlane: envtest.ControlPlane{
			APIServer: &envtest.APIServer{CertDir: certDir, Out: apiLog, Err: apiLog},
			Etcd:      &envtest.Etcd{Out: etcdLog, Err: etcdLog},
		},
	}

	// envtest.Start takes no context: run it aside and, if ctx ends first, stop the
	// control plane once it is up.
	started := make(chan error, 1)
	go func() {
		_, err := k.Env.Start()
		started <- err
	}()
	select {
	case err = <-started:
	case <-ctx.Done():
		go func() {
			<-started
			_ = k.Stop()
		}()
		return nil, ctx.Err()
	}
	if err == nil {
		err = k.connect()
	}
	if err != nil {
		_ = k.Stop()
		return nil, fmt.Errorf("%w\nlast lines of %s:\n%s\nlast lines of %s:\n%s", err,
			apiLog.Name(), tail(apiLog.Name(), tailLines), etcdLog.Name(), tail(etcdLog.Name(), tailLines))
	}
	return k, nil
}

// crdsWithout copies the CRD files of dir but those named to into, and returns into.
func crdsWithout(dir, into string, without []string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(into, 0o755); err != nil {
		return "", err
	}
	left := map[string]bool{}
	for _, w := range without {
		left[w] = true
	}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".yaml")
		if left[name] {
			delete(left, name)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(into, e.Name()), b, 0o644); err != nil {
			return "", err
		}
	}
	if len(left) > 0 {
		return "", fmt.Errorf("no CRD file for %v in %s", slices.Sorted(maps.Keys(left)), dir)
	}
	return into, nil
}

// CRDFile returns the path of the CRD file of a resource ("<group>_<plural>") of
// $FLUX_WEBHOOK_CRDS, to install one StartKube left out.
func CRDFile(resource string) (string, error) {
	dir, err := Paths().RequireCRDs()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, resource+".yaml")
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// connect writes the kubeconfig and builds the client.
func (k *Kube) connect() error {
	k.Config = k.Env.Config
	user, err := k.Env.AddUser(envtest.User{Name: "testenv-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(k.Kubeconfig, kc, 0o600); err != nil {
		return err
	}
	k.Client, err = client.New(k.Config, client.Options{Scheme: Scheme()})
	return err
}

func (k *Kube) openLog(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(k.Dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	k.logs = append(k.logs, f)
	return f, nil
}

func (k *Kube) closeLogs() {
	for _, f := range k.logs {
		_ = f.Close()
	}
}

// APIAddr returns the API server's host:port, e.g. for a Proxy.
func (k *Kube) APIAddr() string {
	u, err := url.Parse(k.Config.Host)
	if err != nil {
		return k.Config.Host
	}
	return u.Host
}

// NewKube starts a control plane for the test (see StartKube) and stops it in t.Cleanup.
// An empty opts.Dir means t.TempDir().
func NewKube(t testing.TB, opts KubeOptions) *Kube {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	k, err := StartKube(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, k.Dir, "kube-apiserver.log", "etcd.log")
		}
		if err := k.Stop(); err != nil {
			t.Errorf("stop kube: %v", err)
		}
	})
	return k
}

// Stop stops kube-apiserver and etcd (etcd's data is discarded) and closes the logs. It is
// safe to call more than once.
func (k *Kube) Stop() error {
	k.stopOnce.Do(func() {
		if err := k.Env.Stop(); err != nil {
			k.stopErr = fmt.Errorf("stop kube: %w", err)
		}
		k.closeLogs()
	})
	return k.stopErr
}

// SetLogger gives controller-runtime a logger, so it does not print a stack trace after
// 30 s: a development zap logger to stderr at info level under `go test -v`, otherwise
// one that discards. Only the first logger set in a process counts: a TestMain that wants
// its own should call logf.SetLogger before starting anything here.
func SetLogger() {
	if testing.Testing() && flag.Parsed() && testing.Verbose() {
		logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapcore.InfoLevel)))
		return
	}
	logf.SetLogger(logr.Discard())
}

// logTails logs the last lines of the named logs in dir, for a failed test.
func logTails(t testing.TB, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(dir, n)
		t.Logf("last lines of %s:\n%s", p, tail(p, tailLines))
	}
}
