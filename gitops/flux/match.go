package flux

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Cache field indexes, set up on every cluster's cache for the kinds it serves: matching a
// push lists through them, never the whole cluster.
const (
	// IndexURL indexes sources by the normalized URL they fetch from (Kind.URLs).
	IndexURL = "flux-webhook.openova.io/url"
	// IndexSource indexes objects by what they build from, as Ref.String().
	IndexSource = "flux-webhook.openova.io/source"
)

// SetupIndexes registers the field indexes of a kind on a cache. Call it before the cache
// starts serving the kind.
func SetupIndexes(ctx context.Context, indexer client.FieldIndexer, k Kind) error {
	if err := indexer.IndexField(ctx, k.New(), IndexURL, k.URLs); err != nil {
		return fmt.Errorf("index %s by url: %w", k.Name(), err)
	}
	err := indexer.IndexField(ctx, k.New(), IndexSource, func(o client.Object) []string {
		var keys []string
		for _, r := range k.Sources(o) {
			keys = append(keys, r.String())
		}
		return keys
	})
	if err != nil {
		return fmt.Errorf("index %s by source: %w", k.Name(), err)
	}
	return nil
}

// Match returns the objects of one cluster a push feeds, in request order (a source before
// what builds from it): the sources whose URL is one of the pushed repository's and which
// follow what was pushed, then everything built from them that follows it too, as far as it
// goes. Only kinds the cluster serves (served) are looked at; every lookup goes through the
// cache's indexes.
func Match(ctx context.Context, r client.Reader, p Pushed, served []Kind) ([]client.Object, error) {
	seen := map[Ref]bool{}
	var found, queue []client.Object
	add := func(o client.Object) {
		if ref := RefOf(o); !seen[ref] {
			seen[ref] = true
			found, queue = append(found, o), append(queue, o)
		}
	}
	keys := slices.Clone(p.URLs)
	if p.OCI() {
		for _, u := range p.URLs { // a chart's registry path, where an OCI HelmRepository points
			if i := strings.LastIndexByte(u, '/'); i > 0 {
				keys = append(keys, u[:i])
			}
		}
	}
	for _, k := range served {
		for _, key := range keys {
			list := k.NewList()
			if err := r.List(ctx, list, client.MatchingFields{IndexURL: key}); err != nil {
				return nil, fmt.Errorf("list %s: %w", k.Name(), err)
			}
			for _, o := range Items(list) {
				if k.Follows(o, p, nil) {
					add(o)
				}
			}
		}
	}
	for len(queue) > 0 {
		via := queue[0]
		queue = queue[1:]
		for _, k := range served {
			list := k.NewList()
			if err := r.List(ctx, list, client.MatchingFields{IndexSource: RefOf(via).String()}); err != nil {
				return nil, fmt.Errorf("list %s: %w", k.Name(), err)
			}
			for _, o := range Items(list) {
				if k.Follows(o, p, via) {
					add(o)
				}
			}
		}
	}
	stage := func(o client.Object) int { k, _ := KindFor(o); return k.Stage() }
	found = slices.DeleteFunc(found, func(o client.Object) bool { k, _ := KindFor(o); return !k.Target() })
	slices.SortStableFunc(found, func(a, b client.Object) int {
		return cmp.Or(cmp.Compare(stage(a), stage(b)), cmp.Compare(KindOf(a), KindOf(b)),
			cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	return found, nil
}
