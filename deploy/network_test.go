package deploy_test

import (
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// policyOf converts a rendered NetworkPolicy.
func policyOf(t *testing.T, o *unstructured.Unstructured) networkingv1.NetworkPolicy {
	t.Helper()
	var np networkingv1.NetworkPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &np); err != nil {
		t.Fatal(err)
	}
	return np
}

// peerNamespaces returns the namespaces a peer admits by kubernetes.io/metadata.name ("*" when
// it is not a namespace selector of that kind).
func peerNamespaces(p networkingv1.NetworkPolicyPeer) []string {
	if p.NamespaceSelector == nil || p.PodSelector != nil || p.IPBlock != nil {
		return []string{"*"}
	}
	s := p.NamespaceSelector
	if name := s.MatchLabels["kubernetes.io/metadata.name"]; name != "" && len(s.MatchLabels) == 1 && len(s.MatchExpressions) == 0 {
		return []string{name}
	}
	if len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 1 && s.MatchExpressions[0].Key == "kubernetes.io/metadata.name" && s.MatchExpressions[0].Operator == "In" {
		return s.MatchExpressions[0].Values
	}
	return []string{"*"}
}

// The NetworkPolicies admit each port from its own callers only and let flux-webhook out only
// to DNS, the API server, Gitea and the registered clusters, as configured: for the
// overlay's values.env, in the overlay and in the chart, and with the options (a
// registered cluster's API server, no platform API); the base's placeholders match nothing.
// No rule admits or reaches everything (a rule without peers would).
func TestNetworkPolicy(t *testing.T) {
	integration(t)
	cfg := configValues(t, catalystConfig(t))
	list := func(p string) []string {
		var out []string
		for _, v := range at(cfg, p).([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	type want struct {
		hook, metrics, platform []string // namespaces; platform nil: no platform policy
		apiServer, gitea        []string // CIDRs
		giteaNamespaces         []string
		remote                  []string // CIDRs of registered clusters
	}
	catalyst := want{
		hook: list("networkPolicy.hookFromNamespaces"), metrics: list("networkPolicy.metricsFromNamespaces"),
		platform: list("networkPolicy.platformApiFromNamespaces"), apiServer: list("networkPolicy.apiServer.cidrs"),
		gitea: list("networkPolicy.gitea.cidrs"), giteaNamespaces: list("networkPolicy.gitea.namespaces"),
	}
	options := catalyst
	options.platform, options.remote = nil, []string{"10.42.0.0/16"}
	placeholders := want{hook: []string{"ingress-namespace", "gitea-namespace"}, metrics: []string{"monitoring-namespace"},
		platform: []string{"platform-namespace"}, apiServer: []string{"192.0.2.1/32"}, gitea: []string{"192.0.2.2/32"}, giteaNamespaces: []string{"gitea-namespace"}}
	defaults := want{hook: []string{"kube-system", "gitea"}, metrics: []string{"monitoring"}, platform: []string{"catalyst-system"},
		apiServer: []string{"0.0.0.0/0", "::/0"}, giteaNamespaces: []string{"gitea"}}
	wants := map[string]want{"base": placeholders, "catalyst": catalyst, "chart-catalyst": catalyst,
		"catalyst-options": options, "chart-options": options, "chart-defaults": defaults}

	for _, r := range render(t) {
		w := wants[r.name]
		t.Run(r.name, func(t *testing.T) {
			objs := decode(t, r.out)
			main := policyOf(t, find(t, objs, "NetworkPolicy", "flux-webhook"))
			if !slices.Equal(main.Spec.PolicyTypes, []networkingv1.PolicyType{"Ingress", "Egress"}) {
				t.Errorf("policyTypes %v", main.Spec.PolicyTypes)
			}
			// In: port by port.
			from := map[string][]string{}
			for _, rule := range main.Spec.Ingress {
				if len(rule.From) == 0 || len(rule.Ports) != 1 {
					t.Fatalf("ingress rule %+v: want peers and one port", rule)
				}
				for _, p := range rule.From {
					from[rule.Ports[0].Port.String()] = append(from[rule.Ports[0].Port.String()], peerNamespaces(p)...)
				}
			}
			if !slices.Equal(from["http"], w.hook) || !slices.Equal(from["metrics"], w.metrics) || len(from) != 2 {
				t.Errorf("ingress %v, want http from %v, metrics from %v", from, w.hook, w.metrics)
			}
			var platform *networkingv1.NetworkPolicy
			for _, o := range objs {
				if o.GetKind() == "NetworkPolicy" && o.GetName() == "flux-webhook-platform-api" {
					np := policyOf(t, o)
					platform = &np
				}
			}
			switch {
			case w.platform == nil && platform != nil:
				t.Errorf("a platform API policy without the platform API")
			case w.platform != nil && platform == nil:
				t.Errorf("no policy admits the platform API")
			case platform != nil:
				rule := platform.Spec.Ingress
				if len(rule) != 1 || len(rule[0].From) != 1 || len(rule[0].Ports) != 1 || rule[0].Ports[0].Port.String() != "platform" ||
					!slices.Equal(peerNamespaces(rule[0].From[0]), w.platform) || !slices.Equal(platform.Spec.PolicyTypes, []networkingv1.PolicyType{"Ingress"}) {
					t.Errorf("platform API policy %+v, want port platform from %v", platform.Spec, w.platform)
				}
			}

			// Out: DNS, then the API server, Gitea and each registered cluster, nothing else.
			eg := main.Spec.Egress
			for i, rule := range eg {
				if len(rule.To) == 0 || len(rule.Ports) == 0 {
					t.Fatalf("egress rule %d %+v: want peers and ports", i, rule)
				}
			}
			if len(eg) < 3 || peerNamespaces(eg[0].To[0])[0] != "*" || eg[0].To[0].PodSelector.MatchLabels["k8s-app"] != "kube-dns" {
				t.Fatalf("egress %+v: want DNS first", eg)
			}
			cidrs := func(rule networkingv1.NetworkPolicyEgressRule) (c, ns []string) {
				for _, p := range rule.To {
					if p.IPBlock != nil {
						if len(p.IPBlock.Except) > 0 {
							t.Errorf("an ipBlock with exceptions: %+v", p.IPBlock)
						}
						c = append(c, p.IPBlock.CIDR)
					} else {
						ns = append(ns, peerNamespaces(p)...)
					}
				}
				return c, ns
			}
			ports := func(rule networkingv1.NetworkPolicyEgressRule) (out []string) {
				for _, p := range rule.Ports {
					out = append(out, string(*p.Protocol)+"/"+p.Port.String())
				}
				return out
			}
			if c, ns := cidrs(eg[1]); !slices.Equal(c, w.apiServer) || ns != nil || !slices.Equal(ports(eg[1]), []string{"TCP/443", "TCP/6443"}) {
				t.Errorf("API server egress %v %v %v, want %v on 443 and 6443", c, ns, ports(eg[1]), w.apiServer)
			}
			if c, ns := cidrs(eg[2]); !slices.Equal(c, w.gitea) || !slices.Equal(ns, w.giteaNamespaces) || !slices.Equal(ports(eg[2]), []string{"TCP/443", "TCP/3000"}) {
				t.Errorf("Gitea egress %v %v %v, want %v and namespaces %v", c, ns, ports(eg[2]), w.gitea, w.giteaNamespaces)
			}
			var remote []string
			for _, rule := range eg[3:] {
				c, ns := cidrs(rule)
				if ns != nil {
					t.Errorf("egress to namespaces %v beyond Gitea's", ns)
				}
				remote = append(remote, c...)
			}
			if !slices.Equal(remote, w.remote) {
				t.Errorf("egress to %v beyond DNS, the API server and Gitea, want the registered clusters %v", remote, w.remote)
			}
			for _, p := range slices.Concat(from["http"], from["metrics"]) {
				if p == "*" || strings.Contains(p, "*") {
					t.Errorf("an ingress peer that is no namespace list")
				}
			}
		})
	}
}
