package webhook

import (
	"errors"
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

// A target (POST /hook/<owner>/<repo>[/<ref>][?sha=]) resolves to the push a push event of
// its commit would claim, and is then accepted like one.
func TestResolve(t *testing.T) {
	head, tagObject, old, forged := strings.Repeat("a", 40), strings.Repeat("d", 40), strings.Repeat("b", 40), strings.Repeat("c", 40)
	urls := []string{"http://gitea.example/Acme/App.git", "git@gitea.example:Acme/App.git", "http://gitea.example/Acme/App"}
	repoScope, _ := credentials.RepositoryScope("acme/app")
	otherScope, _ := credentials.RepositoryScope("acme/other")
	orgScope, _ := credentials.OrganizationScope("ACME")
	scoped := credentials.Principal{Kind: credentials.Scoped, Scope: repoScope}
	tests := []struct {
		name      string
		principal credentials.Principal
		target    Target
		forgeErr  error
		noForge   bool
		renamed   bool
		empty     bool
		want      error
		errHas    string
		notHas    string // what the error must not say
		ref, sha  string // of the resolved push
		stale     bool   // accepted as superseded
		calls     int    // to the forge, by Resolve and Accept together
	}{
		{name: "the default branch", principal: scoped, target: Target{Repository: "acme/app"}, ref: "refs/heads/main", sha: head, calls: 2},
		{name: "in Gitea's spelling", principal: scoped, target: Target{Repository: "ACME/app"}, ref: "refs/heads/main", sha: head, calls: 2},
		{name: "an organization's token", principal: credentials.Principal{Kind: credentials.Scoped, Scope: orgScope}, target: Target{Repository: "acme/app"}, ref: "refs/heads/main", sha: head, calls: 2},
		{name: "a branch by name", principal: scoped, target: Target{Repository: "acme/app", Ref: "release/1.2"}, ref: "refs/heads/release/1.2", sha: old, calls: 2},
		{name: "a branch before a tag of the same name", principal: scoped, target: Target{Repository: "acme/app", Ref: "both"}, ref: "refs/heads/both", sha: head, calls: 2},
		{name: "a lightweight tag by name", principal: scoped, target: Target{Repository: "acme/app", Ref: "v1"}, ref: "refs/tags/v1", sha: head, calls: 3},
		{name: "an annotated tag by name: its commit", principal: scoped, target: Target{Repository: "acme/app", Ref: "v2"}, ref: "refs/tags/v2", sha: head, calls: 3},
		{name: "a full reference", principal: scoped, target: Target{Repository: "acme/app", Ref: "refs/tags/v2"}, ref: "refs/tags/v2", sha: head, calls: 2},
		{name: "a tag's full name is not tried as a branch", principal: scoped, target: Target{Repository: "acme/app", Ref: "refs/heads/v1"}, want: ErrTargetNotFound, errHas: "Acme/App has no reference refs/heads/v1", calls: 2},
		{name: "the pinned commit", principal: scoped, target: Target{Repository: "acme/app", SHA: head}, ref: "refs/heads/main", sha: head, calls: 2},
		{name: "a pinned commit the branch moved on from", principal: scoped, target: Target{Repository: "acme/app", SHA: old}, ref: "refs/heads/main", sha: old, stale: true, calls: 4},
		{name: "a pinned commit the repository does not have", principal: scoped, target: Target{Repository: "acme/app", SHA: forged}, ref: "refs/heads/main", sha: forged, want: ErrContradicted, errHas: "has no commit", calls: 6},
		{name: "a token of another repository: Gitea not asked", principal: credentials.Principal{Kind: credentials.Scoped, Scope: otherScope}, target: Target{Repository: "acme/app"}, want: credentials.ErrForbidden, errHas: "may not push for acme/app"},
		{name: "no credentials: Gitea not asked", target: Target{Repository: "acme/app"}, want: credentials.ErrForbidden},
		{name: "no such repository", principal: credentials.Principal{Kind: credentials.Shared}, target: Target{Repository: "acme/gone"}, want: ErrTargetNotFound, errHas: "gitea has no repository acme/gone", calls: 1},
		{name: "a renamed repository", principal: scoped, target: Target{Repository: "acme/app"}, renamed: true, want: ErrTargetNotFound, errHas: "gitea has no repository acme/app under that name", notHas: "Renamed", calls: 1},
		{name: "no such branch or tag", principal: scoped, target: Target{Repository: "acme/app", Ref: "nope"}, want: ErrTargetNotFound, errHas: "Acme/App has no branch or tag nope", calls: 3},
		{name: "an empty repository", principal: scoped, target: Target{Repository: "acme/app"}, empty: true, want: ErrTargetNotFound, errHas: "has no default branch", calls: 1},
		{name: "gitea unreachable", principal: scoped, target: Target{Repository: "acme/app"}, forgeErr: errors.New("dial tcp: connection refused"), want: ErrForgeUnavailable, calls: 1},
		{name: "no forge", principal: scoped, target: Target{Repository: "acme/app"}, noForge: true, want: ErrNoForge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forge := &fakeForge{
				repo: &Repository{FullName: "Acme/App", URLs: urls, DefaultBranch: "main"},
				refs: map[string][]string{"refs/heads/main": {head}, "refs/heads/release/1.2": {old}, "refs/heads/both": {head},
					"refs/tags/both": {old}, "refs/tags/v1": {head}, "refs/tags/v2": {tagObject, head}},
				commits: map[string]bool{head: true, old: true},
				history: []string{head, old},
				err:     tt.forgeErr,
			}
			switch {
			case tt.renamed:
				forge.repo.FullName = "Acme/Renamed"
				forge.rename = "acme/app"
			case tt.empty:
				forge.repo.DefaultBranch = ""
			}
			req := &recordingRequester{}
			in := &Intake{Forge: forge, Requester: req}
			if tt.noForge {
				in.Forge = nil
			}
			push, err := in.Resolve(t.Context(), tt.principal, "d-1", tt.target)
			var acc Accepted
			if err == nil {
				if push.Delivery != "d-1" || push.Repository != "Acme/App" || len(push.URLs) != 3 || push.Ref != tt.ref || push.SHA != tt.sha || push.Before != "" {
					t.Fatalf("resolved %+v, want %s at %s", push, tt.ref, tt.sha)
				}
				acc, err = in.Accept(t.Context(), tt.principal, push)
			}
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) || !strings.Contains(errText(err), tt.errHas) {
				t.Fatalf("%v, want %v saying %q", err, tt.want, tt.errHas)
			}
			if tt.notHas != "" && strings.Contains(errText(err), tt.notHas) {
				t.Fatalf("%v: says %q", err, tt.notHas)
			}
			if tt.want == nil && (len(req.pushes) != 1 || (acc.Push.Head != "") != tt.stale) {
				t.Fatalf("requested %+v, stale %v", req.pushes, tt.stale)
			}
			if forge.calls != tt.calls {
				t.Fatalf("%d calls to Gitea, want %d", forge.calls, tt.calls)
			}
		})
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The short form's repeats cost one look at the reference each (where it is now), the
// repository being asked once a minute, and its claim verified once.
func TestResolveRepeats(t *testing.T) {
	head, next := strings.Repeat("a", 40), strings.Repeat("b", 40)
	forge := &fakeForge{repo: &Repository{FullName: "acme/app", URLs: []string{"http://gitea.example/acme/app"}, DefaultBranch: "main"},
		refs: map[string][]string{"refs/heads/main": {head}}, commits: map[string]bool{head: true, next: true}}
	req := &recordingRequester{}
	in := &Intake{Forge: forge, Requester: req}
	p := credentials.Principal{Kind: credentials.Shared}
	for i := range 3 {
		push, err := in.Resolve(t.Context(), p, "d", Target{Repository: "acme/app"})
		if err == nil {
			_, err = in.Accept(t.Context(), p, push)
		}
		if err != nil || push.SHA != head {
			t.Fatalf("request %d: %+v %v", i, push, err)
		}
	}
	if forge.calls != 4 {
		t.Fatalf("%d calls to Gitea for 3 requests, want 4 (the repository once, the branch each time)", forge.calls)
	}
	// A push made since is what the next request finds, however recent the last look.
	forge.mu.Lock()
	forge.refs["refs/heads/main"] = []string{next}
	forge.mu.Unlock()
	push, err := in.Resolve(t.Context(), p, "d", Target{Repository: "acme/app"})
	if err != nil || push.SHA != next {
		t.Fatalf("after a push: %+v %v", push, err)
	}
}

func TestTargetAgrees(t *testing.T) {
	sha := strings.Repeat("a", 40)
	push := gitops.Push{Repository: "Acme/App", Ref: "refs/heads/release/1", SHA: sha}
	oci := gitops.Push{OCI: &gitops.OCI{Package: "acme/manifests", Tag: "latest"}}
	tests := []struct {
		target Target
		push   gitops.Push
		errHas string
	}{
		{Target{}, push, ""},
		{Target{Repository: "acme/app"}, push, ""},
		{Target{Repository: "acme/app", Ref: "release/1", SHA: sha}, push, ""},
		{Target{Repository: "acme/app", Ref: "refs/heads/release/1"}, push, ""},
		{Target{SHA: sha}, push, ""},
		{Target{Repository: "acme/manifests"}, oci, ""},
		{Target{Repository: "acme/other"}, push, "the path names acme/other, the payload's repository is Acme/App"},
		{Target{Repository: "acme/app", Ref: "main"}, push, "the path names the reference main"},
		{Target{Repository: "acme/app", Ref: "refs/tags/release/1"}, push, "the path names the reference"},
		{Target{SHA: strings.Repeat("b", 40)}, push, "the payload's commit is"},
		{Target{Repository: "acme/app"}, oci, "the payload's package is acme/manifests"},
		{Target{Repository: "acme/manifests", Ref: "main"}, oci, "the path names the reference"},
	}
	for _, tt := range tests {
		err := tt.target.Agrees(tt.push)
		if (tt.errHas == "") != (err == nil) || (err != nil && (!errors.Is(err, ErrBadTarget) || !strings.Contains(err.Error(), tt.errHas))) {
			t.Errorf("%+v agrees with %+v: %v, want %q", tt.target, tt.push, err, tt.errHas)
		}
	}
}
