package deploy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// The ValidatingAdmissionPolicy the base and the chart render, on the real API server, with
// the rendered RBAC applied: flux-webhook's ServiceAccount (impersonated) may change, on each
// Flux kind it patches, only reconcile.fluxcd.io/requestedAt and its request record annotations — the
// service's kind of patch, a JSON merge patch of metadata.annotations, passes — while a spec,
// label, other annotation, finalizer or owner change is denied; the same patches by the admin,
// and by another ServiceAccount with the same permissions, pass (the policy judges one
// identity). A ServiceAccount of that name in any namespace is judged: the policy matches it
// by name (a namespace written into its CEL would not follow Kustomize's namespace
// transformer), which restricts more, never less.
func TestAdmissionPolicy(t *testing.T) {
	integration(t)
	ctx, admin := t.Context(), env.kube.Client
	objs := decode(t, kustomize(t, catalystDir))
	ns := "admission-" + randomHex(3)
	ensureNamespace(t, ns)

	// The rendered policy, binding and ClusterRole under names of this test's own (they are
	// cluster-wide and would outlive it), the binding's subjects this namespace's accounts.
	const name = "flux-webhook-admission-test"
	policy := find(t, objs, "ValidatingAdmissionPolicy", "flux-webhook").DeepCopy()
	binding := find(t, objs, "ValidatingAdmissionPolicyBinding", "flux-webhook").DeepCopy()
	role := find(t, objs, "ClusterRole", "flux-webhook").DeepCopy()
	roleBinding := find(t, objs, "ClusterRoleBinding", "flux-webhook").DeepCopy()
	policy.SetName(name)
	binding.SetName(name)
	_ = unstructured.SetNestedField(binding.Object, name, "spec", "policyName")
	role.SetName(name)
	roleBinding.SetName(name)
	_ = unstructured.SetNestedField(roleBinding.Object, name, "roleRef", "name")
	var subjects []any
	for _, sa := range []string{"flux-webhook", "other"} {
		subjects = append(subjects, map[string]any{"kind": "ServiceAccount", "name": sa, "namespace": ns})
	}
	_ = unstructured.SetNestedSlice(roleBinding.Object, subjects, "subjects")
	for _, o := range []*unstructured.Unstructured{role, roleBinding, policy, binding} {
		apply(t, admin, o, false)
	}
	t.Cleanup(func() {
		for _, o := range []*unstructured.Unstructured{binding, policy, roleBinding, role} {
			if err := admin.Delete(context.Background(), o); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	})

	// One object of each kind the policy judges, with a label, an annotation of its own and a
	// finalizer, as Flux objects carry.
	// (A HelmRepository the service only reads: its RBAC refuses any patch.)
	kinds := []struct{ apiVersion, kind string }{
		{"source.toolkit.fluxcd.io/v1", "GitRepository"}, {"source.toolkit.fluxcd.io/v1", "OCIRepository"},
		{"source.toolkit.fluxcd.io/v1", "HelmChart"},
		{"kustomize.toolkit.fluxcd.io/v1", "Kustomization"}, {"helm.toolkit.fluxcd.io/v2", "HelmRelease"},
	}
	specs := map[string]map[string]any{
		"GitRepository": {"url": "https://gitea.example.eu/org/app.git", "interval": "1h"},
		"OCIRepository": {"url": "oci://ghcr.io/org/app", "interval": "1h"},
		"HelmChart":     {"chart": "./chart", "interval": "1h", "sourceRef": map[string]any{"kind": "GitRepository", "name": "app"}},
		"Kustomization": {"path": "./deploy", "interval": "1h", "prune": true, "sourceRef": map[string]any{"kind": "GitRepository", "name": "app"}},
		"HelmRelease":   {"interval": "1h", "chartRef": map[string]any{"kind": "HelmChart", "name": "app"}},
	}
	var targets []*unstructured.Unstructured
	for _, k := range kinds {
		o := &unstructured.Unstructured{Object: map[string]any{"spec": specs[k.kind]}}
		o.SetAPIVersion(k.apiVersion)
		o.SetKind(k.kind)
		o.SetNamespace(ns)
		o.SetName("app")
		o.SetLabels(map[string]string{"team": "a"})
		o.SetAnnotations(map[string]string{"example.eu/owner": "team-a"})
		o.SetFinalizers([]string{"finalizers.fluxcd.io"})
		if err := admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		targets = append(targets, o)
	}

	as := func(user string) client.Client {
		cfg := rest.CopyConfig(env.kube.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
		c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	service := as("system:serviceaccount:" + ns + ":flux-webhook")
	other := as("system:serviceaccount:" + ns + ":other")

	patch := func(c client.Client, o *unstructured.Unstructured, body string) error {
		return c.Patch(ctx, o.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(body)))
	}
	// The policy is compiled and loaded asynchronously: wait until it judges.
	deadline := time.Now().Add(time.Minute)
	for {
		err := patch(service, targets[0], `{"spec": {"interval": "2h"}}`)
		if err != nil && strings.Contains(err.Error(), "may not change the spec") {
			break
		}
		if err == nil {
			// Admitted before the policy was in force: undo, try again.
			if err := patch(admin, targets[0], `{"spec": {"interval": "1h"}}`); err != nil {
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy does not judge flux-webhook's spec patch after a minute (last: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	record := func(i int) string {
		return fmt.Sprintf(`{"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "2026-11-30T10:00:%02dZ",
			"flux-webhook.openova.io/request": "{\"commit\":\"5ca8a9fee063\",\"delivery\":\"d-%d\"}",
			"flux-webhook.openova.io/request-mac": "mac-%d"}}}`, i, i, i)
	}
	for _, tc := range []struct {
		name, patch string
		deny        string // a fragment of the denial, "" when the service may
	}{
		{"the service's request", record(1), ""},
		{"the service's next request", record(2), ""},
		{"the record removed", `{"metadata": {"annotations": {"flux-webhook.openova.io/request": null, "flux-webhook.openova.io/request-mac": null}}}`, ""},
		{"the spec", `{"spec": {"interval": "1m"}}`, "may not change the spec"},
		{"a request with a spec change", `{"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "x"}}, "spec": {"suspend": true}}`, "may not change the spec"},
		{"a label added", `{"metadata": {"labels": {"flux-webhook.openova.io/touched": "yes"}}}`, "may not change the labels"},
		{"a label removed", `{"metadata": {"labels": {"team": null}}}`, "may not change the labels"},
		{"another annotation added", `{"metadata": {"annotations": {"kustomize.toolkit.fluxcd.io/reconcile": "disabled"}}}`, "may change only the annotations"},
		{"another annotation changed", `{"metadata": {"annotations": {"example.eu/owner": "team-b"}}}`, "may change only the annotations"},
		{"another annotation removed", `{"metadata": {"annotations": {"example.eu/owner": null}}}`, "may change only the annotations"},
		{"a finalizer removed", `{"metadata": {"finalizers": null}}`, "may not change the finalizers"},
		{"an owner added", `{"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "0b1d3f4e-0000-4000-8000-000000000001"}]}}`, "may not change the owners"},
	} {
		for _, o := range targets {
			t.Run(o.GetKind()+"/"+tc.name, func(t *testing.T) {
				err := patch(service, o, tc.patch)
				switch {
				case tc.deny == "" && err != nil:
					t.Fatalf("flux-webhook's patch refused: %v", err)
				case tc.deny != "" && err == nil:
					t.Fatalf("flux-webhook changed %s", tc.name)
				case tc.deny != "" && (!apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.deny)):
					t.Fatalf("want a denial saying %q, got: %v", tc.deny, err)
				}
				if tc.deny == "" {
					return
				}
				// The policy judges flux-webhook only: the same by another identity passes.
				if err := patch(other, o, tc.patch); err != nil {
					t.Errorf("another ServiceAccount's patch refused: %v", err)
				}
				if err := patch(admin, o, tc.patch); err != nil {
					t.Errorf("the admin's patch refused: %v", err)
				}
			})
		}
	}

	// A ServiceAccount flux-webhook of another namespace is judged as well.
	ns2 := ns + "-b"
	ensureNamespace(t, ns2)
	_ = unstructured.SetNestedSlice(roleBinding.Object, append(subjects, map[string]any{"kind": "ServiceAccount", "name": "flux-webhook", "namespace": ns2}), "subjects")
	apply(t, admin, roleBinding, false)
	elsewhere := as("system:serviceaccount:" + ns2 + ":flux-webhook")
	deadline = time.Now().Add(20 * time.Second)
	for {
		err := patch(elsewhere, targets[0], `{"spec": {"interval": "3h"}}`)
		if err != nil && strings.Contains(err.Error(), "may not change the spec") {
			break
		}
		if err == nil {
			t.Fatal("a ServiceAccount flux-webhook of another namespace changed a spec")
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("flux-webhook of %s: %v", ns2, err)
		}
		time.Sleep(100 * time.Millisecond) // RBAC not yet in force
	}
}

// The chart names the ServiceAccount it renders in the policy's condition.
func TestAdmissionPolicyFollowsTheName(t *testing.T) {
	integration(t)
	for _, tc := range []struct{ values, sa string }{
		{`{}`, "flux-webhook"},
		{`{"fullnameOverride": "fw"}`, "fw"},
	} {
		objs := decode(t, helmTemplate(t, catalystNS, valuesFile(t, tc.values)))
		sa := findKind(t, objs, "ServiceAccount")
		policy := findKind(t, objs, "ValidatingAdmissionPolicy")
		conds, _, _ := unstructured.NestedSlice(policy.Object, "spec", "matchConditions")
		expr := conds[0].(map[string]any)["expression"].(string)
		if sa.GetName() != tc.sa || !strings.Contains(expr, ":"+tc.sa+"$')") {
			t.Errorf("%s: ServiceAccount %s, the policy's condition %s", tc.values, sa.GetName(), expr)
		}
	}
	if objs := decode(t, helmTemplate(t, catalystNS, valuesFile(t, `{"admissionPolicy": {"enabled": false}}`))); len(objs) > 0 {
		for _, o := range objs {
			if strings.HasPrefix(o.GetKind(), "ValidatingAdmissionPolicy") {
				t.Errorf("admissionPolicy.enabled=false renders %s", o.GetKind())
			}
		}
	}
}
