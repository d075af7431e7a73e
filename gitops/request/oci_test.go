package request_test

import (
	"slices"
	"testing"
	"time"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
)

// A tag pushed to the forge's registry feeds the OCIRepositories that follow it and the OCI
// HelmCharts of that chart a version constraint allows (through their OCI HelmRepository),
// then what builds from them; sources first. The HelmRepository itself is no target.
func TestRequestMatchesOCIPushes(t *testing.T) {
	fluxtest.Integration(t)
	ns := fluxtest.Namespace(t)
	owner := "org-" + fluxtest.RandomHex(3)
	registry := "oci://" + fluxtest.ForgeHost + "/" + owner
	hour := metav1.Duration{Duration: time.Hour}
	oci := func(name, url string, ref *sourcev1.OCIRepositoryRef) *sourcev1.OCIRepository {
		return &sourcev1.OCIRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: sourcev1.OCIRepositorySpec{URL: url, Reference: ref, Interval: &hour}}
	}
	chart := func(name, chartName, version string) *sourcev1.HelmChart {
		return &sourcev1.HelmChart{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: sourcev1.HelmChartSpec{
			Chart: chartName, Version: version, Interval: hour,
			SourceRef: sourcev1.LocalHelmChartSourceReference{Kind: sourcev1.HelmRepositoryKind, Name: "registry"}}}
	}
	ks := fluxtest.Kustomization(ns, "manifests", "", "manifests")
	ks.Spec.SourceRef.Kind = sourcev1.OCIRepositoryKind
	fluxtest.Create(t,
		oci("manifests", registry+"/manifests", nil), // latest
		oci("manifests-v1", registry+"/manifests", &sourcev1.OCIRepositoryRef{Tag: "v1"}),
		oci("manifests-semver", registry+"/manifests", &sourcev1.OCIRepositoryRef{SemVer: ">=1.0.0"}),
		oci("manifests-pinned", registry+"/manifests", &sourcev1.OCIRepositoryRef{Digest: "sha256:" + fluxtest.RandomHex(32)}),
		oci("other", registry+"/other", nil),
		ks,
		&sourcev1.HelmRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "registry"},
			Spec: sourcev1.HelmRepositorySpec{URL: registry, Type: sourcev1.HelmRepositoryTypeOCI, Interval: hour}},
		chart("podinfo", "podinfo", "6.x"),
		chart("podinfo-any", "podinfo", ""),
		chart("podinfo-5", "podinfo", "5.x"),
		chart("other-chart", "nginx", ""),
		fluxtest.HelmReleaseFromChart(ns, "podinfo", ns, "podinfo"),
	)
	r := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local))
	for _, tt := range []struct {
		pkg, tag string
		want     []string
	}{
		{"manifests", "latest", []string{"OCIRepository/manifests", "Kustomization/manifests"}},
		{"manifests", "v1", []string{"OCIRepository/manifests-semver", "OCIRepository/manifests-v1"}}, // "v1" is 1.0.0 to Flux too
		{"manifests", "1.2.0", []string{"OCIRepository/manifests-semver"}},
		{"podinfo", "6.1.0", []string{"HelmChart/podinfo", "HelmChart/podinfo-any", "HelmRelease/podinfo"}},
		{"podinfo", "5.0.1", []string{"HelmChart/podinfo-5", "HelmChart/podinfo-any"}},
		{"unknown", "latest", nil},
	} {
		push := gitops.Push{Delivery: "d-" + tt.pkg + "-" + tt.tag, OCI: &gitops.OCI{Package: owner + "/" + tt.pkg,
			URL: registry + "/" + tt.pkg, Tag: tt.tag}}
		res, err := r.Request(t.Context(), push)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range res.Targets {
			got = append(got, o.Kind+"/"+o.Name)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s:%s matched %v, want %v", tt.pkg, tt.tag, got, tt.want)
		}
	}
}
