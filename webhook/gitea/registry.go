package gitea

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/openova-io/flux-webhook/webhook"
)

// Artifact reads a tag of Gitea's container registry, served on Gitea's own host, with
// flux-webhook's token (scope read:package): its OCI repository URL, and the source and
// revision annotations of its manifest (or index). go-containerregistry speaks the
// registry's token protocol.
func (g *Gitea) Artifact(ctx context.Context, pkg, tag string) (*webhook.Artifact, error) {
	u, err := url.Parse(g.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("gitea url %q: no host", g.URL)
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewTag(u.Host+"/"+pkg+":"+tag, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s:%s is no OCI reference", webhook.ErrNotFound, pkg, tag)
	}
	_, login, err := g.bot(ctx)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport
	if g.HTTP != nil && g.HTTP.Transport != nil {
		tr = g.HTTP.Transport
	}
	desc, err := remote.Get(ref, remote.WithContext(ctx), remote.WithTransport(tr),
		remote.WithAuth(&authn.Basic{Username: login, Password: g.token()}))
	var terr *transport.Error
	switch {
	case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("read %s:%s: %w", pkg, tag, webhook.ErrNotFound)
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return nil, fmt.Errorf("read %s:%s: gitea answered %d: the token needs scope read:package", pkg, tag, terr.StatusCode)
	case err != nil:
		return nil, fmt.Errorf("read %s:%s: %w", pkg, tag, err)
	}
	var annotations map[string]string
	if desc.MediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("read %s:%s: %w", pkg, tag, err)
		}
		annotations = idx.Annotations
	} else {
		m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("read %s:%s: %w", pkg, tag, err)
		}
		annotations = m.Annotations
	}
	return &webhook.Artifact{
		URL:      "oci://" + strings.ToLower(u.Host) + "/" + pkg,
		Source:   annotations[ocispec.AnnotationSource],
		Revision: annotations[ocispec.AnnotationRevision],
	}, nil
}
