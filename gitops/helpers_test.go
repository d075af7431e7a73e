package gitops_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newSHA() string { return randomHex(20) }

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + randomHex(4)}}
	if err := kube.Client.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// create creates objects and waits until the package's cache has them, as /hook would
// see them.
func create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := kube.Client.Create(t.Context(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	for _, o := range objs {
		waitFor(t, fmt.Sprintf("cache has %T %s", o, o.GetName()), func() bool {
			fresh := o.DeepCopyObject().(client.Object)
			return local.GetCache().Get(t.Context(), client.ObjectKeyFromObject(o), fresh) == nil
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, what, cond)
}

func gitRepository(ns, name, url string, ref *sourcev1.GitRepositoryRef) *sourcev1.GitRepository {
	return &sourcev1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       sourcev1.GitRepositorySpec{URL: url, Interval: metav1.Duration{Duration: time.Hour}, Reference: ref},
	}
}

func kustomization(ns, name, sourceNS, source string) *kustomizev1.Kustomization {
	return &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kustomizev1.KustomizationSpec{
			Interval:  metav1.Duration{Duration: time.Hour},
			Path:      "./",
			Prune:     true,
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: gitops.KindGitRepository, Name: source, Namespace: sourceNS},
		},
	}
}

// helmReleaseFromGit is a HelmRelease whose chart template comes from a GitRepository:
// helm-controller generates the HelmChart <namespace>-<name> in the source's namespace.
func helmReleaseFromGit(ns, name, sourceNS, source string) *helmv2.HelmRelease {
	return &helmv2.HelmRelease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: helmv2.HelmReleaseSpec{
			Interval: metav1.Duration{Duration: time.Hour},
			Chart: &helmv2.HelmChartTemplate{Spec: helmv2.HelmChartTemplateSpec{
				Chart:     "./charts/" + name,
				SourceRef: &helmv2.CrossNamespaceObjectReference{Kind: gitops.KindGitRepository, Name: source, Namespace: sourceNS},
			}},
		},
	}
}

func helmChart(ns, name, source string) *sourcev1.HelmChart {
	return &sourcev1.HelmChart{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: sourcev1.HelmChartSpec{
			Chart:     "./charts/" + name,
			Interval:  metav1.Duration{Duration: time.Hour},
			SourceRef: sourcev1.LocalHelmChartSourceReference{Kind: gitops.KindGitRepository, Name: source},
		},
	}
}

func helmReleaseFromChart(ns, name, chartNS, chart string) *helmv2.HelmRelease {
	return &helmv2.HelmRelease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: helmv2.HelmReleaseSpec{
			Interval: metav1.Duration{Duration: time.Hour},
			ChartRef: &helmv2.CrossNamespaceSourceReference{Kind: gitops.KindHelmChart, Name: chart, Namespace: chartNS},
		},
	}
}

// targets renders outcomes as "kind/namespace/name=result" in order.
func targets(out []gitops.Outcome) []string {
	var s []string
	for _, o := range out {
		s = append(s, fmt.Sprintf("%s/%s/%s=%s", o.Kind, o.Namespace, o.Name, o.Result))
	}
	return s
}

var errFlaky = errors.New("gitea: 502 bad gateway")

func metaOf(key client.ObjectKey) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}
}

// counter reads the series of a counter whose labels include every label=value pair given
// (label, value, label, value, ...), from controller-runtime's registry; 0 when absent.
func counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	fams, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == labels[i] && l.GetValue() == labels[i+1] }) {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// gaugeSeries returns the label sets of a metric's series, for a test to search.
func gaugeSeries(t *testing.T, name string) string {
	t.Helper()
	fams, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				fmt.Fprintln(&b, m.GetLabel())
			}
		}
	}
	return b.String()
}
