package webhook

import (
	"errors"
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

func TestIntakeOCI(t *testing.T) {
	commit, unknown := strings.Repeat("a", 40), strings.Repeat("f", 40)
	urls := []string{"http://gitea.example/acme/fleet.git", "http://gitea.example/acme/fleet"}
	repos, err := flux.NewRepositories("http://gitea.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	claim := func(pkg string) gitops.Push {
		// What the event claims: its URL is the page's host, replaced by the registry's.
		return gitops.Push{Delivery: "d", OCI: &gitops.OCI{Package: pkg, Tag: "latest", URL: "oci://evil.example/" + pkg},
			Repository: "acme/evil", SHA: unknown}
	}
	org := func(name string) credentials.Principal {
		s, _ := credentials.OrganizationScope(name)
		return credentials.Principal{Kind: credentials.Scoped, Scope: s}
	}
	built := func(source, revision string) *Artifact {
		return &Artifact{URL: "oci://gitea.example/acme/manifests", Source: source, Revision: revision}
	}
	for _, tt := range []struct {
		name      string
		principal credentials.Principal
		push      gitops.Push
		artifact  *Artifact
		want      error
		sha       string // the commit statuses go to; "" none
	}{
		{"built from a commit of the forge", org("acme"), claim("acme/manifests"), built("http://gitea.example/acme/fleet.git", "main@sha1:"+commit), nil, commit},
		{"the webhook speaks for any package", credentials.Principal{Kind: credentials.Webhook}, claim("acme/manifests"),
			built("http://gitea.example/acme/fleet", "main@sha1:"+commit), nil, commit},
		{"records no commit", org("acme"), claim("acme/manifests"), built("", ""), nil, ""},
		{"records a revision without a commit", org("acme"), claim("acme/manifests"), built("http://gitea.example/acme/fleet", "main"), nil, ""},
		{"a commit the repository does not have", org("acme"), claim("acme/manifests"), built("http://gitea.example/acme/fleet", "main@sha1:"+unknown), nil, ""},
		{"a source elsewhere", org("acme"), claim("acme/manifests"), built("https://github.com/acme/fleet", "main@sha1:"+commit), nil, ""},
		{"a source the sender does not speak for", org("acme"), claim("acme/manifests"), built("http://gitea.example/beta/fleet", "main@sha1:"+commit), nil, ""},
		{"a token of another owner", org("beta"), claim("acme/manifests"), built("", ""), credentials.ErrForbidden, ""},
		{"a tag the registry does not have", org("acme"), claim("acme/other"), built("", ""), ErrContradicted, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			forge := &fakeForge{repo: &Repository{FullName: "acme/fleet", URLs: urls}, commits: map[string]bool{commit: true}, artifact: tt.artifact}
			req := &recordingRequester{}
			in := &Intake{Forge: forge, Requester: req, Repositories: repos}
			_, err := in.Accept(t.Context(), tt.principal, tt.push)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Accept = %v, want %v", err, tt.want)
			}
			if tt.want != nil {
				if len(req.pushes) != 0 {
					t.Fatalf("requested %+v", req.pushes)
				}
				return
			}
			if len(req.pushes) != 1 {
				t.Fatalf("requested %d times", len(req.pushes))
			}
			p := req.pushes[0]
			if p.OCI.URL != "oci://gitea.example/acme/manifests" || p.SHA != tt.sha {
				t.Fatalf("requested %+v %+v, want the registry's URL and commit %q", p, p.OCI, tt.sha)
			}
			if (tt.sha != "") != (p.Repository == "acme/fleet") {
				t.Fatalf("repository %q", p.Repository)
			}
		})
	}
}
