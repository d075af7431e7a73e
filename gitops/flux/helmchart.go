package flux

import (
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// helmChart: source-controller packages a chart from a GitRepository (a path in it) or
// pulls it from an OCI HelmRepository. Built from Git, status.observedSourceArtifactRevision
// names the commit; pulled from a registry, the artifact's revision is the chart version.
type helmChart struct{}

func (helmChart) Name() string { return sourcev1.HelmChartKind }
func (helmChart) Resource() schema.GroupVersionResource {
	return sourcev1.GroupVersion.WithResource("helmcharts")
}
func (helmChart) Stage() int                     { return 1 }
func (helmChart) Target() bool                   { return true }
func (helmChart) New() client.Object             { return &sourcev1.HelmChart{} }
func (helmChart) NewList() client.ObjectList     { return &sourcev1.HelmChartList{} }
func (helmChart) Suspended(o client.Object) bool { return o.(*sourcev1.HelmChart).Spec.Suspend }
func (helmChart) URLs(client.Object) []string    { return nil }
func (helmChart) Status(o client.Object) Status {
	c := o.(*sourcev1.HelmChart)
	return status(c, c.Status.ObservedGeneration, c.Status.Conditions, c.Status.LastHandledReconcileAt)
}

// Sources: the chart's source, always in its own namespace.
func (helmChart) Sources(o client.Object) []Ref {
	c := o.(*sourcev1.HelmChart)
	switch c.Spec.SourceRef.Kind {
	case sourcev1.GitRepositoryKind, sourcev1.HelmRepositoryKind:
		return []Ref{{Kind: c.Spec.SourceRef.Kind, Namespace: c.Namespace, Name: c.Spec.SourceRef.Name}}
	}
	return nil
}

// Follows: every push its GitRepository follows; from a registry, a version of its chart
// its version constraint allows (none: any).
func (helmChart) Follows(o client.Object, p Pushed, via client.Object) bool {
	c := o.(*sourcev1.HelmChart)
	if _, ok := via.(*sourcev1.HelmRepository); !ok {
		return !p.OCI()
	}
	if !p.OCI() || c.Spec.Chart != p.Name {
		return false
	}
	return c.Spec.Version == "" || c.Spec.Version == "*" || semverSelects(c.Spec.Version, p.Tag)
}

// Slim: its values files.
func (helmChart) Slim(o client.Object) {
	o.(*sourcev1.HelmChart).Spec.ValuesFiles = nil
}

// Judge: Reached when Ready with a chart packaged from the pushed commit (or pulled at the
// pushed version); Failed when it failed after handling the request while its source had
// the commit; else what its source says, when that decides.
func (k helmChart) Judge(o client.Object, w Want, sources map[Ref]client.Object) Judgement {
	c := o.(*sourcev1.HelmChart)
	s, r := k.Status(c), readinessOf(k.Status(c))
	j := Judgement{Action: "packaged chart", Message: r.message}
	built := ""
	if c.Status.Artifact != nil {
		j.Revision, built = c.Status.Artifact.Revision, c.Status.Artifact.Revision
	}
	fromGit := c.Status.ObservedSourceArtifactRevision
	if fromGit != "" {
		j.Revision += " from " + fromGit
	} else {
		j.Action = "pulled chart"
	}
	srcs := k.Sources(c)
	switch {
	case !r.current:
	case r.ready && built != "" && w.is(revisionCommit(fromGit), built) && (!w.Any() || w.Handled(s)):
		j.Verdict = Reached
		return j
	case r.failed && w.Handled(s) && (w.Any() || len(srcs) == 1 && sourceHas(sources[srcs[0]], w)):
		j.Verdict = Failed
		return j
	}
	for _, ref := range srcs {
		if v := through(ref, sources, w); v.Verdict != Pending {
			return v
		}
	}
	return Judgement{}
}

// sourceHas reports whether a source (as Reached judges it) has what w waits for.
func sourceHas(src client.Object, w Want) bool {
	k, err := KindFor(src)
	if src == nil || err != nil {
		return false
	}
	return k.Judge(src, Want{Commit: w.Commit, Version: w.Version, Handled: func(Status) bool { return true }}, nil).Verdict == Reached
}

func (helmChart) Origin(client.Object) string { return "" }
