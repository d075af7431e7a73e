package gitea_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// The short form's targets, resolved by a real Gitea: the default branch, a branch with a
// slash, a lightweight and an annotated tag by name (a branch first), full references, a
// pinned commit the branch moved on from, and what Gitea does not have.
func TestGiteaResolvesTargets(t *testing.T) {
	integration(t)
	ctx := t.Context()
	repo, first := newRepo(t, "targets")
	if err := repo.WriteFile("b.txt", "b\n"); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit(ctx, "second")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.AnnotatedTag(ctx, "v2", "release v2"); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"v1", "v2"} {
		if err := repo.PushTag(ctx, tag); err != nil {
			t.Fatal(err)
		}
	}
	// A branch named like a tag, and one with a slash, at the first commit.
	if err := repo.Push(ctx, first+":refs/heads/v1", first+":refs/heads/release/1.2"); err != nil {
		t.Fatal(err)
	}
	empty, err := giteaSrv.CreateRepo(ctx, "targets-empty")
	if err != nil {
		t.Fatal(err)
	}
	req := &nopRequester{}
	in := &webhook.Intake{Forge: statusClient(t), Requester: req}
	scope, err := credentials.RepositoryScope(repo.FullName)
	if err != nil {
		t.Fatal(err)
	}
	scoped := credentials.Principal{Kind: credentials.Scoped, Scope: scope}
	shared := credentials.Principal{Kind: credentials.Shared}
	for _, tc := range []struct {
		name      string
		principal credentials.Principal
		target    webhook.Target
		ref, sha  string
		stale     bool
		want      error
		errHas    string
	}{
		{"the default branch", scoped, webhook.Target{Repository: strings.ToUpper(repo.FullName)}, "refs/heads/main", second, false, nil, ""},
		{"a branch with a slash", scoped, webhook.Target{Repository: repo.FullName, Ref: "release/1.2"}, "refs/heads/release/1.2", first, false, nil, ""},
		{"a branch before the tag of its name", scoped, webhook.Target{Repository: repo.FullName, Ref: "v1"}, "refs/heads/v1", first, false, nil, ""},
		{"the tag by its full name", scoped, webhook.Target{Repository: repo.FullName, Ref: "refs/tags/v1"}, "refs/tags/v1", second, false, nil, ""},
		{"an annotated tag: its commit", scoped, webhook.Target{Repository: repo.FullName, Ref: "v2"}, "refs/tags/v2", second, false, nil, ""},
		{"the pinned head", scoped, webhook.Target{Repository: repo.FullName, Ref: "main", SHA: second}, "refs/heads/main", second, false, nil, ""},
		{"a pinned commit main moved on from", scoped, webhook.Target{Repository: repo.FullName, SHA: first}, "refs/heads/main", first, true, nil, ""},
		{"a pinned commit main never had", scoped, webhook.Target{Repository: repo.FullName, SHA: strings.Repeat("f", 40)}, "refs/heads/main", strings.Repeat("f", 40), false, webhook.ErrContradicted, "has no commit"},
		{"no such branch or tag", scoped, webhook.Target{Repository: repo.FullName, Ref: "nope"}, "", "", false, webhook.ErrTargetNotFound, "has no branch or tag nope"},
		{"no such reference", scoped, webhook.Target{Repository: repo.FullName, Ref: "refs/notes/nope"}, "", "", false, webhook.ErrTargetNotFound, "has no reference refs/notes/nope"},
		{"no such repository", shared, webhook.Target{Repository: "gitea-admin/no-such-repository"}, "", "", false, webhook.ErrTargetNotFound, "gitea has no repository gitea-admin/no-such-repository"},
		{"a repository without a commit", shared, webhook.Target{Repository: empty.FullName}, "", "", false, webhook.ErrTargetNotFound, "(its default branch)"},
		{"another repository than the token's", scoped, webhook.Target{Repository: empty.FullName}, "", "", false, credentials.ErrForbidden, "may not push for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(req.pushes)
			push, err := in.Resolve(ctx, tc.principal, "d", tc.target)
			if err == nil && (push.Repository != repo.FullName || push.Ref != tc.ref || push.SHA != tc.sha || len(push.URLs) != 3) {
				t.Fatalf("resolved %+v, want %s at %s", push, tc.ref, tc.sha)
			}
			var acc webhook.Accepted
			if err == nil {
				acc, err = in.Accept(ctx, tc.principal, push)
			}
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
				t.Fatalf("%v, want %v saying %q", err, tc.want, tc.errHas)
			}
			if tc.want == nil && (len(req.pushes) != before+1 || (acc.Push.Head == second) != tc.stale) {
				t.Fatalf("accepted %+v, stale %v", acc.Push, tc.stale)
			}
		})
	}
	// What the server reads the path with, on the same repository.
	if tgt, err := (gitea.Events{}).Target(repo.FullName+"/release%2F1.2", nil); !errors.Is(err, webhook.ErrBadTarget) {
		t.Fatalf("an escaped slash: %+v %v", tgt, err)
	}
}
