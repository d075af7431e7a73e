package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The parts of a kubeconfig that would make flux-webhook do more than talk to an API server
// with the credentials in the file, each refused unless the operator allows its category
// (--insecure-kubeconfig; Flux's --insecure-kubeconfig-exec and -tls are the precedent). A
// registered cluster's Secret is written by whoever provisions clusters, and in a platform
// of vclusters that may be close to a tenant: a kubeconfig is input from someone who may be
// an attacker.
const (
	// KubeconfigExec: an exec credential plugin runs a program of the writer's choosing in
	// flux-webhook's pod.
	KubeconfigExec = "exec"
	// KubeconfigAuthProvider: an auth provider plugin (gcp, oidc, azure) refreshes tokens
	// from places the writer names.
	KubeconfigAuthProvider = "auth-provider"
	// KubeconfigFiles: tokenFile, client-certificate, client-key or certificate-authority
	// name files in flux-webhook's pod, such as its own ServiceAccount token, which would then
	// be sent to the writer's server.
	KubeconfigFiles = "files"
	// KubeconfigTLS: insecure-skip-tls-verify lets anyone on the path read the credentials.
	KubeconfigTLS = "tls"
	// KubeconfigHTTP: a server that is not https:// sends the credentials in clear.
	KubeconfigHTTP = "http"
	// KubeconfigProxy: proxy-url sends every request through the writer's proxy.
	KubeconfigProxy = "proxy"
	// KubeconfigImpersonate: act-as* make the credentials act as another identity.
	KubeconfigImpersonate = "impersonate"
	// KubeconfigBasicAuth: a username and password, which API servers no longer accept, in
	// the user or in the server's URL (https://user:password@host).
	KubeconfigBasicAuth = "basic-auth"
	// KubeconfigLocalAddress: a server on a loopback, link-local or unspecified address, or
	// a cloud's instance metadata service (169.254.169.254, fd00:ec2::254,
	// metadata.google.internal, ...): flux-webhook's own pod and node, whose services answer
	// anyone who asks from there. Checked on the address each connection is made to, after
	// name resolution, so a name that resolves there (now, or later: DNS rebinding) is
	// refused too.
	KubeconfigLocalAddress = "local-address"
)

// KubeconfigCategories lists the categories, in the order --help names them.
var KubeconfigCategories = []string{KubeconfigExec, KubeconfigAuthProvider, KubeconfigFiles, KubeconfigTLS,
	KubeconfigHTTP, KubeconfigProxy, KubeconfigImpersonate, KubeconfigBasicAuth, KubeconfigLocalAddress}

// maxKubeconfigBytes bounds a registered cluster's kubeconfig: one context with inline
// certificates takes a few KiB; vcluster's are under 10 KiB.
const maxKubeconfigBytes = 256 << 10

// KubeconfigRefusedError says which part of a kubeconfig was refused, by category.
type KubeconfigRefusedError struct {
	Category string
	Detail   string
}

func (e *KubeconfigRefusedError) Error() string {
	return fmt.Sprintf("kubeconfig refused: %s (category %q, not allowed by --insecure-kubeconfig)", e.Detail, e.Category)
}

// ErrInvalidKubeconfig: not a kubeconfig flux-webhook can use.
var ErrInvalidKubeconfig = errors.New("invalid kubeconfig")

// KubeconfigPolicy says which refused categories an operator allows.
type KubeconfigPolicy struct{ allow map[string]bool }

// ParseKubeconfigPolicy returns the policy allowing the given categories.
func ParseKubeconfigPolicy(allow []string) (KubeconfigPolicy, error) {
	p := KubeconfigPolicy{allow: map[string]bool{}}
	for _, a := range allow {
		if !slices.Contains(KubeconfigCategories, a) {
			return p, fmt.Errorf("unknown kubeconfig category %q: want one of %s", a, strings.Join(KubeconfigCategories, ", "))
		}
		p.allow[a] = true
	}
	return p, nil
}

// RESTConfig checks a kubeconfig, before anything is connected to or read, and returns the
// client configuration of its current context. Every user and cluster of the file is
// checked, used or not. A refusal is a *KubeconfigRefusedError.
func (p KubeconfigPolicy) RESTConfig(kubeconfig []byte) (*rest.Config, error) {
	if len(kubeconfig) > maxKubeconfigBytes {
		return nil, fmt.Errorf("%w: over %d KiB", ErrInvalidKubeconfig, maxKubeconfigBytes>>10)
	}
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("%w: not a kubeconfig", ErrInvalidKubeconfig)
	}
	if err := p.check(cfg); err != nil {
		return nil, err
	}
	ctx, ok := cfg.Contexts[cfg.CurrentContext]
	if cfg.CurrentContext == "" || !ok {
		return nil, fmt.Errorf("%w: no current context", ErrInvalidKubeconfig)
	}
	if _, ok := cfg.Clusters[ctx.Cluster]; !ok {
		return nil, fmt.Errorf("%w: the current context names no cluster of the file", ErrInvalidKubeconfig)
	}
	// Only the file itself: no overrides, no environment, no in-cluster fallback.
	rc, err := clientcmd.NewNonInteractiveClientConfig(*cfg, cfg.CurrentContext, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidKubeconfig, printableName(err.Error()))
	}
	if !p.allow[KubeconfigLocalAddress] {
		// Every connection checks the address it is made to: the name checked above may
		// resolve anywhere, now or later.
		d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: refuseLocal}
		rc.Dial = d.DialContext
	}
	return rc, nil
}

// dialTimeout bounds a connection to a registered cluster's API server, as client-go's own
// dialer does.
const dialTimeout = 30 * time.Second

// refuseLocal is the dialer's check of the address a connection is about to be made to.
func refuseLocal(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return &KubeconfigRefusedError{Category: KubeconfigLocalAddress, Detail: "the server is not at an IP address"}
	}
	if what := localAddress(a); what != "" {
		return &KubeconfigRefusedError{Category: KubeconfigLocalAddress, Detail: "the server resolves to " + what + " " + a.String()}
	}
	return nil
}

// metadataAddresses are the instance metadata services of the clouds that are not at a
// link-local address: AWS's over IPv6 (a unique local address), Alibaba Cloud's, and Azure's
// WireServer. Link-local ones (169.254.169.254 everywhere else, 169.254.170.2 of ECS) are
// refused as link-local.
var metadataAddresses = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("100.100.100.200"),
	netip.MustParseAddr("168.63.129.16"),
}

// metadataNames are the names clouds give their metadata service.
var metadataNames = []string{"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}

// localAddress says what a refused server address is ("" when it may be connected to):
// loopback, link-local (unicast or multicast), unspecified (which connects to the host
// itself), or a cloud metadata address, IPv4-mapped ones alike.
func localAddress(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	switch {
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "a link-local address"
	case a.IsUnspecified(), a.Is4() && a.As4()[0] == 0:
		return "an unspecified address"
	case slices.Contains(metadataAddresses, a):
		return "a cloud metadata address"
	}
	return ""
}

// localName says what a refused server host name is ("" when it is not one): localhost and
// its subdomains (RFC 6761), and the clouds' metadata names.
func localName(host string) string {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	switch {
	case h == "localhost" || strings.HasSuffix(h, ".localhost"):
		return "localhost"
	case slices.Contains(metadataNames, h):
		return "a cloud metadata name"
	}
	return ""
}

// check returns the first part of cfg the policy refuses, in a stable order.
func (p KubeconfigPolicy) check(cfg *clientcmdapi.Config) error {
	refuse := func(category, format string, args ...any) error {
		if p.allow[category] {
			return nil
		}
		return &KubeconfigRefusedError{Category: category, Detail: fmt.Sprintf(format, args...)}
	}
	for _, name := range sortedKeys(cfg.AuthInfos) {
		u, n := cfg.AuthInfos[name], printableName(name)
		for _, err := range []error{
			when(u.Exec != nil, func() error { return refuse(KubeconfigExec, "user %q runs an exec credential plugin", n) }),
			when(u.AuthProvider != nil, func() error { return refuse(KubeconfigAuthProvider, "user %q uses an auth provider plugin", n) }),
			when(u.TokenFile != "", func() error { return refuse(KubeconfigFiles, "user %q reads its token from a file", n) }),
			when(u.ClientCertificate != "" || u.ClientKey != "", func() error {
				return refuse(KubeconfigFiles, "user %q reads its client certificate or key from a file", n)
			}),
			when(u.Impersonate != "" || u.ImpersonateUID != "" || len(u.ImpersonateGroups) > 0 || len(u.ImpersonateUserExtra) > 0,
				func() error { return refuse(KubeconfigImpersonate, "user %q impersonates another identity", n) }),
			when(u.Username != "" || u.Password != "", func() error { return refuse(KubeconfigBasicAuth, "user %q uses basic auth", n) }),
		} {
			if err != nil {
				return err
			}
		}
	}
	for _, name := range sortedKeys(cfg.Clusters) {
		c, n := cfg.Clusters[name], printableName(name)
		u, err := url.Parse(c.Server)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("%w: cluster %q has no https:// server", ErrInvalidKubeconfig, n)
		}
		host := u.Hostname()
		what := localName(host)
		if a, err := netip.ParseAddr(host); err == nil {
			what = localAddress(a)
		}
		for _, err := range []error{
			when(u.Scheme != "https", func() error { return refuse(KubeconfigHTTP, "cluster %q is served over plain http", n) }),
			when(c.InsecureSkipTLSVerify, func() error { return refuse(KubeconfigTLS, "cluster %q skips TLS verification", n) }),
			when(c.CertificateAuthority != "", func() error { return refuse(KubeconfigFiles, "cluster %q reads its CA from a file", n) }),
			when(c.ProxyURL != "", func() error { return refuse(KubeconfigProxy, "cluster %q is reached through a proxy", n) }),
			when(u.User != nil, func() error {
				return refuse(KubeconfigBasicAuth, "cluster %q has a user name or password in its server's URL", n)
			}),
			when(what != "", func() error { return refuse(KubeconfigLocalAddress, "cluster %q is served at %s", n, what) }),
		} {
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// when returns f() when cond holds, nil otherwise.
func when(cond bool, f func() error) error {
	if cond {
		return f()
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// printableName keeps a name from a kubeconfig fit for a log line and an Event: at most 64
// bytes of printable ASCII.
func printableName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, s)
}
