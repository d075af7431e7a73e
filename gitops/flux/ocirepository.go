package flux

import (
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ociRepository: source-controller pulls an OCI artifact (Flux's gitless path, `flux push
// artifact`) from a registry — the forge's own. A push of a tag to that OCI repository
// changes it when its ref follows the tag (no ref: "latest"; a semver range: a tag in it; a
// pinned digest: never). Its artifact's revision names the tag and digest,
// "<tag>@sha256:<digest>"; the Git commit it was built from is the artifact's
// org.opencontainers.image.revision annotation, which source-controller copies into
// status.artifact.metadata.
type ociRepository struct{}

func (ociRepository) Name() string { return sourcev1.OCIRepositoryKind }
func (ociRepository) Resource() schema.GroupVersionResource {
	return sourcev1.GroupVersion.WithResource("ocirepositories")
}
func (ociRepository) Stage() int                     { return 0 }
func (ociRepository) Target() bool                   { return true }
func (ociRepository) New() client.Object             { return &sourcev1.OCIRepository{} }
func (ociRepository) NewList() client.ObjectList     { return &sourcev1.OCIRepositoryList{} }
func (ociRepository) Suspended(o client.Object) bool { return o.(*sourcev1.OCIRepository).Spec.Suspend }
func (ociRepository) Sources(client.Object) []Ref    { return nil }
func (ociRepository) URLs(o client.Object) []string {
	return normalized(o.(*sourcev1.OCIRepository).Spec.URL)
}
func (ociRepository) Status(o client.Object) Status {
	r := o.(*sourcev1.OCIRepository)
	return status(r, r.Status.ObservedGeneration, r.Status.Conditions, r.Status.LastHandledReconcileAt)
}

func (ociRepository) Follows(o client.Object, p Pushed, _ client.Object) bool {
	if !p.OCI() {
		return false
	}
	ref := o.(*sourcev1.OCIRepository).Spec.Reference
	switch {
	case ref == nil:
		return p.Tag == "latest"
	case ref.Digest != "":
		return false
	case ref.SemVer != "":
		return semverSelects(ref.SemVer, p.Tag)
	case ref.Tag != "":
		return ref.Tag == p.Tag
	}
	return p.Tag == "latest"
}

// Judge: as a GitRepository's, the artifact's commit read from its revision annotation, or
// for an artifact that records none, its tag.
func (k ociRepository) Judge(o client.Object, w Want, _ map[Ref]client.Object) Judgement {
	r := o.(*sourcev1.OCIRepository)
	rev, commit := "", ""
	if a := r.Status.Artifact; a != nil {
		rev, commit = a.Revision, revisionCommit(a.Metadata[ocispec.AnnotationRevision])
	}
	return judgeSource(k.Status(r), w, "pulled", "pull", rev, commit, revisionTag(rev))
}

// Slim: its ignore patterns, and of its artifact's metadata all but the source and revision.
func (ociRepository) Slim(o client.Object) {
	r := o.(*sourcev1.OCIRepository)
	r.Spec.Ignore = nil
	if a := r.Status.Artifact; a != nil && len(a.Metadata) > 0 {
		keep := map[string]string{}
		for _, k := range []string{ocispec.AnnotationRevision, ocispec.AnnotationSource} {
			if v, ok := a.Metadata[k]; ok {
				keep[k] = v
			}
		}
		a.Metadata = keep
	}
}

// Origin: the repository its artifact says it was built from (org.opencontainers.image.source,
// which `flux push artifact --source` writes and source-controller copies into its status).
func (ociRepository) Origin(o client.Object) string {
	if a := o.(*sourcev1.OCIRepository).Status.Artifact; a != nil {
		return a.Metadata[ocispec.AnnotationSource]
	}
	return ""
}
