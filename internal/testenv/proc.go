package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

const (
	// stopGrace is how long a process gets between SIGTERM and SIGKILL.
	stopGrace = 5 * time.Second
	// startTimeout bounds every wait for a part to come up when ctx has no earlier deadline.
	startTimeout = 2 * time.Minute
	// tailLines is how many lines of a log an error carries.
	tailLines = 20
)

// proc is a long-running child process in its own process group, its output in a log file.
type proc struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// startProc starts bin in dir with env added to ours, stdout and stderr appended to logPath.
// The process outlives ctx-bound waits; only stop and kill end it.
func startProc(name, logPath, dir string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close() // the child holds its own copy
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after stopGrace, and waits for the
// process to end. It is safe to call more than once.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		p.kill()
	}
}

// kill sends SIGKILL to the process group and waits for the process to end.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// failed wraps err with the state of the process and the tail of its log.
func (p *proc) failed(err error) error {
	state := "running"
	if p.exited() {
		state = fmt.Sprintf("exited: %v", p.err)
	}
	return fmt.Errorf("%w (%s %s; last lines of %s:)\n%s", err, p.name, state, p.log, tail(p.log, tailLines))
}

// waitFor polls ready every 100 ms until it returns nil, p exits or ctx (at most
// startTimeout) ends. Errors carry the tail of p's log.
func (p *proc) waitFor(ctx context.Context, what string, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return p.failed(fmt.Errorf("wait for %s: process exited", what))
		case <-ctx.Done():
			return p.failed(fmt.Errorf("wait for %s: %w (last error: %v)", what, ctx.Err(), err))
		case <-tick.C:
		}
	}
}

// tail returns the last n lines of the file at path, or a note why it cannot.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// FreePorts returns n distinct free loopback ports, holding each until all are found.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// WaitHTTP polls url with GET every 100 ms until it answers 2xx or ctx ends.
func WaitHTTP(ctx context.Context, url string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := getOK(ctx, url)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last error: %v)", url, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// getOK is one GET of url that succeeds on a 2xx answer.
func getOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// dialOK succeeds when something listens on the TCP address addr.
func dialOK(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// runLogged runs a short command to completion with its stderr and stdout appended to
// logPath under the heading what, and returns its stdout; a failure carries the log's tail.
func runLogged(ctx context.Context, what, logPath, dir string, env []string, bin string, args ...string) ([]byte, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fmt.Fprintf(f, "### %s\n", what)
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, f
	cmd.WaitDelay = stopGrace
	err = cmd.Run()
	_, _ = f.Write(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s: %w; last lines of %s:\n%s", what, err, logPath, tail(logPath, tailLines))
	}
	return stdout.Bytes(), nil
}

// WaitFor polls cond every 50 ms until it holds, and fails the test when within passes.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
