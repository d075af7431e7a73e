package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"code.gitea.io/sdk/gitea"
)

// Runner is a Gitea Actions runner in host mode (no Docker) with the single label "linux":
// workflows use `runs-on: linux` and `run:` steps only (`uses:` would need the internet).
// Steps run as this process's user with its environment, in a work directory under Dir.
type Runner struct {
	Name string
	Dir  string

	proc *proc
}

// StartRunner registers a runner with g (admin registration token) and starts its daemon,
// polling for jobs every second; it waits until Gitea sees the runner online. Costs ~0.2 s
// and ~30 MiB; a workflow's first step runs ~1 s after the push. Log: dir/runner.log.
func StartRunner(ctx context.Context, g *Gitea, dir string) (*Runner, error) {
	r, err := startRunner(ctx, g, dir)
	if err != nil {
		return nil, fmt.Errorf("start runner: %w", err)
	}
	return r, nil
}

func startRunner(ctx context.Context, g *Gitea, dir string) (*Runner, error) {
	bin, err := Paths().RequireGiteaRunner()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("dir is empty")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "work"), 0o755); err != nil {
		return nil, err
	}
	r := &Runner{Name: "testenv-" + randomHex(4), Dir: dir}
	config := filepath.Join(dir, "config.yaml")
	err = os.WriteFile(config, fmt.Appendf(nil, `log:
  level: info
runner:
  file: %[1]s/.runner
  capacity: 1
  fetch_interval: 1s
  fetch_interval_max: 2s
  labels: ["ubuntu-latest:host", "linux:host"]
cache:
  enabled: false
host:
  workdir_parent: %[1]s/work
`, dir), 0o644)
	if err != nil {
		return nil, err
	}

	c, err := g.Client(ctx)
	if err != nil {
		return nil, err
	}
	tok, _, err := c.CreateAdminActionRunnerRegistrationToken()
	if err != nil {
		return nil, fmt.Errorf("registration token: %w", err)
	}
	logPath := filepath.Join(dir, "runner.log")
	if _, err := runLogged(ctx, "gitea-runner register", logPath, dir, nil, bin, "-c", config,
		"register", "--no-interactive", "--instance", g.URL, "--token", tok.Token, "--name", r.Name); err != nil {
		return nil, err
	}
	if r.proc, err = startProc("gitea-runner", logPath, dir, nil, bin, "-c", config, "daemon"); err != nil {
		return nil, err
	}
	err = r.proc.waitFor(ctx, "runner "+r.Name+" online", func(ctx context.Context) error {
		c.SetContext(ctx)
		list, _, err := c.ListAdminActionRunners(gitea.ListActionRunnersOptions{})
		if err != nil {
			return err
		}
		for _, ar := range list.Runners {
			if ar.Name == r.Name && ar.Status != "" && ar.Status != "offline" {
				return nil
			}
		}
		return fmt.Errorf("runner %s not online yet", r.Name)
	})
	if err != nil {
		r.proc.stop()
		return nil, err
	}
	return r, nil
}

// NewRunner starts a runner for g in t.TempDir() (see StartRunner) and stops it in
// t.Cleanup.
func NewRunner(t testing.TB, g *Gitea) *Runner {
	t.Helper()
	r, err := StartRunner(t.Context(), g, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, r.Dir, "runner.log")
		}
		r.Stop()
	})
	return r
}

// Stop stops the runner daemon and any job it runs.
func (r *Runner) Stop() {
	r.proc.stop()
}
