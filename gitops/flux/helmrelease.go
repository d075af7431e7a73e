package flux

import (
	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// helmRelease: helm-controller releases a chart its HelmChart packaged (or pulled). Its
// status says which chart version it last attempted, not which commit: the HelmChart does.
type helmRelease struct{}

func (helmRelease) Name() string { return helmv2.HelmReleaseKind }
func (helmRelease) Resource() schema.GroupVersionResource {
	return helmv2.GroupVersion.WithResource("helmreleases")
}
func (helmRelease) Stage() int                     { return 3 }
func (helmRelease) Target() bool                   { return true }
func (helmRelease) New() client.Object             { return &helmv2.HelmRelease{} }
func (helmRelease) NewList() client.ObjectList     { return &helmv2.HelmReleaseList{} }
func (helmRelease) Suspended(o client.Object) bool { return o.(*helmv2.HelmRelease).Spec.Suspend }
func (helmRelease) URLs(client.Object) []string    { return nil }
func (helmRelease) Status(o client.Object) Status {
	h := o.(*helmv2.HelmRelease)
	return status(h, h.Status.ObservedGeneration, h.Status.Conditions, h.Status.LastHandledReconcileAt)
}

// Sources: the HelmChart helm-controller reports, else the one its chart template makes,
// else its chartRef's; and a template's GitRepository, which matching reaches it by (the
// HelmChart may not exist yet).
func (helmRelease) Sources(o client.Object) []Ref {
	h := o.(*helmv2.HelmRelease)
	var out []Ref
	ref := h.Status.GetHelmChartReference()
	if ref == nil {
		ref = h.GetHelmChartTemplateReference()
	}
	if ref == nil {
		ref = h.GetHelmChartReference()
	}
	if ref != nil && ref.Kind == sourcev1.HelmChartKind {
		out = append(out, Ref{Kind: sourcev1.HelmChartKind, Namespace: ref.Namespace, Name: ref.Name})
	}
	if c := h.Spec.Chart; c != nil && c.Spec.SourceRef != nil && c.Spec.SourceRef.Kind == sourcev1.GitRepositoryKind {
		ns := c.Spec.SourceRef.Namespace
		if ns == "" {
			ns = h.Namespace
		}
		out = append(out, Ref{Kind: sourcev1.GitRepositoryKind, Namespace: ns, Name: c.Spec.SourceRef.Name})
	}
	return out
}

// Follows: every push its chart, or its chart's source, follows.
func (helmRelease) Follows(client.Object, Pushed, client.Object) bool { return true }

// Judge: once its HelmChart has the chart of the pushed commit (or version) and it handled
// the request, Reached when Ready having attempted that chart, Failed when it failed; else
// what the HelmChart says, when that decides.
func (k helmRelease) Judge(o client.Object, w Want, sources map[Ref]client.Object) Judgement {
	h := o.(*helmv2.HelmRelease)
	s, r := k.Status(h), readinessOf(k.Status(h))
	var chartRef *Ref
	var chart *sourcev1.HelmChart
	for _, ref := range k.Sources(h) {
		if ref.Kind == sourcev1.HelmChartKind {
			chartRef = &ref
			chart, _ = sources[ref].(*sourcev1.HelmChart)
			break
		}
	}
	if chart == nil || chart.Status.Artifact == nil {
		for _, ref := range k.Sources(h) {
			if v := through(ref, sources, w); v.Verdict != Pending {
				return v
			}
		}
		return Judgement{}
	}
	built, fromGit := chart.Status.Artifact.Revision, chart.Status.ObservedSourceArtifactRevision
	j := Judgement{Action: "released chart", Revision: built, Message: r.message}
	if fromGit != "" {
		j.Revision += " from " + fromGit
	}
	if r.current && w.is(revisionCommit(fromGit), built) && w.Handled(s) {
		switch {
		case r.ready && h.Status.LastAttemptedRevision == built:
			j.Verdict = Reached
			return j
		case r.failed:
			j.Verdict = Failed
			return j
		}
	}
	if chartRef != nil {
		return through(*chartRef, sources, w)
	}
	return Judgement{}
}

func (helmRelease) Origin(client.Object) string { return "" }

// Applies: the Deployments of its inventory (what its release applied).
func (helmRelease) Applies(o client.Object) []Ref {
	h := o.(*helmv2.HelmRelease)
	if h.Status.Inventory == nil {
		return nil
	}
	ids := make([]string, 0, len(h.Status.Inventory.Entries))
	for _, e := range h.Status.Inventory.Entries {
		ids = append(ids, e.ID)
	}
	return deploymentsOf(ids)
}

// Slim: its values, post-renderers and release history; of its inventory, all but the
// Deployments.
func (helmRelease) Slim(o client.Object) {
	h := o.(*helmv2.HelmRelease)
	h.Spec.Values, h.Spec.ValuesFrom, h.Spec.PostRenderers, h.Status.History = nil, nil, nil, nil
	if inv := h.Status.Inventory; inv != nil {
		if inv.Entries = keepDeployments(inv.Entries, func(e helmv2.ResourceRef) string { return e.ID }); inv.Entries == nil {
			h.Status.Inventory = nil
		}
	}
}
