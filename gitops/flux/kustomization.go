package flux

import (
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// kustomization: kustomize-controller applies a path of a GitRepository's or an
// OCIRepository's artifact. status.lastAppliedRevision is the source's revision it applied;
// from an OCI artifact, status.lastAppliedOriginRevision is the Git revision the artifact
// was built from (its org.opencontainers.image.revision).
type kustomization struct{}

func (kustomization) Name() string { return kustomizev1.KustomizationKind }
func (kustomization) Resource() schema.GroupVersionResource {
	return kustomizev1.GroupVersion.WithResource("kustomizations")
}
func (kustomization) Stage() int                 { return 2 }
func (kustomization) Target() bool               { return true }
func (kustomization) New() client.Object         { return &kustomizev1.Kustomization{} }
func (kustomization) NewList() client.ObjectList { return &kustomizev1.KustomizationList{} }
func (kustomization) Suspended(o client.Object) bool {
	return o.(*kustomizev1.Kustomization).Spec.Suspend
}
func (kustomization) URLs(client.Object) []string { return nil }
func (kustomization) Status(o client.Object) Status {
	k := o.(*kustomizev1.Kustomization)
	return status(k, k.Status.ObservedGeneration, k.Status.Conditions, k.Status.LastHandledReconcileAt)
}

// Sources: its sourceRef, a GitRepository or an OCIRepository (another namespace's when
// it says so).
func (kustomization) Sources(o client.Object) []Ref {
	k := o.(*kustomizev1.Kustomization)
	switch k.Spec.SourceRef.Kind {
	case sourcev1.GitRepositoryKind, sourcev1.OCIRepositoryKind:
		ns := k.Spec.SourceRef.Namespace
		if ns == "" {
			ns = k.Namespace
		}
		return []Ref{{Kind: k.Spec.SourceRef.Kind, Namespace: ns, Name: k.Spec.SourceRef.Name}}
	}
	return nil
}

// Follows: every push its source follows.
func (kustomization) Follows(client.Object, Pushed, client.Object) bool { return true }

// Judge: Reached when Ready with the pushed commit (or tag) applied; Failed when it failed
// attempting it. A Kustomization that reconciled before its source moved is reconciled
// again when the source's revision changes; one whose source failed on the commit never
// will be: its source decides then.
func (k kustomization) Judge(o client.Object, w Want, sources map[Ref]client.Object) Judgement {
	ks := o.(*kustomizev1.Kustomization)
	s, r := k.Status(ks), readinessOf(k.Status(ks))
	applied, attempted := ks.Status.LastAppliedRevision, ks.Status.LastAttemptedRevision
	commit, attemptedCommit := revisionCommit(applied), revisionCommit(attempted)
	if origin := ks.Status.LastAppliedOriginRevision; origin != "" {
		commit = revisionCommit(origin)
		if applied == attempted {
			attemptedCommit = commit
		}
	}
	j := Judgement{Action: "applied", Revision: applied, Message: r.message}
	switch {
	case !r.current:
	case w.Any() && !w.Handled(s):
	case r.ready && w.is(commit, revisionTag(applied)):
		j.Verdict = Reached
		return j
	case r.failed && w.is(attemptedCommit, revisionTag(attempted)):
		j.Verdict = Failed
		return j
	}
	for _, ref := range k.Sources(ks) {
		if v := through(ref, sources, w); v.Verdict != Pending {
			return v
		}
	}
	return Judgement{}
}

func (kustomization) Origin(client.Object) string { return "" }

// Applies: the Deployments of its inventory (what it applied last).
func (kustomization) Applies(o client.Object) []Ref {
	k := o.(*kustomizev1.Kustomization)
	if k.Status.Inventory == nil {
		return nil
	}
	ids := make([]string, 0, len(k.Status.Inventory.Entries))
	for _, e := range k.Status.Inventory.Entries {
		ids = append(ids, e.ID)
	}
	return deploymentsOf(ids)
}

// Slim: of its inventory (every object it applied), all but the Deployments (a canary's
// target is found by them); its history, patches, images, post-build substitutions, health
// checks, components and dependencies.
func (kustomization) Slim(o client.Object) {
	k := o.(*kustomizev1.Kustomization)
	if inv := k.Status.Inventory; inv != nil {
		if inv.Entries = keepDeployments(inv.Entries, func(e kustomizev1.ResourceRef) string { return e.ID }); inv.Entries == nil {
			k.Status.Inventory = nil
		}
	}
	k.Status.History = nil
	k.Spec.Patches, k.Spec.Images, k.Spec.PostBuild, k.Spec.HealthChecks, k.Spec.Components = nil, nil, nil, nil, nil
	k.Spec.DependsOn = nil
}
