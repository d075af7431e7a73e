// Package fluxtest holds what the tests of the gitops packages share: one real API server
// (envtest, with the Flux CRDs) per test binary and its local cluster, Flux objects as tests
// write them, a recorder standing in for the forge, and metric readers.
package fluxtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcluster "sigs.k8s.io/controller-runtime/pkg/cluster"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// The package's environment, set by Main.
var (
	Kube  *testenv.Kube
	Local *cluster.Cluster
	// Events writes the Events of the clusters StartCluster starts, as the binary's writer
	// does.
	Events *cluster.EventWriter
)

// Main runs a test binary with a real API server and its local cluster (Kube, Local),
// started here and stopped after the tests; with -short the integration tests skip
// themselves and nothing starts. Call it from TestMain: os.Exit(fluxtest.Main(m)).
func Main(m *testing.M) int {
	flag.Parse()
	if testenv.Light() {
		return m.Run()
	}
	testenv.SetLogger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "gitops-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	Kube, err = testenv.StartKube(ctx, testenv.KubeOptions{Dir: dir, CRDs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer Kube.Stop()
	Events = &cluster.EventWriter{Instance: "test"}
	go func() { _ = Events.Start(ctx) }()
	Local, err = StartCluster(ctx, "local", Kube)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// StartCluster starts a cluster on a running API server, with the package's record keys,
// until ctx ends, and waits until its caches synced.
func StartCluster(ctx context.Context, name string, k *testenv.Kube, opts ...func(*cluster.Cluster)) (*cluster.Cluster, error) {
	return StartClusterWith(ctx, name, k, RecordKeys, opts...)
}

// StartClusterWith is StartCluster with record keys of the caller's (a test that rotates
// them). Its Events are written by Events (when Main set it), unless an option says otherwise.
func StartClusterWith(ctx context.Context, name string, k *testenv.Kube, keys cluster.Keys, opts ...func(*cluster.Cluster)) (*cluster.Cluster, error) {
	c, err := ctrlcluster.New(k.Config, func(o *ctrlcluster.Options) {
		o.Scheme = flux.NewScheme()
		o.Cache = cluster.CacheOptions(name)
	})
	if err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	cl := cluster.New(name, "", c, keys)
	if Events != nil {
		cl.WriteEventsWith(Events)
	}
	for _, o := range opts {
		o(cl)
	}
	go cl.Watch(ctx)
	deadline := time.Now().Add(time.Minute)
	for !cl.Ready() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cluster %s: caches did not sync", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cl, nil
}

// RecordKey is the key the package's clusters seal their request records with.
const RecordKey = "test-record-key-0123456789abcdef-0123456"

// RecordKeys holds RecordKey.
var RecordKeys = func() *credentials.Keyring {
	k := &credentials.Keyring{}
	if err := k.Set(credentials.RecordKey, RecordKey); err != nil {
		panic(err)
	}
	return k
}()

// Integration skips a test with -short: it needs the real API server.
func Integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the real API server (run without -short)")
	}
}

// Recorder is a StatusPoster and StatusLookup that keeps what it is given. It stands in for
// the forge in the gitops packages, which know nothing of Gitea; the webhook and cmd
// packages prove the same against a real Gitea.
type Recorder struct {
	mu       sync.Mutex
	statuses []report.CommitStatus
	fail     error
}

// PostStatus records s, or fails with the error Fail set.
func (r *Recorder) PostStatus(_ context.Context, s report.CommitStatus) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.statuses = append(r.statuses, s)
	return nil
}

// Fail makes every post fail with err from now on (nil: succeed again).
func (r *Recorder) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

// LatestStatus returns the last status posted for a context of a commit.
func (r *Recorder) LatestStatus(_ context.Context, repository, sha, context string) (*api.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.statuses) - 1; i >= 0; i-- {
		s := r.statuses[i]
		if s.Repository == repository && s.SHA == sha && s.Context == context {
			return &s.Status, nil
		}
	}
	return nil, nil
}

// States returns the states posted for one context of one commit, in order.
func (r *Recorder) States(sha, context string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.statuses {
		if s.SHA == sha && s.Context == context {
			out = append(out, s.State)
		}
	}
	return out
}

// Find returns the last status posted for one context of one commit, nil when none.
func (r *Recorder) Find(sha, context string) *report.CommitStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.statuses) - 1; i >= 0; i-- {
		if r.statuses[i].SHA == sha && r.statuses[i].Context == context {
			s := r.statuses[i]
			return &s
		}
	}
	return nil
}

// All returns every status posted, in order.
func (r *Recorder) All() []report.CommitStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.statuses)
}

// ErrFlaky is a forge failure retrying can cure.
var ErrFlaky = errors.New("gitea: 502 bad gateway")

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewSHA returns a random commit id.
func NewSHA() string { return RandomHex(20) }

// Namespace creates a namespace for one test.
func Namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t-" + RandomHex(4)}}
	if err := Kube.Client.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// Create creates objects and waits until Local's cache has them, as a push would see them.
func Create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := Kube.Client.Create(t.Context(), o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
	for _, o := range objs {
		WaitFor(t, fmt.Sprintf("cache has %T %s", o, o.GetName()), func() bool {
			fresh := o.DeepCopyObject().(client.Object)
			return Local.GetCache().Get(t.Context(), client.ObjectKeyFromObject(o), fresh) == nil
		})
	}
}

// WaitFor waits up to 30 s for cond.
func WaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, what, cond)
}

// GitRepository is a GitRepository of url at ref.
func GitRepository(ns, name, url string, ref *sourcev1.GitRepositoryRef) *sourcev1.GitRepository {
	return &sourcev1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       sourcev1.GitRepositorySpec{URL: url, Interval: metav1.Duration{Duration: time.Hour}, Reference: ref},
	}
}

// Kustomization is a Kustomization of a GitRepository.
func Kustomization(ns, name, sourceNS, source string) *kustomizev1.Kustomization {
	return &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kustomizev1.KustomizationSpec{
			Interval:  metav1.Duration{Duration: time.Hour},
			Path:      "./",
			Prune:     true,
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: source, Namespace: sourceNS},
		},
	}
}

// HelmReleaseFromGit is a HelmRelease whose chart template comes from a GitRepository:
// helm-controller generates the HelmChart <namespace>-<name> in the source's namespace.
func HelmReleaseFromGit(ns, name, sourceNS, source string) *helmv2.HelmRelease {
	return &helmv2.HelmRelease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: helmv2.HelmReleaseSpec{
			Interval: metav1.Duration{Duration: time.Hour},
			Chart: &helmv2.HelmChartTemplate{Spec: helmv2.HelmChartTemplateSpec{
				Chart:     "./charts/" + name,
				SourceRef: &helmv2.CrossNamespaceObjectReference{Kind: sourcev1.GitRepositoryKind, Name: source, Namespace: sourceNS},
			}},
		},
	}
}

// HelmChart is a HelmChart of a GitRepository of its namespace.
func HelmChart(ns, name, source string) *sourcev1.HelmChart {
	return &sourcev1.HelmChart{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: sourcev1.HelmChartSpec{
			Chart:     "./charts/" + name,
			Interval:  metav1.Duration{Duration: time.Hour},
			SourceRef: sourcev1.LocalHelmChartSourceReference{Kind: sourcev1.GitRepositoryKind, Name: source},
		},
	}
}

// HelmReleaseFromChart is a HelmRelease of an existing HelmChart (chartRef).
func HelmReleaseFromChart(ns, name, chartNS, chart string) *helmv2.HelmRelease {
	return &helmv2.HelmRelease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: helmv2.HelmReleaseSpec{
			Interval: metav1.Duration{Duration: time.Hour},
			ChartRef: &helmv2.CrossNamespaceSourceReference{Kind: sourcev1.HelmChartKind, Name: chart, Namespace: chartNS},
		},
	}
}

// ForgeHost is the host of the forge the tests' pushes come from.
const ForgeHost = "gitea.example.com"

// PushOf is a push of sha to ref of repo, with the URLs Gitea reports.
func PushOf(repo, ref, sha string) gitops.Push {
	return gitops.Push{
		Delivery:   "delivery-" + sha[:8],
		Repository: repo,
		URLs: []string{
			"http://" + ForgeHost + "/" + repo + ".git",
			"git@" + ForgeHost + ":" + repo + ".git",
			"http://" + ForgeHost + "/" + repo,
		},
		Ref: ref,
		SHA: sha,
	}
}

// WaitStates waits until exactly want has been posted for a context of a commit, and stays
// so briefly.
func WaitStates(t *testing.T, rec *Recorder, sha, context string, want ...string) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("%s: states posted %v", context, rec.States(sha, context))
		}
	}()
	WaitFor(t, context+" "+strings.Join(want, ","), func() bool { return slices.Equal(rec.States(sha, context), want) })
	time.Sleep(300 * time.Millisecond) // nothing more arrives
	if got := rec.States(sha, context); !slices.Equal(got, want) {
		t.Fatalf("%s: states %v, want %v", context, got, want)
	}
}

// Requesting accepts pushes and requests them at once in every cluster: what /hook and then
// the leader's worker do.
type Requesting struct {
	*request.Requester
	Worker *request.Worker
}

// NewRequester returns a Requesting of set, its push records in a namespace of the test's
// own (opts may change that), whose worker gives a cluster it cannot ask up at once, as a
// caller that waits for the answer would.
func NewRequester(t *testing.T, set *cluster.Set, opts ...func(*request.Requester)) *Requesting {
	t.Helper()
	r := &request.Requester{Clusters: set}
	for _, o := range opts {
		o(r)
	}
	if r.Store == nil {
		r.Store = &record.PushStore{Client: Kube.Client, Reader: Kube.Client, Namespace: Namespace(t)}
	}
	return &Requesting{Requester: r, Worker: &request.Worker{Clusters: set, Store: r.Store, ResultTimeout: time.Nanosecond}}
}

// Request accepts push and requests it now; the targets carry the worker's outcomes.
func (r *Requesting) Request(ctx context.Context, push gitops.Push) (gitops.Result, error) {
	res, err := r.Accept(ctx, push)
	if err != nil || res.Repeat || push.Head != "" || !slices.ContainsFunc(res.Targets, func(o api.Outcome) bool { return o.Result == api.ResultQueued }) {
		return res, err
	}
	req := record.Request{Repository: push.Repository, Ref: push.Ref, Before: push.Before, SHA: push.SHA}
	if push.OCI != nil {
		req.Version = push.OCI.Tag
	}
	outs, err := r.Worker.Request(ctx, req.PushKey())
	if err != nil {
		return res, err
	}
	for i, o := range res.Targets {
		if j := slices.IndexFunc(outs, func(w api.Outcome) bool { return w.Target == o.Target }); j >= 0 {
			res.Targets[i] = outs[j]
		}
	}
	// Deleted since the cache saw them: not in the worker's outcomes.
	res.Targets = slices.DeleteFunc(res.Targets, func(o api.Outcome) bool { return o.Result == api.ResultQueued })
	return res, nil
}

// Targets renders outcomes as "kind/namespace/name=result" in order.
func Targets(out []api.Outcome) []string {
	var s []string
	for _, o := range out {
		s = append(s, fmt.Sprintf("%s/%s/%s=%s", o.Kind, o.Namespace, o.Name, o.Result))
	}
	return s
}

// MetaOf is the ObjectMeta of a key.
func MetaOf(key client.ObjectKey) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}
}

// Seal writes rec onto o's annotations as c's reporter would (with its MAC): for tests that
// play a flux-webhook replica that stopped half way.
func Seal(c *cluster.Cluster, o client.Object, rec record.Record) error {
	if o.GetAnnotations() == nil {
		o.SetAnnotations(map[string]string{})
	}
	return c.SealRecord(flux.KindOf(o), o, rec)
}

// Counter reads the series of a counter (or gauge) whose labels include every label=value
// pair given (label, value, label, value, ...), from controller-runtime's registry; 0 when
// absent.
func Counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, _ := series(t, name, labels...)
	return v
}

// HasSeries reports whether a metric has a series whose labels include every pair given.
func HasSeries(t *testing.T, name string, labels ...string) bool {
	t.Helper()
	_, ok := series(t, name, labels...)
	return ok
}

func series(t *testing.T, name string, labels ...string) (float64, bool) {
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
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// Series returns the label sets of a metric's series, for a test to search.
func Series(t *testing.T, name string) string {
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
