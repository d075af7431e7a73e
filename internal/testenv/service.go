package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BuildFlux builds the flux-webhook binary into dir with the flags of the Makefile's build
// target (static, trimmed, its build tags, version stamped) and returns its path. A warm
// build cache makes it a matter of seconds.
func BuildFlux(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "flux-webhook")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "grpcnotrace",
		"-ldflags", "-s -w -X github.com/openova-io/flux-webhook/internal/version.Version=test",
		"-o", bin, "./cmd/flux-webhook")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build flux-webhook: %w\n%s", err, out)
	}
	return bin, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the flux-webhook module")
	}
	return filepath.Dir(mod), nil
}

// Service is a running flux-webhook process.
type Service struct {
	Log  string // its log file
	proc *proc
}

// StartService runs bin with args (logging to dir/<name>.log) and waits until readyURL
// answers 200, as a kubelet's readiness probe would.
func StartService(ctx context.Context, name, dir, bin, readyURL string, args ...string) (*Service, error) {
	p, err := startProc(name, filepath.Join(dir, name+".log"), dir, nil, bin, args...)
	if err != nil {
		return nil, err
	}
	if err := p.waitFor(ctx, name+" ready", func(ctx context.Context) error { return getOK(ctx, readyURL) }); err != nil {
		p.kill()
		return nil, err
	}
	return &Service{Log: p.log, proc: p}, nil
}

// NewService is StartService for a test: the process is stopped when the test ends, and its
// last log lines are shown if the test failed.
func NewService(t testing.TB, name, bin, readyURL string, args ...string) *Service {
	t.Helper()
	dir := t.TempDir()
	s, err := StartService(t.Context(), name, dir, bin, readyURL, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", s.Log, tail(s.Log, 40))
		}
	})
	return s
}

// Restart starts the process again with the same arguments and waits for readyURL.
func (s *Service) Restart(ctx context.Context, readyURL string) error {
	p, err := startProc(s.proc.name, s.proc.log, s.proc.cmd.Dir, nil, s.proc.cmd.Path, s.proc.cmd.Args[1:]...)
	if err != nil {
		return err
	}
	if err := p.waitFor(ctx, s.proc.name+" ready", func(ctx context.Context) error { return getOK(ctx, readyURL) }); err != nil {
		p.kill()
		return err
	}
	s.proc = p
	return nil
}

// Pid returns the process id, e.g. to read its memory from /proc.
func (s *Service) Pid() int { return s.proc.cmd.Process.Pid }

// Stop sends SIGTERM, then SIGKILL after a grace period.
func (s *Service) Stop() { s.proc.stop() }

// Kill sends SIGKILL at once (kill -9).
func (s *Service) Kill() { s.proc.kill() }

// Exited reports whether the process has ended, and how.
func (s *Service) Exited() (bool, error) {
	if !s.proc.exited() {
		return false, nil
	}
	return true, s.proc.err
}
