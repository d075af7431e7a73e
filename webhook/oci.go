package webhook

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

// maxRevisionBytes bounds the revision annotation an artifact may record for flux-webhook
// to read a commit from it: a reference of MaxRefLength, "@sha256:" and a SHA-256 commit id.
const maxRevisionBytes = MaxRefLength + len("@sha256:") + 64

// Artifact is a tag of the forge's registry, as the registry serves it.
type Artifact struct {
	// URL is its OCI repository, "oci://host/owner/name", at the registry's own host.
	URL string
	// Source and Revision are the manifest's org.opencontainers.image.source and
	// org.opencontainers.image.revision annotations ("" when absent): the Git repository
	// and the Flux revision ("main@sha1:<commit>") it was built from, as `flux push
	// artifact --source --revision` records them.
	Source, Revision string
	// Unread, when set, says why the manifest's annotations were not read (it is larger
	// than flux-webhook reads): the tag is still requested, its results go to the stream
	// and the logs only.
	Unread string
}

// acceptOCI verifies a registry push: the sender speaks for the OCI repository, the
// registry holds the tag, and the commit the artifact records is one of a repository of the
// forge the sender speaks for too, of the package's own owner; only then do statuses go to
// that commit. An artifact that records none (or one flux-webhook cannot verify) is still
// requested: its results are in the stream and the logs.
func (in *Intake) acceptOCI(ctx context.Context, principal credentials.Principal, p gitops.Push) (Accepted, error) {
	oci := *p.OCI
	p.OCI, p.Repository, p.Ref, p.SHA, p.Before, p.URLs, p.Head, p.Public = &oci, "", "", "", "", nil, "", false
	if !principal.MaySpeakFor(oci.Package) {
		return Accepted{}, fmt.Errorf("%w: a %s may not push for %s", credentials.ErrForbidden, principal, oci.Package)
	}
	if in.Forge != nil {
		vctx, cancel := context.WithTimeout(ctx, claimTimeout)
		err := in.verifyOCI(vctx, principal, &p)
		cancel()
		if err != nil {
			return Accepted{Push: p}, err
		}
	}
	if p.OCI.URL == "" {
		return Accepted{}, fmt.Errorf("%w: package.html_url is missing: the registry is unknown", ErrBadPayload)
	}
	res, err := in.Requester.Accept(ctx, p)
	return Accepted{Push: p, Result: res}, err
}

// verifyOCI reads the pushed tag from the forge's registry, and the commit it records.
// Whoever may push to the package wrote the artifact's annotations, and a signed package
// event speaks for every package: the commit is believed only when the revision is a
// well-formed one (a reference Git accepts, a commit id) and names a repository of the
// package's own owner that has that commit.
func (in *Intake) verifyOCI(ctx context.Context, principal credentials.Principal, p *gitops.Push) error {
	logger := log.FromContext(ctx)
	art, err := in.Forge.Artifact(ctx, p.OCI.Package, p.OCI.Tag)
	switch {
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("%w: the registry has no %s:%s", ErrContradicted, p.OCI.Package, p.OCI.Tag)
	case err != nil:
		return unavailable(err)
	}
	p.OCI.URL = art.URL
	only := func(msg string, kv ...any) error {
		logger.Info(msg+": results in the stream and the logs only", append([]any{"package", p.OCI.Package, "tag", p.OCI.Tag}, kv...)...)
		return nil
	}
	if art.Unread != "" {
		return only("artifact's annotations not read", "reason", art.Unread)
	}
	if len(art.Revision) > maxRevisionBytes {
		return only("artifact's revision refused", "reason", fmt.Sprintf("%d bytes, more than %d", len(art.Revision), maxRevisionBytes))
	}
	ref, commit := flux.ParseRevision(art.Revision)
	if art.Source == "" || commit == "" {
		return only("artifact records no commit")
	}
	if ref != "" && !ValidRefName(ref) {
		return only("artifact's revision refused", "reason", "its reference is not one Git accepts", "revision", Clip(art.Revision, 100))
	}
	repo, ok := "", false
	if in.Repositories != nil {
		repo, ok = in.Repositories.Of(art.Source)
	}
	if !ok || !principal.MaySpeakFor(repo) {
		return only("artifact's source is no repository of the forge this sender speaks for", "source", Clip(art.Source, 200))
	}
	if owner, _, _ := strings.Cut(repo, "/"); !strings.EqualFold(owner, packageOwner(p.OCI.Package)) {
		return only("artifact's source is a repository of another owner than the package's", "source", repo)
	}
	info, err := in.repository(ctx, repo)
	if err != nil {
		if errors.Is(err, ErrContradicted) {
			return only("artifact's source repository not found", "source", repo)
		}
		return err
	}
	exists, err := in.Forge.CommitExists(ctx, info.FullName, commit)
	switch {
	case err != nil:
		return unavailable(err)
	case !exists:
		return only("artifact's commit not in its source repository", "source", info.FullName, "commit", api.ShortSHA(commit))
	}
	p.Repository, p.Ref, p.SHA, p.URLs, p.Public = info.FullName, ref, commit, info.URLs, info.Public
	return nil
}

// packageOwner returns the owner of a package "owner/name".
func packageOwner(pkg string) string {
	owner, _, _ := strings.Cut(pkg, "/")
	return owner
}
