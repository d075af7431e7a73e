package api

import "testing"

func TestTargetContext(t *testing.T) {
	got := Target{Cluster: "eu-1", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}.Context()
	if want := "flux/eu-1/kustomization/flux-system/apps"; got != want {
		t.Fatalf("context %q, want %q", got, want)
	}
}
