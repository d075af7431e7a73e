package benchmarks

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// apiProxy stands between the service and an API server and counts the requests that pass,
// by verb and resource, and the watches open: client-side request counting of what the
// service asks, whatever client of it asks. With a namespace it shows the Flux kinds of that
// namespace as the whole cluster, as a tenant's vcluster shows its own: many registered
// clusters then share one API server without seeing each other's objects.
type apiProxy struct {
	srv       *httptest.Server
	namespace string

	mu      sync.Mutex
	counts  map[string]int // "verb resource"
	watches atomic.Int64
}

// fluxGroups are the API groups whose cluster-wide reads a namespaced proxy narrows.
var fluxGroups = map[string]bool{"source.toolkit.fluxcd.io": true, "kustomize.toolkit.fluxcd.io": true, "helm.toolkit.fluxcd.io": true}

// newAPIProxy starts a proxy to k's API server, with k's admin credentials; over TLS with
// the certificate of ca when ca is not nil, plain HTTP on loopback otherwise.
func newAPIProxy(b *testing.B, k *testenv.Kube, namespace string, ca *benchCA) *apiProxy {
	b.Helper()
	upstream, err := url.Parse(k.Config.Host)
	if err != nil {
		b.Fatal(err)
	}
	rt, err := rest.TransportFor(k.Config)
	if err != nil {
		b.Fatal(err)
	}
	p := &apiProxy{namespace: namespace, counts: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Transport:     rt,
		FlushInterval: -1, // watches stream
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			r.Out.Header.Del("Authorization") // the admin's credentials instead of the service's
			if p.namespace != "" {
				r.Out.URL.Path = p.narrow(r.Out.URL.Path)
			}
		},
		ErrorLog: nil,
	}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := classify(r)
		p.mu.Lock()
		p.counts[key]++
		p.mu.Unlock()
		if strings.HasPrefix(key, "watch ") {
			p.watches.Add(1)
			defer p.watches.Add(-1)
		}
		rp.ServeHTTP(w, r)
	}))
	if ca != nil {
		p.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf}}
		// HTTP/2, as a kube-apiserver (a vcluster's too) serves it: the service's watches
		// and requests share one connection per cluster, not one each as over HTTP/1.1.
		p.srv.EnableHTTP2 = true
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	b.Cleanup(p.srv.Close)
	return p
}

// narrow turns a cluster-wide read of a Flux kind into the same read of the proxy's
// namespace.
func (p *apiProxy) narrow(path string) string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if len(segs) == 4 && segs[0] == "apis" && fluxGroups[segs[1]] {
		return "/" + strings.Join([]string{"apis", segs[1], segs[2], "namespaces", p.namespace, segs[3]}, "/")
	}
	return path
}

// classify names a request "verb resource": verb as Kubernetes' audit log names it (get,
// list, watch, create, update, patch, delete), resource as group/plural (core: plural); a
// request for no resource (discovery, /readyz) is its method and path.
func classify(r *http.Request) string {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var group string
	var rest []string
	switch {
	case len(segs) >= 3 && segs[0] == "api":
		rest = segs[2:]
	case len(segs) >= 4 && segs[0] == "apis":
		group, rest = segs[1], segs[3:]
	default:
		return r.Method + " " + r.URL.Path
	}
	if len(rest) > 2 && rest[0] == "namespaces" {
		rest = rest[2:]
	}
	resource := rest[0]
	if group != "" {
		resource = group + "/" + resource
	}
	if len(rest) > 2 {
		resource += "/" + rest[2] // a subresource
	}
	named := len(rest) > 1
	verb := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}[r.Method]
	if r.Method == http.MethodGet {
		switch w := r.URL.Query().Get("watch"); {
		case w == "true" || w == "1":
			verb = "watch"
		case named:
			verb = "get"
		default:
			verb = "list"
		}
	}
	return verb + " " + resource
}

// take returns the counts since the last take, and starts again from zero.
func (p *apiProxy) take() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.counts
	p.counts = map[string]int{}
	return out
}

// kubeconfig returns a kubeconfig of the proxy as a registration Secret holds it: https,
// the proxy's CA, a bearer token (the proxy puts the admin's credentials in its place).
func (p *apiProxy) kubeconfig(b *testing.B, ca *benchCA) []byte {
	b.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: p.srv.URL, CertificateAuthorityData: ca.pem}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "registered-cluster-token"}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// plainKubeconfig returns a kubeconfig of a plain-HTTP proxy (the service's own cluster's:
// --kubeconfig is not a registration, and the proxy adds the credentials).
func (p *apiProxy) plainKubeconfig(b *testing.B, path string) string {
	b.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: p.srv.URL}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	cfg.CurrentContext = "c"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		b.Fatal(err)
	}
	return path
}

// addCounts adds counts into into.
func addCounts(into map[string]int, counts map[string]int) {
	for k, v := range counts {
		into[k] += v
	}
}

// formatCounts prints counts in key order, each divided by per.
func formatCounts(counts map[string]int, per float64) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		out = append(out, fmt.Sprintf("%s: %.2f", k, float64(counts[k])/per))
	}
	return strings.Join(out, ", ")
}

// benchCA is a certificate authority of the benchmarks, and a serving certificate of it for
// 127.0.0.1: registered clusters' kubeconfigs verify TLS, as the service demands.
type benchCA struct {
	pem  []byte
	leaf tls.Certificate
}

func newBenchCA(b *testing.B) *benchCA {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flux-webhook benchmarks"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return &benchCA{
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		leaf: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey},
	}
}
