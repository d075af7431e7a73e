package deploy_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// The Catalyst platform as it is published (openova-io/openova), held to what the platform
// itself applies: the copies in deploy/testdata/openova/ of its Blueprint schema, its
// Blueprint CRD and its admission CI workflow (testdata/openova/README.md says where and when
// each came from), and Go mirrors of the CI guards its charts must pass.

const (
	openovaDir     = "deploy/testdata/openova"
	topologySchema = openovaDir + "/platform/_schemas/blueprint-topology.json"
	// The CRD the test API server runs: the platform's previous one (the newest is refused by
	// an API server, TestBlueprintCRDNewest).
	blueprintCRDDir    = "deploy/testdata/openova-08c1933e/products/catalyst/chart/crds"
	blueprintCRDNewest = openovaDir + "/products/catalyst/chart/crds/blueprint.yaml"
	admissionWorkflo   = openovaDir + "/.github/workflows/blueprint-admission-validate.yml"
)

// The CI's canonical cluster IDs and BCP topologies (blueprint-admission-validate.yml:
// CLUSTER_RE, VALID_BCP).
var (
	canonicalClusterID = regexp.MustCompile(`^(mgmt|dmz|rtz)-[AB]$`)
	canonicalTopology  = []string{"active-active", "active-hot-standby", "active-passive", "singleton"}
)

// admissionFindings is blueprint-admission-validate's check of one blueprint.yaml with
// REQUIRE_TOPOLOGY=true, in Go: the presence gate (G116), the schema (the CI stops at its
// first error; this lists them all), and per declared variant a canonical key, canonical
// cluster IDs and a role for each cluster.
func admissionFindings(schema, doc map[string]any) []string {
	topo, _ := at(doc, "spec.topology").(map[string]any)
	if len(topo) == 0 {
		return []string{"G116 — spec.topology is REQUIRED (new blueprint without a populated declaration is rejected)"}
	}
	if errs := schemaErrors(schema, doc); len(errs) > 0 {
		return errs
	}
	var out []string
	per, _ := topo["perTopology"].(map[string]any)
	for _, vk := range sortedKeys(per) {
		if !slices.Contains(canonicalTopology, vk) {
			out = append(out, "perTopology key '"+vk+"' is not a canonical BCP topology")
		}
		clusters, _ := at(per[vk], "placement.clusters").([]any)
		roles, _ := at(per[vk], "placement.roles").(map[string]any)
		for _, c := range clusters {
			if !canonicalClusterID.MatchString(c.(string)) {
				out = append(out, "variant '"+vk+"' cluster '"+c.(string)+"' is not a canonical ID (tier-{A|B})")
			}
		}
		for _, c := range clusters {
			if _, ok := roles[c.(string)]; !ok {
				out = append(out, "variant '"+vk+"' cluster '"+c.(string)+"' missing a role in placement.roles")
			}
		}
	}
	return out
}

// mutate returns a copy of doc with the dotted field set to value (nil deletes it).
func mutate(t *testing.T, doc map[string]any, field string, value any) map[string]any {
	t.Helper()
	out := deepCopyJSON(t, doc).(map[string]any)
	keys := strings.Split(field, ".")
	var parent any = out
	for _, k := range keys[:len(keys)-1] {
		switch p := parent.(type) {
		case map[string]any:
			parent = p[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(p) {
				t.Fatalf("%s: no item %s", field, k)
			}
			parent = p[i]
		}
	}
	m, ok := parent.(map[string]any)
	if !ok {
		t.Fatalf("%s: the parent is not an object", field)
	}
	if value == nil {
		delete(m, keys[len(keys)-1])
	} else {
		m[keys[len(keys)-1]] = value
	}
	return out
}

// blueprint.yaml passes the platform's admission CI as it runs on every blueprint.yaml
// (REQUIRE_TOPOLOGY=true, FAIL_ON_INVALID=true): a topology, the schema
// platform/_schemas/blueprint-topology.json, canonical cluster IDs with their roles. And the
// check is live: it refuses what the CI refuses.
func TestBlueprintAdmissionSchema(t *testing.T) {
	schema := readObject(t, topologySchema)
	bp := readObject(t, blueprintFile)
	if f := admissionFindings(schema, bp); len(f) > 0 {
		t.Fatalf("%s against the platform's admission CI:\n%s", blueprintFile, strings.Join(f, "\n"))
	}
	for _, tc := range []struct {
		name, field string
		value       any // nil: delete the field
		want        string
	}{
		{"no topology", "spec.topology", nil, "spec.topology is REQUIRED"},
		{"an empty topology", "spec.topology", map[string]any{}, "spec.topology is REQUIRED"},
		{"an endpoint path (0.2's)", "spec.endpoints.0.path", "/hook", `additional property "path"`},
		{"an endpoint without its hostname", "spec.endpoints.0.hostnameTemplate", nil, `missing property "hostnameTemplate"`},
		{"a topology the platform lacks", "spec.topology.supported", []any{"everywhere"}, "/spec/topology/supported/0"},
		{"a default without the other", "spec.topology.defaults", map[string]any{"multi-region": "active-active"}, `missing property "single-region"`},
		{"a variant of another name", "spec.topology.perTopology.primary", map[string]any{"placement": map[string]any{}}, `additional property "primary"`},
		{"a replication backend the platform lacks", "spec.topology.perTopology.active-active.replication.backend", "rsync", "/replication/backend"},
		{"a cluster ID outside the registry", "spec.topology.perTopology.active-active.placement.clusters", []any{"mgmt-C"}, "'mgmt-C' is not a canonical ID"},
		{"a cluster without a role", "spec.topology.perTopology.singleton.placement.roles", map[string]any{}, "'mgmt-A' missing a role"},
		{"a hot standby replicating async", "spec.topology.perTopology.active-hot-standby", map[string]any{
			"replication": map[string]any{"backend": "none", "mode": "async"},
			"switchover":  map[string]any{"mechanism": "manual"}, "placement": map[string]any{},
		}, "/replication/mode"},
		{"a name that is no Blueprint name", "metadata.name", "Flux_Webhook", "/metadata/name"},
		{"another kind", "kind", "Application", "/kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(admissionFindings(schema, mutate(t, bp, tc.field, tc.value)), "\n")
			if !strings.Contains(got, tc.want) {
				t.Errorf("findings:\n%s\nwant one with %q", got, tc.want)
			}
		})
	}
}

// The platform's admission CI itself: the Python step of blueprint-admission-validate.yml
// (the copy in testdata, with its env), run on a tree holding the schema and blueprint.yaml,
// passes; and fails a Blueprint without topology. Needs python3 with PyYAML and jsonschema,
// as the workflow installs them (skipped without them: TestBlueprintAdmissionSchema is the
// same check in Go).
func TestBlueprintAdmissionWorkflow(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(python, "-c", "import yaml, jsonschema").Run()
	}
	if err != nil {
		t.Skipf("python3 with yaml and jsonschema: %v", err)
	}
	wf := readObject(t, admissionWorkflo)
	var script string
	for _, step := range at(wf, "jobs.validate.steps").([]any) {
		run, _ := at(step, "run").(string)
		if body, ok := strings.CutPrefix(run, "python3 << 'PY'\n"); ok {
			script, _, _ = strings.Cut(body, "\nPY\n")
		}
	}
	if script == "" {
		t.Fatalf("%s has no python step", admissionWorkflo)
	}
	environ := os.Environ()
	for k, v := range at(wf, "env").(map[string]any) {
		environ = append(environ, k+"="+v.(string))
	}
	run := func(t *testing.T, blueprint []byte) (string, error) {
		t.Helper()
		dir := t.TempDir()
		for p, b := range map[string][]byte{
			"platform/_schemas/blueprint-topology.json": []byte(mustRead(t, topologySchema)),
			"platform/flux-webhook/blueprint.yaml":      blueprint,
		} {
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.CommandContext(t.Context(), python, "-")
		cmd.Dir, cmd.Env, cmd.Stdin = dir, environ, strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(t, []byte(mustRead(t, blueprintFile))); err != nil || !strings.Contains(out, "all blueprint.yaml files validate clean") {
		t.Fatalf("the platform's admission CI on %s: %v\n%s", blueprintFile, err, out)
	}
	broken, err := yaml.Marshal(mutate(t, readObject(t, blueprintFile), "spec.topology", nil))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, broken); err == nil || !strings.Contains(out, "G116") {
		t.Fatalf("the CI passed a Blueprint without topology (%v):\n%s", err, out)
	}
}

// The Blueprint CRD (products/catalyst/chart/crds/blueprint.yaml, installed in the API server
// by TestMain) admits blueprint.yaml: its openAPIV3Schema and CEL rules, as a Sovereign's API
// server judges a Blueprint. And refuses what it should: a topology default that is not
// supported, the tokens its resolver never implemented, a version that is no semver.
func TestBlueprintCRD(t *testing.T) {
	integration(t)
	c, warnings := warningClient(t)
	bp := readObject(t, blueprintFile)
	obj := func(doc map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: deepCopyJSON(t, doc).(map[string]any)}
	}
	*warnings = nil
	apply(t, c, obj(bp), true)
	if len(*warnings) > 0 {
		t.Errorf("warnings: %q", *warnings)
	}
	// Both served versions take it.
	v1 := obj(bp)
	v1.SetAPIVersion("catalyst.openova.io/v1")
	apply(t, c, v1, true)
	for _, tc := range []struct {
		name, field string
		value       any
		want        string
	}{
		{"a default that is not supported", "spec.topology.defaults.multi-region", "active-hot-standby", "topology.defaults.multi-region must be a member of topology.supported[]"},
		{"a variant that is not supported", "spec.topology.supported", []any{"singleton"}, "requires 'active-active' in topology.supported[]"},
		{"a version that is no semver", "spec.version", "0.3", "spec.version"},
		{"a visibility the CRD lacks", "spec.visibility", "public", "spec.visibility"},
		{"a card without a title", "spec.card.title", nil, "spec.card.title"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := applyErr(t, c, obj(mutate(t, bp, tc.field, tc.value)), true)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want Invalid naming %q", err, tc.want)
			}
		})
	}
}

// The platform's newest Blueprint CRD (openova-io/openova 38914ed1) is refused by a real API
// server: its #5389 CEL rule on endpoints[].hostnameTemplate (a regex match, on a list without
// maxItems) exceeds the estimated cost budget, and so does the schema's total. So the test API
// server runs the previous one (08c1933e: the same but for that rule), and
// TestBlueprintEndpointResolves checks the tokens the rule was after. When a newer copy
// installs, this fails: install that one instead.
func TestBlueprintCRDNewest(t *testing.T) {
	integration(t)
	objs := decode(t, []byte(mustRead(t, blueprintCRDNewest)))
	if len(objs) != 1 || objs[0].GetKind() != "CustomResourceDefinition" {
		t.Fatalf("%s: %d objects", blueprintCRDNewest, len(objs))
	}
	err := env.kube.Client.Create(t.Context(), objs[0], client.DryRunAll)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "hostnameTemplate].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget") {
		t.Fatalf("the newest Blueprint CRD: %v; want it refused for its CEL cost (if it installs now, install it in TestMain)", err)
	}
}

// resolverTokens are the hostname template tokens the platform's resolver implements (the
// CRD's endpoints[].hostnameTemplate description): any other leaves the endpoint Unresolved.
var resolverTokens = []string{"SovereignFQDN", "OrgSlug", "AppName", "OrgDomain"}

// The hook endpoint resolves as the platform resolves it: every action of its template is one
// of the resolver's tokens, and with the Sovereign's FQDN it is the host the chart and the
// overlay serve /hook on, an RFC 1123 hostname.
func TestBlueprintEndpointResolves(t *testing.T) {
	integration(t)
	endpoints := at(readObject(t, blueprintFile), "spec.endpoints").([]any)
	if len(endpoints) != 1 || at(endpoints[0], "name") != "hook" {
		t.Fatalf("endpoints %v, want hook", endpoints)
	}
	tmpl := at(endpoints[0], "hostnameTemplate").(string)
	action := regexp.MustCompile(`\{\{-? *\.([A-Za-z]+) *-?\}\}`)
	if rest := action.ReplaceAllString(tmpl, ""); strings.Contains(rest, "{{") || strings.Contains(rest, "}}") {
		t.Fatalf("hostnameTemplate %q has actions other than a token", tmpl)
	}
	for _, m := range action.FindAllStringSubmatch(tmpl, -1) {
		if !slices.Contains(resolverTokens, m[1]) {
			t.Errorf("hostnameTemplate %q uses .%s, which the platform's resolver does not implement (%v)", tmpl, m[1], resolverTokens)
		}
	}
	fqdn := at(configValues(t, catalystConfig(t)), "global.sovereignFQDN").(string)
	var b bytes.Buffer
	if err := template.Must(template.New("host").Option("missingkey=error").Parse(tmpl)).Execute(&b, map[string]string{
		"SovereignFQDN": fqdn, "OrgSlug": "org", "AppName": "app", "OrgDomain": "org.example.eu",
	}); err != nil {
		t.Fatal(err)
	}
	host := b.String()
	if !regexp.MustCompile(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`).MatchString(host) || len(host) > 253 {
		t.Fatalf("the endpoint resolves to %q, not a hostname", host)
	}
	for _, r := range render(t) {
		if r.name != "catalyst" && r.name != "chart-catalyst" {
			continue
		}
		ing := find(t, decode(t, r.out), "Ingress", "flux-webhook")
		rules, _, _ := unstructured.NestedSlice(ing.Object, "spec", "rules")
		if h, _, _ := unstructured.NestedString(rules[0].(map[string]any), "host"); h != host {
			t.Errorf("%s serves /hook on %s, the Blueprint's endpoint resolves to %s", r.name, h, host)
		}
	}
	route := find(t, decode(t, helmTemplate(t, catalystNS, valuesFile(t,
		`{"global": {"sovereignFQDN": "`+fqdn+`"}, "ingress": {"enabled": false}, "httpRoute": {"enabled": true}}`))), "HTTPRoute", "flux-webhook")
	if hosts, _, _ := unstructured.NestedStringSlice(route.Object, "spec", "hostnames"); !slices.Equal(hosts, []string{host}) {
		t.Errorf("the chart's HTTPRoute serves %v, the Blueprint's endpoint resolves to %s", hosts, host)
	}
}

// The platform's pre-merge chart guards (scripts/check-chart-annotations.sh) as its CI runs
// them, with the helm this repository builds: GUARD 1, a chart without dependencies carries
// catalyst.openova.io/no-upstream: "true"; GUARD 2, `helm template smoke-<chart>` at the
// defaults, with no --kube-version, renders at least 5 lines, so the chart needs no
// smoke-render-mode opt-out. The render passing the chart's kubeVersion (>= 1.30) shows helm's
// own Kubernetes version is its client-go's, as a release build stamps it (an unstamped build
// says v1.20 and fails it).
func TestChartAnnotationGuards(t *testing.T) {
	integration(t)
	chart := readObject(t, chartDir+"/Chart.yaml")
	name := at(chart, "name").(string)
	deps, _ := at(chart, "dependencies").([]any)
	ann, _ := at(chart, "annotations").(map[string]any)
	if len(deps) == 0 && ann["catalyst.openova.io/no-upstream"] != "true" {
		t.Errorf("GUARD 1: no dependencies and no catalyst.openova.io/no-upstream: \"true\"")
	}
	out, err := toolErr(t, "helm", "template", "smoke-"+name, path(chartDir), "--namespace", "smoke-"+name)
	if err != nil {
		t.Fatalf("GUARD 2: the default render fails: %v", err)
	}
	if n := bytes.Count(out, []byte("\n")); n < 5 {
		t.Fatalf("GUARD 2: %d lines at the defaults, want at least 5", n)
	}
	if _, ok := ann["catalyst.openova.io/smoke-render-mode"]; ok {
		t.Errorf("a smoke-render-mode opt-out on a chart that renders at its defaults")
	}
}

// The platform's Kyverno policies, as its charts' tests mirror them
// (platform/gitea/chart/tests/kyverno-probes-present.sh): every container of every workload
// in every rendering declares CPU and memory requests and limits, and liveness and readiness
// probes.
func TestKyvernoWorkloadPolicies(t *testing.T) {
	integration(t)
	renderings := render(t)
	renderings = append(renderings, rendering{"chart-smoke", "smoke", tool(t, "helm", "template", "smoke", path(chartDir))})
	for _, r := range renderings {
		t.Run(r.name, func(t *testing.T) {
			n := 0
			for _, o := range decode(t, r.out) {
				containers, ok, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
				if !ok {
					continue
				}
				for _, c := range containers {
					n++
					cm := c.(map[string]any)
					for _, f := range []string{"requests.cpu", "requests.memory", "limits.cpu", "limits.memory"} {
						if v, _, _ := unstructured.NestedFieldNoCopy(cm, append([]string{"resources"}, strings.Split(f, ".")...)...); v == nil || v == "" {
							t.Errorf("%s %s container %v: no resources.%s", o.GetKind(), o.GetName(), cm["name"], f)
						}
					}
					for _, p := range []string{"livenessProbe", "readinessProbe"} {
						if cm[p] == nil {
							t.Errorf("%s %s container %v: no %s", o.GetKind(), o.GetName(), cm["name"], p)
						}
					}
				}
			}
			if n == 0 {
				t.Fatal("no container rendered")
			}
		})
	}
}

// ─── The platform's network-policy egress guard (scripts/check-netpol-egress-completeness.py)

// policySelector is the endpoint selector a policy constrains, as JSON; "" for a namespace
// baseline (an empty selector).
func policySelector(o *unstructured.Unstructured) string {
	sel, ok, _ := unstructured.NestedMap(o.Object, "spec", "endpointSelector")
	if !ok {
		sel, _, _ = unstructured.NestedMap(o.Object, "spec", "podSelector")
	}
	if len(asMap(sel["matchLabels"])) == 0 && len(asSlice(sel["matchExpressions"])) == 0 {
		return ""
	}
	b, _ := json.Marshal(sel)
	return string(b)
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// egressRule is one egress rule and the kind of the policy it is in.
type egressRule struct {
	kind string
	rule map[string]any
}

// rulePorts are the port entries a rule names, in the Kubernetes or the Cilium shape.
func rulePorts(rule map[string]any) []map[string]any {
	var out []map[string]any
	for _, p := range asSlice(rule["ports"]) {
		out = append(out, asMap(p))
	}
	for _, tp := range asSlice(rule["toPorts"]) {
		for _, p := range asSlice(asMap(tp)["ports"]) {
			out = append(out, asMap(p))
		}
	}
	return out
}

// allowsPort: a rule permits number/protocol; one naming no ports at all permits every port,
// one holding an empty ports list none; a named port cannot be proven to be it.
func allowsPort(rule map[string]any, number, protocol string) bool {
	declared := rulePorts(rule)
	if len(declared) == 0 {
		return len(asSlice(rule["ports"])) == 0 && len(asSlice(rule["toPorts"])) == 0
	}
	for _, p := range declared {
		if jsonString(p["port"]) != number {
			continue
		}
		proto := strings.ToUpper(jsonString(p["protocol"]))
		if proto == "" {
			proto = "TCP"
		}
		if proto == "ANY" || proto == protocol {
			return true
		}
	}
	return false
}

// jsonString is a scalar as text (a port may be a number or a string).
func jsonString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// reachesDNS: the rule's destination can be cluster DNS in dnsNamespace. Kubernetes: no `to`
// is everywhere, a namespace selector of it or of every namespace; an ipBlock never matches a
// pod under Cilium. Cilium: an endpoint selector naming it, the all or cluster entity, a
// toServices.
func reachesDNS(r egressRule, dnsNamespace string) bool {
	if r.kind == "NetworkPolicy" {
		tos := asSlice(r.rule["to"])
		if len(tos) == 0 {
			return true
		}
		for _, to := range tos {
			if nsel, ok := asMap(to)["namespaceSelector"].(map[string]any); ok {
				ml := asMap(nsel["matchLabels"])
				if len(ml) == 0 || ml["kubernetes.io/metadata.name"] == dnsNamespace {
					return true
				}
			}
		}
		return false
	}
	for _, ep := range asSlice(r.rule["toEndpoints"]) {
		ml := asMap(asMap(ep)["matchLabels"])
		if ml["k8s:io.kubernetes.pod.namespace"] == dnsNamespace || ml["io.kubernetes.pod.namespace"] == dnsNamespace {
			return true
		}
	}
	for _, e := range asSlice(r.rule["toEntities"]) {
		if e == "all" || e == "cluster" {
			return true
		}
	}
	return len(asSlice(r.rule["toServices"])) > 0
}

// groupAllowsDNS: the union of a selected endpoint's egress rules reaches cluster DNS on
// 53/UDP and 53/TCP.
func groupAllowsDNS(rules []egressRule, dnsNamespace string) (bool, string) {
	if len(rules) == 0 {
		return false, "no egress rule at all (ingress-only policy)"
	}
	var missing []string
	for _, proto := range []string{"UDP", "TCP"} {
		if !slices.ContainsFunc(rules, func(r egressRule) bool {
			return allowsPort(r.rule, "53", proto) && reachesDNS(r, dnsNamespace)
		}) {
			missing = append(missing, "53/"+proto)
		}
	}
	if len(missing) > 0 {
		return false, "no " + strings.Join(missing, " and no ") + " to cluster DNS"
	}
	return true, ""
}

// policyGroups groups a rendering's policies by the endpoints they select, each with the union
// of its egress rules (and a namespace baseline's); baseline policies are left out.
func policyGroups(objs []*unstructured.Unstructured) map[string][]egressRule {
	groups := map[string][]egressRule{}
	var baseline []egressRule
	for _, o := range objs {
		if o.GetKind() != "NetworkPolicy" && o.GetKind() != "CiliumNetworkPolicy" {
			continue
		}
		egress, _, _ := unstructured.NestedSlice(o.Object, "spec", "egress")
		var rules []egressRule
		for _, r := range egress {
			rules = append(rules, egressRule{o.GetKind(), asMap(r)})
		}
		sel := policySelector(o)
		if sel == "" {
			baseline = append(baseline, rules...)
			continue
		}
		groups[sel] = append(groups[sel], rules...)
	}
	for sel := range groups {
		groups[sel] = append(groups[sel], baseline...)
	}
	return groups
}

// Every rendering's policies keep cluster DNS for the endpoints they constrain, as the
// platform's guard requires of every chart: the union of the egress rules selecting
// flux-webhook's pods allows 53/UDP and 53/TCP to cluster DNS (kube-system), asserted on the
// rendered values. The chart is rendered as the guard renders it (its API versions, on and
// off Cilium). And the classifier bites the guard's own broken shapes.
func TestNetworkPolicyEgressGuard(t *testing.T) {
	integration(t)
	const dnsNS = "kube-system"
	for _, tc := range []struct {
		name, doc string
		ok        bool
	}{
		{"complete DNS egress", `{"kind": "CiliumNetworkPolicy", "spec": {"endpointSelector": {"matchLabels": {"a": "b"}}, "egress": [{"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]}]}]}}`, true},
		{"ingress-only", `{"kind": "CiliumNetworkPolicy", "spec": {"endpointSelector": {"matchLabels": {"a": "b"}}, "ingress": [{"fromEntities": ["ingress"]}]}}`, false},
		{"hollow egress: []", `{"kind": "CiliumNetworkPolicy", "spec": {"endpointSelector": {"matchLabels": {"a": "b"}}, "egress": []}}`, false},
		{"port 53 in its own namespace", `{"kind": "CiliumNetworkPolicy", "spec": {"endpointSelector": {"matchLabels": {"a": "b"}}, "egress": [{"toEndpoints": [{}], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]}]}]}}`, false},
		{"53/UDP only", `{"kind": "CiliumNetworkPolicy", "spec": {"endpointSelector": {"matchLabels": {"a": "b"}}, "egress": [{"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}}], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}]}}`, false},
		{"53 through ipBlock 0.0.0.0/0", `{"kind": "NetworkPolicy", "spec": {"podSelector": {"matchLabels": {"a": "b"}}, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}}`, false},
	} {
		o := &unstructured.Unstructured{}
		if err := json.Unmarshal([]byte(tc.doc), &o.Object); err != nil {
			t.Fatal(err)
		}
		for _, rules := range policyGroups([]*unstructured.Unstructured{o}) {
			if ok, why := groupAllowsDNS(rules, dnsNS); ok != tc.ok {
				t.Errorf("the classifier says %v (%s) for %s, want %v", ok, why, tc.name, tc.ok)
			}
		}
	}
	renderings := render(t)
	for _, apis := range [][]string{nil, {"cilium.io/v2", "external-secrets.io/v1beta1", "gateway.networking.k8s.io/v1", "monitoring.coreos.com/v1"}} {
		args := []string{"template", "chart", path(chartDir), "--namespace", "org-slug", "--set", "networkPolicy.enabled=true"}
		for _, a := range apis {
			args = append(args, "--api-versions", a)
		}
		renderings = append(renderings, rendering{"guard-" + map[bool]string{true: "cilium", false: "kubernetes"}[apis != nil], "org-slug", tool(t, "helm", args...)})
	}
	for _, r := range renderings {
		t.Run(r.name, func(t *testing.T) {
			groups := policyGroups(decode(t, r.out))
			if len(groups) == 0 {
				t.Fatal("no policy selects flux-webhook's pods")
			}
			for sel, rules := range groups {
				if ok, why := groupAllowsDNS(rules, dnsNS); !ok {
					t.Errorf("the policies selecting %s: %s", sel, why)
				}
			}
		})
	}
}
