package gitops

import (
	"context"
	"fmt"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Cache field indexes. Lookups on /hook go through them: no List of the cluster per request.
const (
	// IndexURL indexes GitRepositories by NormalizeURL(spec.url).
	IndexURL = "flux-webhook.openova.io/url"
	// IndexSource indexes HelmCharts, Kustomizations and HelmReleases by the source they
	// are built from, as SourceKey(kind, namespace, name).
	IndexSource = "flux-webhook.openova.io/source"
)

// SourceKey is the IndexSource value naming a source object.
func SourceKey(kind, namespace, name string) string {
	return kind + "/" + namespace + "/" + name
}

// GitRepositoryURL is the IndexURL index function.
func GitRepositoryURL(o client.Object) []string {
	repo, ok := o.(*sourcev1.GitRepository)
	if !ok {
		return nil
	}
	key, err := NormalizeURL(repo.Spec.URL)
	if err != nil {
		return nil
	}
	return []string{key}
}

// KustomizationSource is the IndexSource index function of Kustomizations.
func KustomizationSource(o client.Object) []string { return gitSource(o) }

// HelmChartSource is the IndexSource index function of HelmCharts (a HelmChart's source is
// always in its own namespace).
func HelmChartSource(o client.Object) []string { return gitSource(o) }

func gitSource(o client.Object) []string {
	if ref, _ := sourceRefs(o); ref != nil {
		return []string{SourceKey(KindGitRepository, ref.Namespace, ref.Name)}
	}
	return nil
}

// HelmReleaseSource is the IndexSource index function of HelmReleases. A chart template
// (spec.chart) from a GitRepository yields both that GitRepository and the HelmChart
// helm-controller generates from it; spec.chartRef yields the referenced HelmChart.
func HelmReleaseSource(o client.Object) []string {
	hr, ok := o.(*helmv2.HelmRelease)
	if !ok {
		return nil
	}
	if c := hr.Spec.Chart; c != nil && c.Spec.SourceRef != nil && c.Spec.SourceRef.Kind == KindGitRepository {
		ns := c.Spec.SourceRef.Namespace
		if ns == "" {
			ns = hr.Namespace
		}
		keys := []string{SourceKey(KindGitRepository, ns, c.Spec.SourceRef.Name)}
		if ref := hr.GetHelmChartTemplateReference(); ref != nil && ref.Kind == KindHelmChart {
			keys = append(keys, SourceKey(KindHelmChart, ref.Namespace, ref.Name))
		}
		return keys
	}
	if ref := hr.GetHelmChartReference(); ref != nil && ref.Kind == KindHelmChart {
		return []string{SourceKey(KindHelmChart, ref.Namespace, ref.Name)}
	}
	return nil
}

// SetupIndexes registers the field indexes on a cluster's cache. Call it before the cache
// starts.
func SetupIndexes(ctx context.Context, indexer client.FieldIndexer) error {
	for _, ix := range []struct {
		obj   client.Object
		field string
		fn    client.IndexerFunc
	}{
		{&sourcev1.GitRepository{}, IndexURL, GitRepositoryURL},
		{&sourcev1.HelmChart{}, IndexSource, HelmChartSource},
		{&kustomizev1.Kustomization{}, IndexSource, KustomizationSource},
		{&helmv2.HelmRelease{}, IndexSource, HelmReleaseSource},
	} {
		if err := indexer.IndexField(ctx, ix.obj, ix.field, ix.fn); err != nil {
			return fmt.Errorf("index %T %s: %w", ix.obj, ix.field, err)
		}
	}
	return nil
}
