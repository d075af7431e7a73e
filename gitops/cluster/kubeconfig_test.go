package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
)

// trap is where a hostile kubeconfig points: a TCP listener that counts connections, and
// named pipes that tell whether anyone opened them for reading.
type trap struct {
	addr  string
	conns atomic.Int64
	dir   string
}

func newTrap(t *testing.T) *trap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	tr := &trap{addr: ln.Addr().String(), dir: t.TempDir()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.conns.Add(1)
			c.Close()
		}
	}()
	return tr
}

// fifo makes a named pipe and returns its path.
func (tr *trap) fifo(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(tr.dir, name)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// opened reports whether a reader has the pipe open (or is blocked opening it): only then
// does a non-blocking open for writing succeed.
func opened(path string) bool {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false // ENXIO: no reader
	}
	f.Close()
	return true
}

func kubeconfigYAML(server, cluster, user string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: ctx
contexts:
- name: ctx
  context: {cluster: c, user: u}
clusters:
- name: c
  cluster:
    server: %s
%s
users:
- name: u
  user:
%s
`, server, cluster, user)
}

// Every kubeconfig part that would make flux-webhook do more than call an API server with
// the credentials the file holds is refused before any connection is made or any file read:
// the Secret is not registered, the refusal is logged, counted and recorded as an Event on
// the Secret. An operator may allow a category.
func TestHostileKubeconfigs(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	tr := newTrap(t)
	https := "https://" + tr.addr
	_, port, _ := net.SplitHostPort(tr.addr)
	token := "    token: not-a-real-token"
	marker := filepath.Join(tr.dir, "exec-ran")
	tokenFile, certFile, caFile := tr.fifo(t, "token"), tr.fifo(t, "cert"), tr.fifo(t, "ca")
	tests := []struct {
		name, kubeconfig, reason string
	}{
		{"exec plugin", kubeconfigYAML(https, "", "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'touch "+marker+"']\n      interactiveMode: Never"), cluster.KubeconfigExec},
		{"auth provider", kubeconfigYAML(https, "", "    auth-provider:\n      name: oidc\n      config: {idp-issuer-url: 'https://"+tr.addr+"', client-id: x}"), cluster.KubeconfigAuthProvider},
		{"the pod's own token by tokenFile", kubeconfigYAML(https, "", "    tokenFile: "+tokenFile), cluster.KubeconfigFiles},
		{"client certificate from a file", kubeconfigYAML(https, "", "    client-certificate: "+certFile+"\n    client-key: "+certFile), cluster.KubeconfigFiles},
		{"CA from a file", kubeconfigYAML(https, "    certificate-authority: "+caFile, token), cluster.KubeconfigFiles},
		{"proxy", kubeconfigYAML(https, "    proxy-url: http://"+tr.addr, token), cluster.KubeconfigProxy},
		{"impersonation", kubeconfigYAML(https, "", token+"\n    as: system:admin\n    as-groups: [system:masters]"), cluster.KubeconfigImpersonate},
		{"basic auth", kubeconfigYAML(https, "", "    username: admin\n    password: hunter2"), cluster.KubeconfigBasicAuth},
		{"TLS not verified", kubeconfigYAML(https, "    insecure-skip-tls-verify: true", token), cluster.KubeconfigTLS},
		{"plain http", kubeconfigYAML("http://"+tr.addr, "", token), cluster.KubeconfigHTTP},
		{"an unused user with an exec plugin", kubeconfigYAML(https, "", token) + "- name: spare\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true}\n", cluster.KubeconfigExec},
		{"a loopback server", kubeconfigYAML(https, "", token), cluster.KubeconfigLocalAddress},
		{"localhost", kubeconfigYAML("https://localhost:"+port, "", token), cluster.KubeconfigLocalAddress},
		{"a loopback server as an IPv4-mapped address", kubeconfigYAML("https://[::ffff:127.0.0.1]:"+port, "", token), cluster.KubeconfigLocalAddress},
		{"the cloud metadata address", kubeconfigYAML("https://169.254.169.254", "", token), cluster.KubeconfigLocalAddress},
		{"AWS's IPv6 metadata address", kubeconfigYAML("https://[fd00:ec2::254]", "", token), cluster.KubeconfigLocalAddress},
		{"GCP's metadata name", kubeconfigYAML("https://metadata.google.internal", "", token), cluster.KubeconfigLocalAddress},
		{"an unspecified address", kubeconfigYAML("https://0.0.0.0:"+port, "", token), cluster.KubeconfigLocalAddress},
		{"a link-local address", kubeconfigYAML("https://169.254.1.1:"+port, "", token), cluster.KubeconfigLocalAddress},
		{"an IPv6 link-local address", kubeconfigYAML("https://[fe80::1]:"+port, "", token), cluster.KubeconfigLocalAddress},
		{"a password in the server's URL", kubeconfigYAML("https://admin:hunter2@"+tr.addr, "", token), cluster.KubeconfigBasicAuth},
		{"a user name alone in the server's URL", kubeconfigYAML("https://admin@"+tr.addr, "", token), cluster.KubeconfigBasicAuth},
		{"not a kubeconfig", "{{{", "invalid-kubeconfig"},
		{"no current context", strings.Replace(kubeconfigYAML(https, "", token), "current-context: ctx", "current-context: other", 1), "invalid-kubeconfig"},
		{"over 256 KiB", kubeconfigYAML(https, "", token) + "# " + strings.Repeat("x", 256<<10) + "\n", "invalid-kubeconfig"},
	}
	ns := fluxtest.Namespace(t)
	set := cluster.NewSet(fluxtest.Local)
	cs, err := kubernetes.NewForConfig(fluxtest.Kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]float64{}
	for _, tt := range tests {
		before[tt.reason] = fluxtest.Counter(t, "flux_webhook_clusters_refused_total", "reason", tt.reason)
	}
	for i, tt := range tests {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("hostile-%d", i),
			Labels: map[string]string{cluster.ClusterLabel: fmt.Sprintf("hostile-%d", i)}}, Data: map[string][]byte{"kubeconfig": []byte(tt.kubeconfig)}}
		if err := fluxtest.Kube.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	run := func(policy cluster.KubeconfigPolicy) (stop func()) {
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = (&cluster.Secrets{Client: cs, Namespace: ns, Clusters: set, QPS: 50, Burst: 100, Policy: policy, Keys: fluxtest.RecordKeys,
				Events: fluxtest.Local.GetEventRecorder(cluster.EventSource), Log: logr.Discard()}).Start(runCtx)
		}()
		return func() { cancel(); <-done }
	}
	stop := run(cluster.KubeconfigPolicy{})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("hostile-%d", i)
			var note string
			fluxtest.WaitFor(t, "an Event on the refused Secret", func() bool {
				var evs eventsv1.EventList
				if err := fluxtest.Kube.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
					return false
				}
				for _, e := range evs.Items {
					if e.Regarding.Name == name && e.Reason == "ClusterRefused" {
						note = e.Note
						return true
					}
				}
				return false
			})
			if !strings.Contains(note, "not registered") {
				t.Fatalf("event note %q", note)
			}
			if set.Get(name) != nil {
				t.Fatal("registered")
			}
		})
	}
	time.Sleep(2 * time.Second) // anything that was started would have connected by now
	stop()
	for _, tt := range tests {
		if got := fluxtest.Counter(t, "flux_webhook_clusters_refused_total", "reason", tt.reason); got <= before[tt.reason] {
			t.Errorf("%s: refusals of %q not counted", tt.name, tt.reason)
		}
	}
	if n := tr.conns.Load(); n != 0 {
		t.Fatalf("%d connections to the server the hostile kubeconfigs named", n)
	}
	for _, f := range []string{tokenFile, certFile, caFile} {
		if opened(f) {
			t.Fatalf("%s was opened", f)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the exec plugin ran: %v", err)
	}
	if got := fluxtest.Series(t, "flux_webhook_cluster_up"); strings.Contains(got, "hostile-") {
		t.Fatalf("cluster_up pretends a refused cluster exists: %s", got)
	}

	// Allowed by the operator, a category no longer refuses: flux-webhook then connects to
	// the server the kubeconfig names (the trap, which answers nothing; on loopback, so
	// local-address is allowed too).
	allowed, err := cluster.ParseKubeconfigPolicy([]string{cluster.KubeconfigTLS, cluster.KubeconfigLocalAddress})
	if err != nil {
		t.Fatal(err)
	}
	tlsBefore := fluxtest.Counter(t, "flux_webhook_clusters_refused_total", "reason", cluster.KubeconfigTLS)
	stop = run(allowed)
	defer stop()
	fluxtest.WaitFor(t, "the kubeconfig of the allowed category used", func() bool { return tr.conns.Load() > 0 })
	if got := fluxtest.Counter(t, "flux_webhook_clusters_refused_total", "reason", cluster.KubeconfigTLS); got != tlsBefore {
		t.Fatal("the allowed category still refused")
	}
	for _, f := range []string{tokenFile, certFile, caFile} {
		if opened(f) {
			t.Fatalf("%s was opened with only tls allowed", f)
		}
	}
	if _, err := cluster.ParseKubeconfigPolicy([]string{"everything"}); err == nil {
		t.Fatal("unknown category accepted")
	}
}

// A kubeconfig's server name is checked again on every connection, on the address it
// resolved to: a name that passes the file's check (or that a DNS answer later points at
// flux-webhook's own pod or node) still makes no connection there.
func TestKubeconfigDialRefusesLocalAddresses(t *testing.T) {
	tr := newTrap(t)
	_, port, _ := net.SplitHostPort(tr.addr)
	// A public name in the file (never resolved here): the check of each connection is
	// what refuses the local address it is made to.
	kc := kubeconfigYAML("https://api.example.com:"+port, "", "    token: not-a-real-token")
	rc, err := cluster.KubeconfigPolicy{}.RESTConfig([]byte(kc))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Dial == nil {
		t.Fatal("no checking dialer")
	}
	for _, addr := range []string{tr.addr, "[::1]:" + port, "169.254.169.254:443", "[fd00:ec2::254]:443", "[::ffff:127.0.0.1]:" + port, "0.0.0.0:" + port} {
		c, err := rc.Dial(t.Context(), "tcp", addr)
		var refused *cluster.KubeconfigRefusedError
		if !errors.As(err, &refused) || refused.Category != cluster.KubeconfigLocalAddress {
			if c != nil {
				c.Close()
			}
			t.Fatalf("dial %s: %v, want a refusal of category local-address", addr, err)
		}
	}
	if n := tr.conns.Load(); n != 0 {
		t.Fatalf("%d connections to the loopback trap", n)
	}
	// Allowed, the same configuration connects.
	local, _ := cluster.ParseKubeconfigPolicy([]string{cluster.KubeconfigLocalAddress})
	rc, err = local.RESTConfig([]byte(kubeconfigYAML("https://"+tr.addr, "", "    token: not-a-real-token")))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Dial != nil {
		t.Fatal("a checking dialer although local-address is allowed")
	}
}
