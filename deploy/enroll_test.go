package deploy_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// deploy/components/enrollment and the chart's enrollment values render the same
// enrollment: the token's ExternalSecret (from OpenBao's catalyst/flux-webhook/enroll-token), the
// permission to read its Secret and ExternalSecret by name, and the settings (the URL only
// the chart knows: the overlay adds it, as the component's comment shows).
func TestEnrollmentComponentMatchesChart(t *testing.T) {
	integration(t)
	const ns = catalystNS
	kustomized := decode(t, tool(t, "kustomize", "build", overlayWith(t, "../../components/enrollment")))
	charted := decode(t, helmTemplate(t, ns, valuesFile(t, `{"global": {"sovereignFQDN": "fra1.example.eu"},
		"enrollment": {"scopesConfigMap": "flux-webhook-enroll-scopes", "followed": true}}`)))
	enrollEnv := func(env map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range env {
			if strings.HasPrefix(k, "FLUX_WEBHOOK_ENROLL_") {
				out[k] = v
			}
		}
		return out
	}
	k := enrollEnv(containerOf(t, findKind(t, kustomized, "Deployment")).environment(t, ns))
	c := enrollEnv(containerOf(t, findKind(t, charted, "Deployment")).environment(t, ns))
	if c["FLUX_WEBHOOK_ENROLL_URL"] != "https://flux-webhook.fra1.example.eu" {
		t.Errorf("the chart's enrollment URL %q, want its Ingress host", c["FLUX_WEBHOOK_ENROLL_URL"])
	}
	delete(c, "FLUX_WEBHOOK_ENROLL_URL")
	want := map[string]string{"FLUX_WEBHOOK_ENROLL_TOKEN_SECRET": ns + "/flux-webhook-enroll",
		"FLUX_WEBHOOK_ENROLL_SCOPES_CONFIGMAP": "flux-webhook-enroll-scopes", "FLUX_WEBHOOK_ENROLL_FOLLOWED": "true"}
	for name, env := range map[string]map[string]string{"component": k, "chart": c} {
		for key, v := range want {
			if env[key] != v {
				t.Errorf("%s: %s=%q, want %q", name, key, env[key], v)
			}
		}
		if len(env) != len(want) {
			t.Errorf("%s sets %v, want %v", name, env, want)
		}
	}
	check := func(name string, es, role map[string]any) {
		t.Helper()
		if got := dig(es, "spec", "data", 0, "remoteRef", "key"); got != "catalyst/flux-webhook/enroll-token" {
			t.Errorf("%s: the enrollment token's OpenBao key %v", name, got)
		}
		for i, res := range []string{"secrets", "externalsecrets"} {
			names := dig(role, "rules", i, "resourceNames")
			if l, _ := names.([]any); !slices.Contains(l, any("flux-webhook-enroll")) || dig(role, "rules", i, "resources", 0) != res {
				t.Errorf("%s: the Role's %s rule names %v, without flux-webhook-enroll", name, res, names)
			}
		}
	}
	check("component", find(t, kustomized, "ExternalSecret", "flux-webhook-enroll").Object, find(t, kustomized, "Role", "flux-webhook").Object)
	check("chart", find(t, charted, "ExternalSecret", "flux-webhook-enroll").Object, find(t, charted, "Role", "flux-webhook").Object)
	// Off by default: the defaults render no enrollment.
	for _, o := range decode(t, helmTemplate(t, ns)) {
		if b, _ := json.Marshal(o.Object); o.GetName() == "flux-webhook-enroll" || strings.Contains(string(b), "ENROLL") {
			t.Fatalf("the chart's defaults render enrollment: %s %s", o.GetKind(), o.GetName())
		}
	}
}

// dig follows map keys and list indexes through a decoded object; nil when a step is missing.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}
