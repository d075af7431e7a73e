package gitops

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Push is what the Flux side needs of a Gitea push.
type Push struct {
	// Delivery identifies the webhook delivery (X-Gitea-Delivery) or the Actions run.
	Delivery string
	// Repository is the pushed repository's full name, "owner/name".
	Repository string
	// URLs are the repository's clone, SSH and HTML URLs as Gitea reports them.
	URLs []string
	// Ref is the full pushed reference, e.g. "refs/heads/main".
	Ref string
	// SHA is the commit the reference now points at; Before the one it pointed at.
	SHA    string
	Before string
	// Head, when set, is where the reference has moved since the push (a later push, before
	// this one's delivery was verified): the push is recorded as superseded by Head on every
	// object it feeds, and not requested.
	Head string
}

// match returns the objects of one cluster that the push feeds, in request order: the
// GitRepositories whose URL (or an alias of it) and reference match, then the HelmCharts, Kustomizations and
// HelmReleases built from them. Every lookup goes through a cache index.
func match(ctx context.Context, r client.Reader, push Push, aliases []Alias) ([]client.Object, error) {
	var keys []string
	for _, u := range push.URLs {
		k, err := NormalizeURL(u)
		if err != nil {
			continue
		}
		for _, k := range expand(k, aliases) {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	var repos []client.Object
	for _, k := range keys {
		var list sourcev1.GitRepositoryList
		if err := r.List(ctx, &list, client.MatchingFields{IndexURL: k}); err != nil {
			return nil, fmt.Errorf("list gitrepositories: %w", err)
		}
		for i := range list.Items {
			if RefMatches(list.Items[i].Spec.Reference, push.Ref) {
				repos = append(repos, &list.Items[i])
			}
		}
	}
	var charts, kustomizations, releases []client.Object
	for _, repo := range repos {
		src := SourceKey(KindGitRepository, repo.GetNamespace(), repo.GetName())
		var hcs sourcev1.HelmChartList
		if err := r.List(ctx, &hcs, client.MatchingFields{IndexSource: src}); err != nil {
			return nil, fmt.Errorf("list helmcharts: %w", err)
		}
		var kss kustomizev1.KustomizationList
		if err := r.List(ctx, &kss, client.MatchingFields{IndexSource: src}); err != nil {
			return nil, fmt.Errorf("list kustomizations: %w", err)
		}
		var hrs helmv2.HelmReleaseList
		if err := r.List(ctx, &hrs, client.MatchingFields{IndexSource: src}); err != nil {
			return nil, fmt.Errorf("list helmreleases: %w", err)
		}
		for i := range hcs.Items {
			hc := &hcs.Items[i]
			charts = append(charts, hc)
			var byChart helmv2.HelmReleaseList
			if err := r.List(ctx, &byChart, client.MatchingFields{IndexSource: SourceKey(KindHelmChart, hc.Namespace, hc.Name)}); err != nil {
				return nil, fmt.Errorf("list helmreleases: %w", err)
			}
			for j := range byChart.Items {
				releases = append(releases, &byChart.Items[j])
			}
		}
		for i := range kss.Items {
			kustomizations = append(kustomizations, &kss.Items[i])
		}
		for i := range hrs.Items {
			releases = append(releases, &hrs.Items[i])
		}
	}
	var out []client.Object
	for _, group := range [][]client.Object{repos, charts, kustomizations, releases} {
		slices.SortFunc(group, func(a, b client.Object) int {
			return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
		})
		out = append(out, slices.CompactFunc(group, func(a, b client.Object) bool {
			return a.GetNamespace() == b.GetNamespace() && a.GetName() == b.GetName()
		})...)
	}
	return out, nil
}
