package gitea

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/semaphore"
	"k8s.io/utils/lru"

	"github.com/openova-io/flux-webhook/webhook"
)

// Limits of reading the registry: whoever may push to a package writes the manifest a
// package event makes flux-webhook read, and a signed event may name any package.
const (
	// maxManifestBytes bounds a manifest (or index) flux-webhook reads, and every other
	// answer of the registry (its token answers are a few KiB): a Flux artifact's or a Helm
	// chart's manifest is about 1 KiB, an index of many platforms a few. A larger one is not
	// read: its tag is still requested, its results stay in the stream and the logs.
	maxManifestBytes = 256 << 10
	// maxManifestReads bounds the registry reads in flight per replica, whatever the number
	// of package events: at most this many times maxManifestBytes in memory. A read waits
	// for a slot within the claim's time budget (then the event is answered 503, to retry).
	maxManifestReads = 4
	// manifestCacheEntries bounds the annotations kept by manifest digest (a few hundred
	// bytes each; a manifest recording more than maxCachedAnnotations is read each time):
	// the same artifact announced again (the workflow's post and Gitea's event, another tag
	// of it) costs a HEAD, not a read.
	manifestCacheEntries = 1024
	// maxCachedAnnotations bounds the annotations of one cache entry.
	maxCachedAnnotations = 4 << 10
)

// registry is the state of the registry reads: the slots and the cache by digest.
type registry struct {
	once  sync.Once
	slots *semaphore.Weighted
	cache *lru.Cache // manifest digest → annotations
}

// annotations are what flux-webhook reads of a manifest.
type annotations struct{ source, revision string }

func (r *registry) init() {
	r.once.Do(func() {
		r.slots, r.cache = semaphore.NewWeighted(maxManifestReads), lru.New(manifestCacheEntries)
	})
}

// Artifact reads a tag of Gitea's container registry, served on Gitea's own host, with
// flux-webhook's token (scope read:package): its OCI repository URL, and the source and
// revision annotations of its manifest (or index). go-containerregistry speaks the
// registry's token protocol. The tag's digest is asked first (HEAD): a manifest seen before
// is answered from the cache, one larger than maxManifestBytes is not read; every answer is
// read through a bounded body; maxManifestReads at a time.
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
	g.registry.init()
	if err := g.registry.slots.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("read %s:%s: waiting for one of %d registry reads: %w", pkg, tag, maxManifestReads, err)
	}
	defer g.registry.slots.Release(1)
	tr := http.DefaultTransport
	if g.HTTP != nil && g.HTTP.Transport != nil {
		tr = g.HTTP.Transport
	}
	puller, err := remote.NewPuller(remote.WithContext(ctx), remote.WithTransport(boundedTransport{tr}),
		remote.WithAuth(&authn.Basic{Username: login, Password: g.token()}))
	if err != nil {
		return nil, fmt.Errorf("read %s:%s: %w", pkg, tag, err)
	}
	art := &webhook.Artifact{URL: "oci://" + strings.ToLower(u.Host) + "/" + pkg}
	head, err := puller.Head(ctx, ref)
	if err != nil {
		return nil, registryError(pkg, tag, err)
	}
	if v, ok := g.registry.cache.Get(head.Digest.String()); ok {
		a := v.(annotations)
		art.Source, art.Revision = a.source, a.revision
		return art, nil
	}
	if head.Size > maxManifestBytes {
		art.Unread = fmt.Sprintf("its manifest is %d bytes, more than the %d read", head.Size, maxManifestBytes)
		return art, nil
	}
	// By digest: what is read is what was asked about (go-containerregistry checks it).
	desc, err := puller.Get(ctx, ref.Context().Digest(head.Digest.String()))
	if err != nil {
		return nil, registryError(pkg, tag, err)
	}
	var ann map[string]string
	if desc.MediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("read %s:%s: %w", pkg, tag, err)
		}
		ann = idx.Annotations
	} else {
		m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("read %s:%s: %w", pkg, tag, err)
		}
		ann = m.Annotations
	}
	art.Source, art.Revision = ann[ocispec.AnnotationSource], ann[ocispec.AnnotationRevision]
	if len(art.Source)+len(art.Revision) <= maxCachedAnnotations {
		g.registry.cache.Add(head.Digest.String(), annotations{art.Source, art.Revision})
	}
	return art, nil
}

// registryError maps a registry answer: no such tag is webhook.ErrNotFound.
func registryError(pkg, tag string, err error) error {
	var terr *transport.Error
	switch {
	case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
		return fmt.Errorf("read %s:%s: %w", pkg, tag, webhook.ErrNotFound)
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return fmt.Errorf("read %s:%s: gitea answered %d: the token needs scope read:package", pkg, tag, terr.StatusCode)
	}
	return fmt.Errorf("read %s:%s: %w", pkg, tag, err)
}

// errTooLarge: an answer of the registry is larger than maxManifestBytes.
var errTooLarge = fmt.Errorf("registry answer larger than %d bytes", maxManifestBytes)

// boundedTransport reads at most maxManifestBytes of any answer of the registry.
type boundedTransport struct{ http.RoundTripper }

func (t boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &boundedBody{ReadCloser: resp.Body, left: maxManifestBytes}
	return resp, nil
}

// boundedBody fails a read beyond its bound, instead of returning a truncated answer.
type boundedBody struct {
	io.ReadCloser
	left int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, errTooLarge
	}
	return n, err
}
