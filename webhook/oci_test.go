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
		// A signed event speaks for every package: the commit is believed for a repository
		// of the package's own owner only.
		{"the webhook, a package naming another owner's repository", credentials.Principal{Kind: credentials.Webhook}, claim("beta/manifests"),
			&Artifact{URL: "oci://gitea.example/beta/manifests", Source: "http://gitea.example/acme/fleet", Revision: "main@sha1:" + commit}, nil, ""},
		{"a full reference", org("acme"), claim("acme/manifests"), built("http://gitea.example/acme/fleet", "refs/heads/main@sha1:"+commit), nil, commit},
		{"no reference", org("acme"), claim("acme/manifests"), built("http://gitea.example/acme/fleet", "sha1:"+commit), nil, commit},
		{"a 100,000-byte reference", org("acme"), claim("acme/manifests"),
			built("http://gitea.example/acme/fleet", strings.Repeat("m", 100000)+"@sha1:"+commit), nil, ""},
		{"a reference of 256 bytes", org("acme"), claim("acme/manifests"),
			built("http://gitea.example/acme/fleet", strings.Repeat("m", 256)+"@sha1:"+commit), nil, ""},
		{"a reference Git refuses", org("acme"), claim("acme/manifests"), built("http://gitea.example/acme/fleet", "main..x@sha1:"+commit), nil, ""},
		{"a reference with a control character", org("acme"), claim("acme/manifests"), built("http://gitea.example/acme/fleet", "ma\nin@sha1:"+commit), nil, ""},
		{"a reference with a bidirectional override", org("acme"), claim("acme/manifests"), built("http://gitea.example/acme/fleet", "ma\u202ein@sha1:"+commit), nil, ""},
		{"a manifest too large to read", org("acme"), claim("acme/manifests"),
			&Artifact{URL: "oci://gitea.example/acme/manifests", Unread: "its manifest is 300000 bytes"}, nil, ""},
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
			if p.OCI.URL != tt.artifact.URL || p.SHA != tt.sha {
				t.Fatalf("requested %+v %+v, want the registry's URL and commit %q", p, p.OCI, tt.sha)
			}
			if (tt.sha != "") != (p.Repository == "acme/fleet") {
				t.Fatalf("repository %q", p.Repository)
			}
			if tt.sha == "" && (p.Ref != "" || p.Public) {
				t.Fatalf("without a commit, reference %.40q, public %v", p.Ref, p.Public)
			}
			if len(p.Ref) > MaxRefLength {
				t.Fatalf("a reference of %d bytes requested", len(p.Ref))
			}
		})
	}
}
