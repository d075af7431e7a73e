package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// Proxy forwards TCP connections from a loopback port to a target address. Cut drops every
// connection and refuses new ones, as a network partition or a stopped server would; Restore
// serves again on the same port. TLS passes through untouched.
type Proxy struct {
	Addr   string // 127.0.0.1:PORT
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartProxy starts forwarding to target.
func StartProxy(target string) (*Proxy, error) {
	p := &Proxy{target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start proxy: %w", err)
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
	return p, nil
}

// NewProxy is StartProxy for a test, closed when it ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Cut)
	return p
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *Proxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// track registers a forwarded pair, or closes it when the proxy was cut meanwhile.
func (p *Proxy) track(c, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		c.Close()
		up.Close()
		return false
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	return true
}

// Cut closes the listener and every open connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Restore listens on the same port again.
func (p *Proxy) Restore() error {
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		return fmt.Errorf("restore proxy on %s: %w", p.Addr, err)
	}
	p.serve(ln)
	return nil
}

// KubeconfigVia writes a copy of kubeconfig whose clusters point at the proxy instead, to
// dir/name, and returns its path. The API server's certificate names 127.0.0.1, so TLS
// verifies through the proxy.
func (p *Proxy) KubeconfigVia(ctx context.Context, kubeconfig, dir, name string) (string, error) {
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return "", fmt.Errorf("load kubeconfig: %w", err)
	}
	for _, c := range cfg.Clusters {
		i := strings.LastIndex(c.Server, "//")
		if i < 0 {
			return "", errors.New("kubeconfig server without scheme")
		}
		c.Server = c.Server[:i+2] + p.Addr
	}
	out := filepath.Join(dir, name)
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		return "", fmt.Errorf("write kubeconfig: %w", err)
	}
	_ = os.Chmod(out, 0o600)
	return out, nil
}
