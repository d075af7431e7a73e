package cluster

import (
	"fmt"
	"strings"
	"testing"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openova-io/flux-webhook/gitops/record"
)

// What the transform keeps of an object, whatever its writer put in it (no API server: the
// same on the real one is TestTenantObjectsBounded).
func TestBoundsTransform(t *testing.T) {
	manyLabels := map[string]string{}
	for i := range 200 {
		manyLabels[fmt.Sprintf("tenant.example.com/l-%03d", i)] = strings.Repeat("v", 63)
	}
	tests := []struct {
		name string
		edit func(k *kustomizev1.Kustomization)
		want func(t *testing.T, k *kustomizev1.Kustomization)
	}{
		{"only the annotations read", func(k *kustomizev1.Kustomization) {
			k.Annotations = map[string]string{meta.ReconcileRequestAnnotation: "2026-12-07T10:00:00Z", "other": strings.Repeat("x", 200<<10),
				record.Annotation: `{"current":{}}`, record.MACAnnotation: "mac"}
		}, func(t *testing.T, k *kustomizev1.Kustomization) {
			want := map[string]string{meta.ReconcileRequestAnnotation: "2026-12-07T10:00:00Z", record.Annotation: `{"current":{}}`, record.MACAnnotation: "mac"}
			if fmt.Sprint(k.Annotations) != fmt.Sprint(want) {
				t.Fatalf("annotations %v", k.Annotations)
			}
		}},
		{"no annotation read: none kept", func(k *kustomizev1.Kustomization) {
			k.Annotations = map[string]string{"other": "x"}
		}, func(t *testing.T, k *kustomizev1.Kustomization) {
			if k.Annotations != nil {
				t.Fatalf("annotations %v", k.Annotations)
			}
		}},
		{"a value longer than flux-webhook writes is cut", func(k *kustomizev1.Kustomization) {
			k.Annotations = map[string]string{meta.ReconcileRequestAnnotation: strings.Repeat("t", maxRequestedAtBytes+1),
				record.Annotation: strings.Repeat("r", maxRecordAnnotationBytes+1), record.MACAnnotation: strings.Repeat("m", maxMACAnnotationBytes+1)}
		}, func(t *testing.T, k *kustomizev1.Kustomization) {
			if len(k.Annotations) != 3 {
				t.Fatalf("annotations %v", k.Annotations)
			}
			for key, v := range k.Annotations {
				if len(v) > 100 || !strings.HasSuffix(v, "…") {
					t.Fatalf("%s kept as %d bytes", key, len(v))
				}
			}
		}},
		{"labels within their budget, in key order", func(k *kustomizev1.Kustomization) { k.Labels = manyLabels },
			func(t *testing.T, k *kustomizev1.Kustomization) {
				size := 0
				for key, v := range k.Labels {
					size += len(key) + len(v)
				}
				if size > maxLabelBytes || size < maxLabelBytes-100 || k.Labels["tenant.example.com/l-000"] == "" || k.Labels["tenant.example.com/l-199"] != "" {
					t.Fatalf("%d labels, %d bytes", len(k.Labels), size)
				}
			}},
		{"a few labels stay", func(k *kustomizev1.Kustomization) { k.Labels = map[string]string{"a": "b"} },
			func(t *testing.T, k *kustomizev1.Kustomization) {
				if len(k.Labels) != 1 {
					t.Fatalf("labels %v", k.Labels)
				}
			}},
		{"an object too large keeps its metadata only", func(k *kustomizev1.Kustomization) {
			k.Spec.Path = strings.Repeat("p", maxCachedObjectBytes)
			k.Labels = map[string]string{"a": "b"}
		}, func(t *testing.T, k *kustomizev1.Kustomization) {
			if k.Spec.Path != "" || k.Spec.SourceRef.Name != "" || k.Name != "app" || k.UID != "uid" || k.Generation != 2 || k.Labels["a"] != "b" {
				t.Fatalf("kept %+v", k)
			}
		}},
		{"owner references, finalizers, managed fields dropped", func(k *kustomizev1.Kustomization) {
			k.Finalizers = []string{"finalizers.fluxcd.io"}
			k.OwnerReferences = []metav1.OwnerReference{{Name: "x"}}
			k.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "m"}}
		}, func(t *testing.T, k *kustomizev1.Kustomization) {
			if k.Finalizers != nil || k.OwnerReferences != nil || k.ManagedFields != nil || k.Spec.SourceRef.Name != "src" {
				t.Fatalf("kept %+v", k.ObjectMeta)
			}
		}},
	}
	b := CacheOptions("test").DefaultTransform
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "app", UID: "uid", Generation: 2},
				Spec: kustomizev1.KustomizationSpec{Path: "./", SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "src"}}}
			tt.edit(k)
			out, err := b(k)
			if err != nil {
				t.Fatal(err)
			}
			tt.want(t, out.(*kustomizev1.Kustomization))
		})
	}
}
