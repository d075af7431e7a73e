package cluster_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

const helmReleases = "helm.toolkit.fluxcd.io_helmreleases"

// A Flux installed without helm-controller: the cluster works with the kinds it has; a
// HelmRelease CRD served only at a version flux-webhook does not read is reported (log,
// metric, Unusable for /readyz), not used; the real CRD installed later is picked up
// without a restart, its objects matched through their indexes.
func TestKindsDiscoveredPerCluster(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	k := testenv.NewKube(t, testenv.KubeOptions{CRDs: true, WithoutCRDs: []string{helmReleases}})
	cctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := fluxtest.StartCluster(cctx, "no-helm", k, func(c *cluster.Cluster) { c.DiscoveryInterval = 200 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	// Nor does it serve Flagger's Canary (its CRD is installed only where Flagger runs): a
	// cluster without Flagger simply has no canaries.
	if c.Serves(helmv2.HelmReleaseKind) || c.Serves(flaggerv1.CanaryKind) || !c.Serves(sourcev1.GitRepositoryKind) || !c.Serves(sourcev1.OCIRepositoryKind) {
		t.Fatalf("kinds %v", kindNames(c))
	}
	const served = "flux_webhook_kind_served"
	if fluxtest.Counter(t, served, "cluster", "no-helm", "kind", "Kustomization") != 1 ||
		fluxtest.HasSeries(t, served, "cluster", "no-helm", "kind", "HelmRelease") ||
		fluxtest.HasSeries(t, served, "cluster", "no-helm", "kind", "Canary") {
		t.Fatalf("kind_served: %s", fluxtest.Series(t, served))
	}

	// A push is requested in it as anywhere.
	repo := "org/nohelm-" + fluxtest.RandomHex(3)
	ns := "apps"
	if err := k.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{
		fluxtest.GitRepository(ns, "app", "https://"+fluxtest.ForgeHost+"/"+repo, &sourcev1.GitRepositoryRef{Branch: "main"}),
		fluxtest.Kustomization(ns, "app", "", "app"),
	} {
		if err := k.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	r := fluxtest.NewRequester(t, cluster.NewSet(c))
	want := func(n int) func() bool {
		return func() bool {
			res, err := r.Request(ctx, fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA()))
			return err == nil && len(res.Targets) == n
		}
	}
	fluxtest.WaitFor(t, "GitRepository and Kustomization requested", want(2))

	// HelmRelease served only at an older version: reported, not used.
	ext, err := apiextensions.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	old := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "helmreleases.helm.toolkit.fluxcd.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "helm.toolkit.fluxcd.io", Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "helmreleases", Singular: "helmrelease", Kind: "HelmRelease", ListKind: "HelmReleaseList"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v2beta2", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: ptr(true)}}}},
		},
	}
	if _, err := envtest.InstallCRDs(k.Config, envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{old}, MaxTime: time.Minute}); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "the old HelmRelease reported unusable", func() bool {
		u := c.Unusable()
		return len(u) == 1 && strings.Contains(u[0], "HelmRelease served at v2beta2 only, flux-webhook reads v2: upgrade Flux")
	})
	if c.Serves(helmv2.HelmReleaseKind) || !fluxtest.HasSeries(t, served, "cluster", "no-helm", "kind", "HelmRelease") ||
		fluxtest.Counter(t, served, "cluster", "no-helm", "kind", "HelmRelease") != 0 {
		t.Fatalf("old HelmRelease: serves %v, kind_served %s", c.Serves(helmv2.HelmReleaseKind), fluxtest.Series(t, served))
	}

	// Flux upgraded: the real CRD, picked up without a restart.
	if err := ext.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "the old CRD gone", func() bool {
		_, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, old.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	file, err := testenv.CRDFile(helmReleases)
	if err != nil {
		t.Fatal(err)
	}
	changed := c.KindsChanged()
	if err := k.InstallCRDs(ctx, file); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("kinds did not change after the HelmRelease CRD was installed")
	}
	if !c.Serves(helmv2.HelmReleaseKind) || len(c.Unusable()) != 0 || fluxtest.Counter(t, served, "cluster", "no-helm", "kind", "HelmRelease") != 1 {
		t.Fatalf("after the install: kinds %v, unusable %v", kindNames(c), c.Unusable())
	}
	if err := k.Client.Create(ctx, fluxtest.HelmReleaseFromGit(ns, "app", ns, "app")); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "the HelmRelease matched through its index", want(3))
}

func kindNames(c *cluster.Cluster) []string {
	var out []string
	for _, k := range c.Kinds() {
		out = append(out, k.Name())
	}
	return slices.Sorted(slices.Values(out))
}

func ptr[T any](v T) *T { return &v }
