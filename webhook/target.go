package webhook

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

// Errors of a target, mapped to status codes by the server.
var (
	// ErrBadTarget: what the request names is no repository, reference or commit.
	ErrBadTarget = errors.New("bad target")
	// ErrTargetNotFound: the forge has no repository or reference a target names (or does
	// not show it to flux-webhook's token).
	ErrTargetNotFound = errors.New("not found")
	// ErrNoForge: a target needs the forge to say where its reference is, and flux-webhook
	// asks none (no forge configured, or claims not verified).
	ErrNoForge = errors.New("no forge to ask where the target is")
)

// Target is what a sender names instead of sending a push event (POST
// /hook/<owner>/<repo>[/<ref>][?sha=<commit>] with no body): the forge says where the
// reference is, and the push is the one a push event of that commit would claim.
type Target struct {
	// Repository is "owner/name" as the sender spells it; "" when the request names none.
	Repository string
	// Ref is a branch or tag name ("main", "release/1.2", "v1.0.0") or a full reference
	// ("refs/heads/main"); "" is the repository's default branch.
	Ref string
	// SHA, when set, pins the commit (a workflow's ${GITHUB_SHA}); else the reference's
	// current commit is taken.
	SHA string
}

// Candidates returns the full references a target's Ref may mean, in the order they are
// tried: a full reference ("refs/...") as is; a short name as a branch, then as a tag (as
// git rev-parse prefers refs/heads/ to refs/tags/). defaultBranch is the repository's.
func (t Target) Candidates(defaultBranch string) []string {
	switch {
	case t.Ref == "" && defaultBranch == "":
		return nil
	case t.Ref == "":
		return []string{"refs/heads/" + defaultBranch}
	case strings.HasPrefix(t.Ref, "refs/"):
		return []string{t.Ref}
	}
	return []string{"refs/heads/" + t.Ref, "refs/tags/" + t.Ref}
}

// Agrees checks a push event sent to a target's path (a body posted to
// /hook/<owner>/<repo>[/<ref>][?sha=]) against what the path names: its repository (or
// package), its reference and its commit, each when named.
func (t Target) Agrees(p gitops.Push) error {
	name, what := p.Repository, "repository"
	if p.OCI != nil {
		name, what = p.OCI.Package, "package"
	}
	switch {
	case t.Repository != "" && !strings.EqualFold(t.Repository, name):
		return fmt.Errorf("%w: the path names %s, the payload's %s is %s", ErrBadTarget, t.Repository, what, name)
	case t.Ref != "" && (p.OCI != nil || !t.names(p.Ref)):
		return fmt.Errorf("%w: the path names the reference %s, the payload %s", ErrBadTarget, t.Ref, Clip(p.What(), 300))
	case t.SHA != "" && t.SHA != p.SHA:
		return fmt.Errorf("%w: sha=%s, the payload's commit is %s", ErrBadTarget, t.SHA, p.SHA)
	}
	return nil
}

// names reports whether the target's Ref names the full reference ref.
func (t Target) names(ref string) bool {
	return ref == t.Ref || ref == "refs/heads/"+t.Ref || ref == "refs/tags/"+t.Ref
}

// Resolve turns a target into the push a push event of its commit would claim, on behalf of
// principal: the repository as the forge spells it and its URLs, the full reference, and its
// current commit (or the pinned one, which Accept then checks like every claim). Whether
// the principal may speak for the repository is checked before the forge is asked.
//
// The forge is asked for the repository (cached for repositoryTTL, as for every push) and
// for where the reference is: always a new look, taken after the request arrived, so that a
// push just made is what is found; Accept's verification then reuses it. A short name that
// is no branch costs one more look (as a tag).
func (in *Intake) Resolve(ctx context.Context, principal credentials.Principal, delivery string, t Target) (gitops.Push, error) {
	in.init()
	if !principal.MaySpeakFor(t.Repository) {
		return gitops.Push{}, fmt.Errorf("%w: a %s may not push for %s", credentials.ErrForbidden, principal, t.Repository)
	}
	if in.Forge == nil {
		return gitops.Push{}, ErrNoForge
	}
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	info, err := in.forgeRepository(ctx, t.Repository)
	switch {
	case errors.Is(err, ErrNotFound):
		return gitops.Push{}, fmt.Errorf("%w: gitea has no repository %s, or flux-webhook's Gitea token may not read it", ErrTargetNotFound, t.Repository)
	case err != nil:
		return gitops.Push{}, err
	case !strings.EqualFold(info.FullName, t.Repository):
		// Gitea answers a renamed repository's old name with the new one.
		return gitops.Push{}, fmt.Errorf("%w: %s", ErrTargetNotFound, RenamedAway(t.Repository))
	}
	for _, ref := range t.Candidates(info.DefaultBranch) {
		l, err := in.lookRef(ctx, info.FullName, ref)
		if err != nil {
			return gitops.Push{}, unavailable(err)
		}
		if l.missing || len(l.commits) == 0 {
			continue
		}
		sha := t.SHA
		if sha == "" {
			sha = l.commits[len(l.commits)-1] // an annotated tag's commit, after its tag object
		}
		return gitops.Push{Delivery: delivery, Repository: info.FullName, URLs: info.URLs, Ref: ref, SHA: sha}, nil
	}
	switch {
	case t.Ref == "" && info.DefaultBranch == "":
		return gitops.Push{}, fmt.Errorf("%w: %s has no default branch (no commit yet?)", ErrTargetNotFound, info.FullName)
	case t.Ref == "":
		return gitops.Push{}, fmt.Errorf("%w: %s has no branch %s (its default branch): nothing pushed yet?", ErrTargetNotFound, info.FullName, info.DefaultBranch)
	case strings.HasPrefix(t.Ref, "refs/"):
		return gitops.Push{}, fmt.Errorf("%w: %s has no reference %s", ErrTargetNotFound, info.FullName, t.Ref)
	}
	return gitops.Push{}, fmt.Errorf("%w: %s has no branch or tag %s", ErrTargetNotFound, info.FullName, t.Ref)
}

// lookRef asks the forge where a reference is now, not sharing a look begun before (a push
// made meanwhile would be missed), and keeps the answer for the verification that follows.
func (in *Intake) lookRef(ctx context.Context, repository, ref string) (refLook, error) {
	commits, err := in.Forge.RefCommits(ctx, repository, ref)
	l := refLook{commits: commits, at: in.now()}
	switch {
	case errors.Is(err, ErrNotFound):
		l.missing = true
	case err != nil:
		return refLook{}, err
	}
	in.storeRef(strings.ToLower(repository)+"\x00"+ref, l)
	return l, nil
}
