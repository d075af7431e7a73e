package gitea

import (
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/api"
)

func TestTargetURL(t *testing.T) {
	target := api.Target{Cluster: "fra1", Kind: "HelmRelease", Namespace: "team a", Name: "app?x"}
	sha := strings.Repeat("ab", 20)
	for _, tc := range []struct{ template, want string }{
		{DefaultTargetURL("https://gitea.example.com/"), "https://gitea.example.com/Org/my%20app/commit/" + sha},
		// Path segments before the query, query values after it.
		{"https://headlamp.example.com/c/{cluster}/flux/{kind}/{namespace}/{name}",
			"https://headlamp.example.com/c/fra1/flux/HelmRelease/team%20a/app%3Fx"},
		{"https://grafana.example.com/d/flux?var-cluster={cluster}&var-repo={repository}&var-name={name}&sha={commit}",
			"https://grafana.example.com/d/flux?var-cluster=fra1&var-repo=Org%2Fmy+app&var-name=app%3Fx&sha=" + sha},
		{"https://{cluster}.weave.example.com/helm_release/details?name={name}&namespace={namespace}",
			"https://fra1.weave.example.com/helm_release/details?name=app%3Fx&namespace=team+a"},
	} {
		u, err := ParseTargetURL(tc.template)
		if err != nil {
			t.Fatalf("%s: %v", tc.template, err)
		}
		if got := u.Expand(target, "Org/my app", sha); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.template, got, tc.want)
		}
	}
	for template, want := range map[string]string{
		"https://grafana.example.com/d/{dashboard}":    "unknown placeholder {dashboard}",
		"https://grafana.example.com/d/{Cluster}":      "unknown placeholder {Cluster}",
		"https://grafana.example.com/d/{cluster":       "unbalanced",
		"https://grafana.example.com/d/}{cluster}":     "unbalanced",
		"/d/flux?cluster={cluster}":                    "absolute http(s) URL",
		"ftp://files.example.com/{repository}":         "absolute http(s) URL",
		"{repository}/commit/{commit}":                 "absolute http(s) URL",
		"https://grafana.example.com:port/d/{cluster}": "not a URL",
		"": "absolute http(s) URL",
	} {
		if _, err := ParseTargetURL(template); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", template, err, want)
		}
	}
}
