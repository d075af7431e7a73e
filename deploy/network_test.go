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

// The Kubernetes NetworkPolicies (for CNIs other than Cilium) admit each port from its own
// callers only and let flux-webhook out only to DNS, the API server, Gitea and the registered
// clusters, as configured: the chart's defaults, the chart told so on a Cilium cluster
// (networkPolicy.flavor: kubernetes) with registered clusters by address and by namespace and
// no platform API; the base's placeholders match nothing. No rule admits or reaches
// everything (a rule without peers would). Neither renders a CiliumNetworkPolicy.
func TestNetworkPolicy(t *testing.T) {
	integration(t)
	type want struct {
		hook, metrics, platform []string // namespaces; platform nil: no platform policy
		apiServer, gitea        []string // CIDRs
		giteaNamespaces         []string
		remote                  []string // CIDRs or namespaces of registered clusters
	}
	placeholders := want{hook: []string{"ingress-namespace", "gitea-namespace"}, metrics: []string{"monitoring-namespace"},
		platform: []string{"platform-namespace"}, apiServer: []string{"192.0.2.1/32"}, gitea: []string{"192.0.2.2/32"}, giteaNamespaces: []string{"gitea-namespace"}}
	defaults := want{hook: []string{"kube-system", "gitea"}, metrics: []string{"monitoring"}, platform: []string{"catalyst-system"},
		apiServer: []string{"0.0.0.0/0", "::/0"}, giteaNamespaces: []string{"gitea"}}
	told := defaults
	told.platform, told.remote = nil, []string{"203.0.113.20/32", "ns:rtz"}
	toldValues := valuesFile(t, `{"networkPolicy": {"flavor": "kubernetes", "remoteApiServers": [{"cidr": "203.0.113.20/32", "ports": [6443]}, {"namespace": "rtz", "ports": [8443]}]}, "platformApi": {"enabled": false}}`)
	out, err := helmTemplateAPIs(t, catalystNS, onCilium, toldValues)
	if err != nil {
		t.Fatal(err)
	}
	wants := map[string]want{"base": placeholders, "chart-defaults": defaults, "chart-kubernetes-on-cilium": told}
	renderings := []rendering{{"chart-kubernetes-on-cilium", catalystNS, out}}
	for _, r := range render(t) {
		if _, ok := wants[r.name]; ok {
			renderings = append(renderings, r)
		}
	}
	for _, r := range renderings {
		w := wants[r.name]
		t.Run(r.name, func(t *testing.T) {
			objs := decode(t, r.out)
			for _, o := range objs {
				if o.GetKind() == "CiliumNetworkPolicy" {
					t.Errorf("a CiliumNetworkPolicy %s beside the NetworkPolicies", o.GetName())
				}
			}
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
				remote = append(remote, c...)
				for _, n := range ns {
					remote = append(remote, "ns:"+n)
				}
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

// cnpPeers describes a CiliumNetworkPolicy rule's peers: "entity:<e>", "ns:<namespace>" (an
// endpoint selector by namespace alone), "cidr:<c>", or "*" for anything else (a selector
// that is not a namespace's, a rule without peers).
func cnpPeers(rule map[string]any, dir string) []string {
	var out []string
	for _, e := range asSlice(rule[dir+"Entities"]) {
		out = append(out, "entity:"+e.(string))
	}
	for _, ep := range asSlice(rule[dir+"Endpoints"]) {
		ml := asMap(asMap(ep)["matchLabels"])
		ns, _ := ml["k8s:io.kubernetes.pod.namespace"].(string)
		switch {
		case ns != "" && len(ml) == 1 && asMap(ep)["matchExpressions"] == nil:
			out = append(out, "ns:"+ns)
		case ns != "" && ml["k8s-app"] != nil && len(ml) == 2:
			out = append(out, "dns:"+ns)
		default:
			out = append(out, "*")
		}
	}
	for _, c := range asSlice(rule[dir+"CIDR"]) {
		out = append(out, "cidr:"+c.(string))
	}
	for _, k := range []string{dir + "CIDRSet", dir + "Services", dir + "FQDNs", dir + "Groups", dir + "Nodes", dir + "Requires"} {
		if rule[k] != nil {
			out = append(out, "*")
		}
	}
	if len(out) == 0 {
		out = []string{"*"}
	}
	return out
}

// cnpPorts are a rule's ports as protocol/port.
func cnpPorts(rule map[string]any) []string {
	var out []string
	for _, p := range rulePorts(rule) {
		out = append(out, jsonString(p["protocol"])+"/"+jsonString(p["port"]))
	}
	return out
}

// On Cilium (the Catalyst overlay, the chart on a cluster serving cilium.io/v2, or told so):
// CiliumNetworkPolicies only. In: /hook from the Gateway (the ingress entity) and its
// namespaces, the platform API from its namespaces in a policy of its own, /metrics from
// monitoring, each on its container port alone. Out: DNS, the API server as the
// kube-apiserver entity (never an address), Gitea (its namespace, and the Gateway on 443),
// and the registered clusters, nothing else; no rule without peers, no world or all entity.
func TestCiliumNetworkPolicy(t *testing.T) {
	integration(t)
	type want struct {
		hook, metrics, platform []string // peers; platform nil: no platform policy
		egress                  []string // "<peers> <ports>" per rule, in order
	}
	catalyst := want{
		hook:     []string{"entity:ingress", "ns:kube-system", "ns:gitea"},
		metrics:  []string{"ns:monitoring"},
		platform: []string{"ns:catalyst-system"},
		egress: []string{
			"dns:kube-system UDP/53,TCP/53",
			"entity:kube-apiserver TCP/443,TCP/6443",
			"ns:gitea TCP/443,TCP/3000",
			"entity:ingress TCP/443",
		},
	}
	options := catalyst
	options.platform = nil
	options.egress = append(slices.Clone(catalyst.egress), "ns:rtz TCP/8443")
	told := catalyst
	told.egress = append(slices.Clone(catalyst.egress), "cidr:203.0.113.20/32 TCP/6443")
	out, err := helmTemplateAPIs(t, catalystNS, nil, valuesFile(t, `{"networkPolicy": {"flavor": "cilium", "remoteApiServers": [{"cidr": "203.0.113.20/32", "ports": [6443]}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	wants := map[string]want{"catalyst": catalyst, "chart-catalyst": catalyst, "catalyst-options": options, "chart-options": options, "chart-cilium-told": told}
	renderings := []rendering{{"chart-cilium-told", catalystNS, out}}
	for _, r := range render(t) {
		if _, ok := wants[r.name]; ok {
			renderings = append(renderings, r)
		}
	}
	for _, r := range renderings {
		w := wants[r.name]
		t.Run(r.name, func(t *testing.T) {
			objs := decode(t, r.out)
			for _, o := range objs {
				if o.GetKind() == "NetworkPolicy" {
					t.Errorf("a Kubernetes NetworkPolicy %s on Cilium", o.GetName())
				}
			}
			main := find(t, objs, "CiliumNetworkPolicy", "flux-webhook")
			from := map[string][]string{}
			ingress, _, _ := unstructured.NestedSlice(main.Object, "spec", "ingress")
			for _, rule := range ingress {
				ports := cnpPorts(asMap(rule))
				if len(ports) != 1 {
					t.Fatalf("ingress rule %v: want one port", rule)
				}
				from[ports[0]] = append(from[ports[0]], cnpPeers(asMap(rule), "from")...)
			}
			if !slices.Equal(from["TCP/8080"], w.hook) || !slices.Equal(from["TCP/8082"], w.metrics) || len(from) != 2 {
				t.Errorf("ingress %v, want http from %v, metrics from %v", from, w.hook, w.metrics)
			}
			var platform []string
			for _, o := range objs {
				if o.GetKind() != "CiliumNetworkPolicy" || o.GetName() != "flux-webhook-platform-api" {
					continue
				}
				rules, _, _ := unstructured.NestedSlice(o.Object, "spec", "ingress")
				if egress, ok, _ := unstructured.NestedSlice(o.Object, "spec", "egress"); ok || len(rules) != 1 ||
					!slices.Equal(cnpPorts(asMap(rules[0])), []string{"TCP/8083"}) || len(egress) > 0 {
					t.Errorf("platform API policy %v, want ingress on 8083 only", o.Object["spec"])
				}
				platform = cnpPeers(asMap(rules[0]), "from")
			}
			if !slices.Equal(platform, w.platform) {
				t.Errorf("platform API from %v, want %v", platform, w.platform)
			}
			egress, _, _ := unstructured.NestedSlice(main.Object, "spec", "egress")
			var got []string
			for _, rule := range egress {
				got = append(got, strings.Join(cnpPeers(asMap(rule), "to"), ",")+" "+strings.Join(cnpPorts(asMap(rule)), ","))
			}
			if !slices.Equal(got, w.egress) {
				t.Errorf("egress\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(w.egress, "\n"))
			}
			for _, p := range slices.Concat(from["TCP/8080"], from["TCP/8082"], platform, got) {
				if strings.Contains(p, "*") || strings.Contains(p, "entity:world") || strings.Contains(p, "entity:all") || strings.Contains(p, "entity:cluster") {
					t.Errorf("a peer that is not named: %s", p)
				}
			}
		})
	}
}
