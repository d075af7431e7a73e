package testenv

// OCI artifacts and Helm charts in Gitea's container registry.
//
// Gitea serves an OCI distribution registry under /v2/ of its own address (packages are
// enabled by default): an artifact is HOST:PORT/OWNER/NAME:TAG, OWNER being a Gitea user
// or organisation, and it becomes a package of type "container" named NAME (lower-cased)
// with version TAG. Clients authenticate with HTTP basic (user and token or password),
// which Gitea's /v2/token endpoint turns into a bearer token; over plain http on loopback.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/fluxcd/pkg/oci"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Media types of Flux artifacts (as github.com/fluxcd/pkg/oci writes them) and of Helm
// charts stored as OCI artifacts (as `helm push` writes them).
const (
	FluxConfigMediaType  = "application/vnd.cncf.flux.config.v1+json"      // oci.CanonicalConfigMediaType
	FluxContentMediaType = "application/vnd.cncf.flux.content.v1.tar+gzip" // oci.CanonicalContentMediaType
	HelmConfigMediaType  = "application/vnd.cncf.helm.config.v1+json"
	HelmChartMediaType   = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// OCI manifest annotations (github.com/opencontainers/image-spec annotations.md) that Flux
// writes on an artifact and reads back: source-controller copies every manifest annotation
// into OCIRepository status.artifact.metadata, and kustomize-controller copies
// org.opencontainers.image.revision into Kustomization status.lastAppliedOriginRevision.
const (
	AnnotationSource   = oci.SourceAnnotation   // org.opencontainers.image.source
	AnnotationRevision = oci.RevisionAnnotation // org.opencontainers.image.revision
	AnnotationCreated  = oci.CreatedAnnotation  // org.opencontainers.image.created
)

// Registry returns the host:port of the Gitea's container registry, e.g. 127.0.0.1:PORT:
// image references are Registry()+"/OWNER/NAME:TAG", Flux URLs "oci://"+Registry()+"/OWNER/NAME".
func (g *Gitea) Registry() string {
	u, err := url.Parse(g.URL)
	if err != nil {
		return ""
	}
	return u.Host
}

// OCIURL returns the oci:// URL of the repository owner/name in the Gitea's registry, as an
// OCIRepository's spec.url (or, with just an owner, an OCI HelmRepository's spec.url).
func (g *Gitea) OCIURL(repository string) string {
	return "oci://" + g.Registry() + "/" + repository
}

// FluxArtifact is a directory of manifests to push as a Flux OCI artifact, as
// `flux push artifact oci://REGISTRY/REPOSITORY:TAG --path DIR --source SOURCE --revision REVISION` does.
type FluxArtifact struct {
	Dir        string // the directory to pack (tar+gzip); .git/ is always left out
	Repository string // OWNER/NAME in the registry; OWNER is a Gitea user or organisation
	Tag        string
	// Source and Revision become the manifest annotations org.opencontainers.image.source
	// (the Git repository's URL) and org.opencontainers.image.revision ("<branch>@sha1:<commit>",
	// see GitRevision), as `flux push artifact --source --revision` writes them.
	Source, Revision string
	Created          time.Time         // org.opencontainers.image.created; zero means now
	Annotations      map[string]string // more manifest annotations
	Ignore           []string          // more .gitignore-style patterns to leave out
	// Username and Password authenticate the push; empty means the admin and its token.
	Username, Password string
}

// PushFluxArtifact packs a.Dir and pushes it to the Gitea's registry in Flux's format with
// Flux's own library (github.com/fluxcd/pkg/oci): an OCI image manifest with config media
// type application/vnd.cncf.flux.config.v1+json, one layer of type
// application/vnd.cncf.flux.content.v1.tar+gzip, and the source, revision and created
// annotations. It returns the manifest's digest, "sha256:<hex>". Gitea sends a package
// "created" webhook event for every manifest pushed, also when a tag is pushed again.
func (g *Gitea) PushFluxArtifact(ctx context.Context, a FluxArtifact) (string, error) {
	if a.Dir == "" || a.Repository == "" || a.Tag == "" {
		return "", errors.New("push flux artifact: Dir, Repository and Tag are required")
	}
	ref := g.Registry() + "/" + a.Repository + ":" + a.Tag
	c := oci.NewClient([]crane.Option{crane.WithAuth(g.registryAuth(a.Username, a.Password)), crane.Insecure})
	meta := oci.Metadata{Source: a.Source, Revision: a.Revision, Annotations: a.Annotations}
	if !a.Created.IsZero() {
		meta.Created = a.Created.UTC().Format(time.RFC3339)
	}
	pushed, err := c.Push(ctx, ref, a.Dir,
		oci.WithPushMetadata(meta),
		oci.WithPushIgnorePaths(append([]string{".git/"}, a.Ignore...)...))
	if err != nil {
		return "", fmt.Errorf("push flux artifact %s: %w", ref, err)
	}
	// Push answers REGISTRY/REPOSITORY@sha256:<hex>.
	d, err := name.NewDigest(pushed, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("push flux artifact %s: digest %q: %w", ref, pushed, err)
	}
	return d.DigestStr(), nil
}

// HelmChartPackage is a Helm chart to push as an OCI artifact, as
// `helm package` then `helm push CHART.tgz oci://REGISTRY/OWNER` do (Helm 3.22): the chart
// lands at OWNER/NAME:VERSION.
type HelmChartPackage struct {
	Owner                         string // Gitea user or organisation
	Name, Version                 string // Chart.yaml name and version (semver)
	AppVersion, Description, Home string
	// Sources is Chart.yaml's sources: helm push writes the first one as the manifest
	// annotation org.opencontainers.image.source.
	Sources []string
	// Annotations is Chart.yaml's annotations: helm push copies them onto the manifest
	// (but org.opencontainers.image.title and .version), so a chart built in CI can carry
	// org.opencontainers.image.revision = "<branch>@sha1:<commit>".
	Annotations map[string]string
	Templates   map[string]string // file name under templates/ -> content
	Values      string            // values.yaml
	Created     time.Time         // org.opencontainers.image.created; zero means now
	// Username and Password authenticate the push; empty means the admin and its token.
	Username, Password string
}

// helmChartMeta is the part of Chart.yaml this package writes; as JSON it is also the
// OCI config blob, as helm push writes it.
type helmChartMeta struct {
	APIVersion  string            `json:"apiVersion"`
	Name        string            `json:"name"`
	Version     string            `json:"version"`
	AppVersion  string            `json:"appVersion,omitempty"`
	Description string            `json:"description,omitempty"`
	Home        string            `json:"home,omitempty"`
	Sources     []string          `json:"sources,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Type        string            `json:"type,omitempty"`
}

// PushHelmChart packages the chart (NAME/Chart.yaml, NAME/values.yaml,
// NAME/templates/*) and pushes it to the Gitea's registry at OWNER/NAME:VERSION with
// Helm's media types and the annotations helm push writes, using go-containerregistry.
// It returns the manifest's digest. Gitea records it as a package of type "container"
// (its metadata type "helm").
func (g *Gitea) PushHelmChart(ctx context.Context, c HelmChartPackage) (string, error) {
	if c.Owner == "" || c.Name == "" || c.Version == "" {
		return "", errors.New("push helm chart: Owner, Name and Version are required")
	}
	ref, err := name.NewTag(g.Registry()+"/"+c.Owner+"/"+c.Name+":"+c.Version, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("push helm chart: %w", err)
	}
	meta := helmChartMeta{APIVersion: "v2", Name: c.Name, Version: c.Version, AppVersion: c.AppVersion,
		Description: c.Description, Home: c.Home, Sources: c.Sources, Annotations: c.Annotations, Type: "application"}
	chartYAML, err := yaml.Marshal(meta)
	if err != nil {
		return "", fmt.Errorf("push helm chart: %w", err)
	}
	files := map[string]string{"Chart.yaml": string(chartYAML), "values.yaml": c.Values}
	for f, content := range c.Templates {
		files["templates/"+f] = content
	}
	tgz, err := tarGzip(c.Name, files)
	if err != nil {
		return "", fmt.Errorf("push helm chart: %w", err)
	}
	config, err := json.Marshal(meta)
	if err != nil {
		return "", fmt.Errorf("push helm chart: %w", err)
	}
	created := c.Created
	if created.IsZero() {
		created = time.Now()
	}
	// The manifest annotations helm push derives from the chart (pkg/registry/util.go).
	ann := map[string]string{}
	maps.Copy(ann, c.Annotations)
	for k, v := range map[string]string{
		"org.opencontainers.image.title":       c.Name,
		"org.opencontainers.image.version":     c.Version,
		"org.opencontainers.image.description": c.Description,
		"org.opencontainers.image.url":         c.Home,
		AnnotationCreated:                      created.UTC().Format(time.RFC3339),
	} {
		if v != "" {
			ann[k] = v
		}
	}
	if len(c.Sources) > 0 {
		ann[AnnotationSource] = c.Sources[0]
	}
	return g.pushManifest(ctx, ref, c.Username, c.Password, static.NewLayer(config, HelmConfigMediaType),
		[]v1.Layer{static.NewLayer(tgz, HelmChartMediaType)}, ann)
}

// pushManifest uploads the config and layer blobs and puts an OCI image manifest
// referencing them at ref, returning the manifest's digest.
func (g *Gitea) pushManifest(ctx context.Context, ref name.Tag, username, password string, config v1.Layer, layers []v1.Layer, annotations map[string]string) (string, error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(g.registryAuth(username, password))}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Annotations: annotations}
	for i, l := range append([]v1.Layer{config}, layers...) {
		if err := remote.WriteLayer(ref.Context(), l, opts...); err != nil {
			return "", fmt.Errorf("push %s: blob: %w", ref, err)
		}
		d, err := descriptor(l)
		if err != nil {
			return "", fmt.Errorf("push %s: %w", ref, err)
		}
		if i == 0 {
			m.Config = d
		} else {
			m.Layers = append(m.Layers, d)
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	if err := remote.Put(ref, rawManifest{raw, types.OCIManifestSchema1}, opts...); err != nil {
		return "", fmt.Errorf("push %s: manifest: %w", ref, err)
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return "", err
	}
	return h.String(), nil
}

func descriptor(l v1.Layer) (v1.Descriptor, error) {
	d, err := l.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	n, err := l.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := l.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Size: n, Digest: d}, nil
}

// rawManifest is a manifest as bytes, for remote.Put.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// tarGzip packs files (slash-separated paths under dir) as a deterministic tar+gzip.
func tarGzip(dir string, files map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range slices.Sorted(maps.Keys(files)) {
		content := files[f]
		hdr := &tar.Header{Name: path.Join(dir, f), Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg,
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// registryAuth is basic auth as username/password, or as the admin and its token.
func (g *Gitea) registryAuth(username, password string) authn.Authenticator {
	if username == "" {
		username, password = g.AdminUser, g.Token
	}
	return &authn.Basic{Username: username, Password: password}
}

// ManifestAnnotations returns the manifest digest and annotations of REPOSITORY:TAG (or
// REPOSITORY@sha256:...) in the Gitea's registry, read as username/password ("" means the
// admin and its token; use Anonymous to read without credentials).
func (g *Gitea) ManifestAnnotations(ctx context.Context, reference, username, password string) (string, map[string]string, error) {
	ref, err := name.ParseReference(g.Registry()+"/"+reference, name.Insecure)
	if err != nil {
		return "", nil, err
	}
	auth := g.registryAuth(username, password)
	if username == Anonymous {
		auth = authn.Anonymous
	}
	desc, err := remote.Get(ref, remote.WithContext(ctx), remote.WithAuth(auth))
	if err != nil {
		return "", nil, fmt.Errorf("get manifest %s: %w", ref, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return "", nil, fmt.Errorf("get manifest %s: %w", ref, err)
	}
	return desc.Digest.String(), m.Annotations, nil
}

// Anonymous as a username reads without credentials.
const Anonymous = "<anonymous>"

// DockerConfigJSON returns a ~/.docker/config.json (the .dockerconfigjson of a
// kubernetes.io/dockerconfigjson Secret) with credentials for registry (host:port).
func DockerConfigJSON(registry, username, password string) []byte {
	type entry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	b, _ := json.Marshal(map[string]map[string]entry{"auths": {registry: {
		Username: username, Password: password,
		Auth: base64.StdEncoding.EncodeToString([]byte(username + ":" + password)),
	}}})
	return b
}

// RegistrySecret returns a kubernetes.io/dockerconfigjson Secret for the Gitea's registry,
// for the spec.secretRef of an OCIRepository or an OCI HelmRepository; empty username means
// the admin and its token.
func (g *Gitea) RegistrySecret(namespace, secretName, username, password string) *corev1.Secret {
	if username == "" {
		username, password = g.AdminUser, g.Token
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: namespace},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: DockerConfigJSON(g.Registry(), username, password)},
	}
}

// ParseGitRevision splits a Flux Git revision "<ref>@sha1:<commit>" (the format of
// org.opencontainers.image.revision written by `flux push artifact --revision`, and of
// GitRepository artifacts) into ref and commit. A bare "sha1:<commit>" or "<commit>"
// gives an empty ref.
func ParseGitRevision(rev string) (ref, commit string, ok bool) {
	ref, commit = "", rev
	if i := strings.LastIndex(rev, "@"); i >= 0 {
		ref, commit = rev[:i], rev[i+1:]
	}
	commit = strings.TrimPrefix(commit, "sha1:")
	if len(commit) != 40 || strings.Trim(commit, "0123456789abcdef") != "" {
		return "", "", false
	}
	return ref, commit, true
}
