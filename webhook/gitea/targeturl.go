package gitea

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/openova-io/flux-webhook/api"
)

// TargetPlaceholders are the placeholders a status target URL template may use: the Flux
// object a status is about, and the commit it is on.
var TargetPlaceholders = []string{"cluster", "kind", "namespace", "name", "repository", "commit"}

var placeholder = regexp.MustCompile(`\{([^{}]*)\}`)

// TargetURL is the link a commit status carries (Gitea's "Details"): a template whose
// placeholders name the Flux object and the commit, e.g. a Grafana dashboard, a Headlamp or
// Weave GitOps page. Each value is escaped where it stands: as a path segment before the
// query ("{repository}" as its two segments, owner/name), as a query value after it.
type TargetURL struct {
	template string
}

// DefaultTargetURL is the template of Gitea's own page of the commit.
func DefaultTargetURL(giteaURL string) string {
	return strings.TrimSuffix(giteaURL, "/") + "/{repository}/commit/{commit}"
}

// ParseTargetURL checks a template: every placeholder known, and with sample values an
// absolute http(s) URL.
func ParseTargetURL(template string) (*TargetURL, error) {
	for _, m := range placeholder.FindAllStringSubmatch(template, -1) {
		known := false
		for _, p := range TargetPlaceholders {
			known = known || m[1] == p
		}
		if !known {
			return nil, fmt.Errorf("unknown placeholder %s: want {%s}", m[0], strings.Join(TargetPlaceholders, "}, {"))
		}
	}
	if strings.ContainsAny(placeholder.ReplaceAllString(template, ""), "{}") {
		return nil, errors.New("unbalanced { or }")
	}
	t := &TargetURL{template: template}
	sample := t.Expand(api.Target{Cluster: "fra1", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"},
		"owner/repository", strings.Repeat("0", 40))
	u, err := url.Parse(sample)
	if err != nil {
		return nil, fmt.Errorf("not a URL once expanded: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("want an absolute http(s) URL, got %q once expanded", sample)
	}
	return t, nil
}

// Expand returns the URL of a status on commit sha of repository ("owner/name") about t.
func (t *TargetURL) Expand(target api.Target, repository, sha string) string {
	values := map[string]string{"cluster": target.Cluster, "kind": target.Kind, "namespace": target.Namespace,
		"name": target.Name, "repository": repository, "commit": sha}
	path, query, hasQuery := strings.Cut(t.template, "?")
	pathValue := func(name string) string {
		v := values[name]
		if name == "repository" {
			owner, repo, _ := strings.Cut(v, "/")
			return url.PathEscape(owner) + "/" + url.PathEscape(repo)
		}
		return url.PathEscape(v)
	}
	out := placeholder.ReplaceAllStringFunc(path, func(m string) string { return pathValue(m[1 : len(m)-1]) })
	if hasQuery {
		out += "?" + placeholder.ReplaceAllStringFunc(query, func(m string) string { return url.QueryEscape(values[m[1:len(m)-1]]) })
	}
	return out
}

func (t *TargetURL) String() string { return t.template }
