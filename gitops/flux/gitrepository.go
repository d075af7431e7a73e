package flux

import (
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// gitRepository: source-controller fetches a Git reference of a repository. A push to the
// repository (by any of its URLs) of the reference it follows (RefMatches) changes it; its
// artifact's revision names the commit fetched, "main@sha1:<sha>".
type gitRepository struct{}

func (gitRepository) Name() string { return sourcev1.GitRepositoryKind }
func (gitRepository) Resource() schema.GroupVersionResource {
	return sourcev1.GroupVersion.WithResource("gitrepositories")
}
func (gitRepository) Stage() int                     { return 0 }
func (gitRepository) Target() bool                   { return true }
func (gitRepository) New() client.Object             { return &sourcev1.GitRepository{} }
func (gitRepository) NewList() client.ObjectList     { return &sourcev1.GitRepositoryList{} }
func (gitRepository) Suspended(o client.Object) bool { return o.(*sourcev1.GitRepository).Spec.Suspend }
func (gitRepository) Sources(client.Object) []Ref    { return nil }
func (gitRepository) URLs(o client.Object) []string {
	return normalized(o.(*sourcev1.GitRepository).Spec.URL)
}
func (gitRepository) Status(o client.Object) Status {
	r := o.(*sourcev1.GitRepository)
	return status(r, r.Status.ObservedGeneration, r.Status.Conditions, r.Status.LastHandledReconcileAt)
}

func (gitRepository) Follows(o client.Object, p Pushed, _ client.Object) bool {
	return !p.OCI() && RefMatches(o.(*sourcev1.GitRepository).Spec.Reference, p.Ref)
}

// Judge: Reached when Ready on an artifact of the pushed commit, whether or not it handled
// the request (a poll may have fetched it first); once it handled the request, Failed or
// Elsewhere.
func (k gitRepository) Judge(o client.Object, w Want, _ map[Ref]client.Object) Judgement {
	r := o.(*sourcev1.GitRepository)
	rev := ""
	if r.Status.Artifact != nil {
		rev = r.Status.Artifact.Revision
	}
	return judgeSource(k.Status(r), w, "fetched", "fetch", rev, revisionCommit(rev), "")
}

// Origin: the repository it fetches.
// Slim: its ignore patterns and included artifacts.
func (gitRepository) Slim(o client.Object) {
	r := o.(*sourcev1.GitRepository)
	r.Spec.Ignore, r.Spec.Include, r.Status.IncludedArtifacts = nil, nil, nil
}

func (gitRepository) Origin(o client.Object) string { return o.(*sourcev1.GitRepository).Spec.URL }
