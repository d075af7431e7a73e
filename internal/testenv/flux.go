package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// Flux is Flux's source-controller and kustomize-controller running as local processes
// against a Kubernetes API server. There is no helm-controller (its module is not served).
type Flux struct {
	StorageAddr string // 127.0.0.1:PORT of source-controller's artifact server
	StoragePath string // where source-controller keeps artifacts
	Dir         string

	source, kustomize *proc
}

// StartFlux starts source-controller and kustomize-controller from $FLUX_WEBHOOK_FLUX_BIN
// against the cluster of kubeconfig (which needs the Flux CRDs: KubeOptions.CRDs), without
// leader election, all ports on loopback, and waits for both /readyz and the artifact
// server. It costs 0.3-1.2 s and ~220 MiB; a GitRepository+Kustomization on a Gitea repo
// is applied ~1 s after creation, a new commit ~0.2 s after a requestedAt bump. Logs:
// dir/source-controller.log, dir/kustomize-controller.log.
func StartFlux(ctx context.Context, kubeconfig, dir string) (*Flux, error) {
	f, err := startFlux(ctx, kubeconfig, dir)
	if err != nil {
		return nil, fmt.Errorf("start flux: %w", err)
	}
	return f, nil
}

func startFlux(ctx context.Context, kubeconfig, dir string) (*Flux, error) {
	bin, err := Paths().RequireFlux()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("dir is empty")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if kubeconfig, err = filepath.Abs(kubeconfig); err != nil {
		return nil, err
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	f := &Flux{Dir: dir, StoragePath: filepath.Join(dir, "storage")}
	if err := os.MkdirAll(f.StoragePath, 0o755); err != nil {
		return nil, err
	}
	ports, err := FreePorts(5)
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	f.StorageAddr = addr(0)
	// Neither controller has a --kubeconfig flag: they read $KUBECONFIG.
	env := []string{"KUBECONFIG=" + kubeconfig}

	f.source, err = startProc("source-controller", filepath.Join(dir, "source-controller.log"), dir, env,
		filepath.Join(bin, "source-controller"),
		"--storage-path="+f.StoragePath, "--storage-addr="+f.StorageAddr, "--storage-adv-addr="+f.StorageAddr,
		"--metrics-addr="+addr(1), "--health-addr="+addr(2),
		"--enable-leader-election=false", "--log-level=debug")
	if err != nil {
		return nil, err
	}
	f.kustomize, err = startProc("kustomize-controller", filepath.Join(dir, "kustomize-controller.log"), dir, env,
		filepath.Join(bin, "kustomize-controller"),
		"--metrics-addr="+addr(3), "--health-addr="+addr(4),
		"--enable-leader-election=false", "--log-level=debug")
	if err != nil {
		f.Stop()
		return nil, err
	}
	waits := []struct {
		p     *proc
		what  string
		ready func(context.Context) error
	}{
		{f.source, "source-controller /readyz", func(ctx context.Context) error { return getOK(ctx, "http://"+addr(2)+"/readyz") }},
		{f.kustomize, "kustomize-controller /readyz", func(ctx context.Context) error { return getOK(ctx, "http://"+addr(4)+"/readyz") }},
		// The artifact server listens about a second after /readyz.
		{f.source, "source-controller artifact server", func(ctx context.Context) error { return dialOK(ctx, f.StorageAddr) }},
	}
	for _, w := range waits {
		if err := w.p.waitFor(ctx, w.what, w.ready); err != nil {
			f.Stop()
			return nil, err
		}
	}
	return f, nil
}

// NewFlux starts the Flux controllers for the test in t.TempDir() (see StartFlux) and stops
// them in t.Cleanup.
func NewFlux(t testing.TB, kubeconfig string) *Flux {
	t.Helper()
	f, err := StartFlux(t.Context(), kubeconfig, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, f.Dir, "source-controller.log", "kustomize-controller.log")
		}
		f.Stop()
	})
	return f
}

// Stop stops both controllers.
func (f *Flux) Stop() {
	for _, p := range []*proc{f.kustomize, f.source} {
		if p != nil {
			p.stop()
		}
	}
}

// Pause freezes both controllers (SIGSTOP): Flux stops answering, as a busy or stuck
// controller would, until Resume.
func (f *Flux) Pause() { f.signal(syscall.SIGSTOP) }

// PauseApply freezes kustomize-controller only: sources are still fetched, nothing is
// applied until Resume.
func (f *Flux) PauseApply() { f.signal(syscall.SIGSTOP, f.kustomize) }

// Resume lets paused controllers go on (SIGCONT).
func (f *Flux) Resume() { f.signal(syscall.SIGCONT) }

func (f *Flux) signal(sig syscall.Signal, only ...*proc) {
	procs := []*proc{f.source, f.kustomize}
	if len(only) > 0 {
		procs = only
	}
	for _, p := range procs {
		if p != nil && !p.exited() {
			_ = syscall.Kill(-p.cmd.Process.Pid, sig)
		}
	}
}
