package flux

import (
	"testing"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The cache keeps what matching and judging read, and drops the bulk they never read.
func TestCacheTransform(t *testing.T) {
	ks := &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Name: "apps", Annotations: map[string]string{lastApplied: "{...}", meta.ReconcileRequestAnnotation: "t"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: kustomizev1.KustomizationSpec{SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "app"},
			PostBuild: &kustomizev1.PostBuild{Substitute: map[string]string{"a": "b"}}},
		Status: kustomizev1.KustomizationStatus{LastAppliedRevision: "main@sha1:abc",
			Inventory: &kustomizev1.ResourceInventory{Entries: make([]kustomizev1.ResourceRef, 500)}},
	}
	hr := &helmv2.HelmRelease{
		Spec: helmv2.HelmReleaseSpec{ChartRef: &helmv2.CrossNamespaceSourceReference{Kind: "HelmChart", Name: "c"},
			Values: &apiextensionsv1.JSON{Raw: []byte(`{"big":true}`)}},
		Status: helmv2.HelmReleaseStatus{LastAttemptedRevision: "1.0.0", History: helmv2.Snapshots{{Name: "x"}}},
	}
	for _, o := range []any{ks, hr} {
		if _, err := CacheTransform(o); err != nil {
			t.Fatal(err)
		}
	}
	if ks.Status.Inventory != nil || ks.Spec.PostBuild != nil || ks.ManagedFields != nil || ks.Annotations[lastApplied] != "" {
		t.Errorf("kustomization kept %+v", ks)
	}
	if ks.Annotations[meta.ReconcileRequestAnnotation] != "t" || ks.Spec.SourceRef.Name != "app" || ks.Status.LastAppliedRevision == "" {
		t.Errorf("kustomization lost what is read: %+v", ks)
	}
	if hr.Spec.Values != nil || hr.Status.History != nil || hr.Spec.ChartRef == nil || hr.Status.LastAttemptedRevision != "1.0.0" {
		t.Errorf("helmrelease: %+v", hr)
	}
	src := &sourcev1.OCIRepository{Status: sourcev1.OCIRepositoryStatus{Artifact: &meta.Artifact{Metadata: map[string]string{
		"org.opencontainers.image.revision": "main@sha1:abc", "org.opencontainers.image.source": "https://g/o/r", "other": "x"}}}}
	_, _ = CacheTransform(src)
	if md := src.Status.Artifact.Metadata; len(md) != 2 || md["other"] != "" {
		t.Errorf("oci metadata %v", md)
	}
}
