package webhook

import (
	"context"
	"errors"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

// Artifact is a tag of the forge's registry, as the registry serves it.
type Artifact struct {
	// URL is its OCI repository, "oci://host/owner/name", at the registry's own host.
	URL string
	// Source and Revision are the manifest's org.opencontainers.image.source and
	// org.opencontainers.image.revision annotations ("" when absent): the Git repository
	// and the Flux revision ("main@sha1:<commit>") it was built from, as `flux push
	// artifact --source --revision` records them.
	Source, Revision string
}

// acceptOCI verifies a registry push: the sender speaks for the OCI repository, the
// registry holds the tag, and the commit the artifact records is one of a repository of the
// forge the sender speaks for too; only then do statuses go to that commit. An artifact that
// records none (or one flux-webhook cannot verify) is still requested: its results are in
// the stream and the logs.
func (in *Intake) acceptOCI(ctx context.Context, principal credentials.Principal, p gitops.Push) (Accepted, error) {
	oci := *p.OCI
	p.OCI, p.Repository, p.Ref, p.SHA, p.Before, p.URLs, p.Head = &oci, "", "", "", "", nil, ""
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
	ref, commit := flux.ParseRevision(art.Revision)
	if art.Source == "" || commit == "" {
		logger.Info("artifact records no commit: results in the stream and the logs only", "package", p.OCI.Package, "tag", p.OCI.Tag)
		return nil
	}
	repo, ok := "", false
	if in.Repositories != nil {
		repo, ok = in.Repositories.Of(art.Source)
	}
	if !ok || !principal.MaySpeakFor(repo) {
		logger.Info("artifact's source is no repository of the forge this sender speaks for: results in the stream and the logs only",
			"package", p.OCI.Package, "tag", p.OCI.Tag, "source", Clip(art.Source, 200))
		return nil
	}
	info, err := in.repository(ctx, repo)
	if err != nil {
		if errors.Is(err, ErrContradicted) {
			logger.Info("artifact's source repository not found: results in the stream and the logs only", "source", repo)
			return nil
		}
		return err
	}
	exists, err := in.Forge.CommitExists(ctx, info.FullName, commit)
	switch {
	case err != nil:
		return unavailable(err)
	case !exists:
		logger.Info("artifact's commit not in its source repository: results in the stream and the logs only",
			"source", info.FullName, "commit", api.ShortSHA(commit))
		return nil
	}
	p.Repository, p.Ref, p.SHA, p.URLs = info.FullName, ref, commit, info.URLs
	return nil
}
