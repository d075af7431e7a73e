package enroll

import (
	"context"
	"strings"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

// Keys of the scopes ConfigMap the platform writes: names separated by spaces, commas or
// new lines; '#' starts a comment to the end of its line.
const (
	ScopesOrganizations = "organizations"
	ScopesRepositories  = "repositories"
)

// ParseScopes parses the scopes ConfigMap's data. Entries that name no organization
// ("owner") or repository ("owner/name") are returned as refused, never enrolled.
func ParseScopes(data map[string]string) (scopes []credentials.Scope, refused []string) {
	for _, key := range []string{ScopesOrganizations, ScopesRepositories} {
		for line := range strings.SplitSeq(data[key], "\n") {
			line, _, _ = strings.Cut(line, "#")
			for _, name := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
				var s credentials.Scope
				var err error
				if key == ScopesOrganizations {
					s, err = credentials.OrganizationScope(name)
				} else {
					s, err = credentials.RepositoryScope(name)
				}
				if err != nil {
					refused = append(refused, key+": "+clip(name, 100))
					continue
				}
				scopes = append(scopes, s)
			}
		}
	}
	return scopes, refused
}

// Followed lists the repositories ("owner/name") the Flux sources of every cluster follow.
type Followed interface {
	Followed(ctx context.Context) ([]string, error)
}

// FluxSources lists, from every registered cluster's cache, the forge repositories its
// GitRepositories fetch: their URLs mapped to "owner/name" as statuses are (the forge's
// URL and --git-url-alias). A cluster whose cache is not synced is skipped until it is.
type FluxSources struct {
	Clusters     *cluster.Set
	Repositories *flux.Repositories
}

// Followed implements Followed.
func (f FluxSources) Followed(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, c := range f.Clusters.Clusters() {
		if !c.Ready() || !c.Serves(sourcev1.GitRepositoryKind) {
			continue
		}
		var list sourcev1.GitRepositoryList
		// Read only: no copy of every object per scan.
		if err := c.GetCache().List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
			continue // the cluster's own probe reports it
		}
		for i := range list.Items {
			if r, ok := f.Repositories.Of(list.Items[i].Spec.URL); ok && !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// clip cuts s to n bytes at most, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return record.Cut(s, n) + "…"
}
