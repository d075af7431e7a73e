package request_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/request"
)

func TestRequestMatchesEachURLForm(t *testing.T) {
	fluxtest.Integration(t)
	ns := fluxtest.Namespace(t)
	repo := "org/app-" + fluxtest.RandomHex(3)
	main := &sourcev1.GitRepositoryRef{Branch: "main"}
	// Flux accepts http, https and ssh URLs (its CRD refuses scp-like ones, which only the
	// push's ssh_url uses: pushOf sends one).
	forms := map[string]string{
		"https":         "https://" + fluxtest.ForgeHost + "/" + repo + ".git",
		"http":          "http://" + fluxtest.ForgeHost + "/" + repo,
		"credentials":   "https://flux:token@" + fluxtest.ForgeHost + "/" + repo + ".git",
		"upper-case":    "https://" + strings.ToUpper(fluxtest.ForgeHost+"/"+repo),
		"trailing":      "https://" + fluxtest.ForgeHost + "/" + repo + "/",
		"ssh":           "ssh://git@" + fluxtest.ForgeHost + "/" + repo,
		"ssh-port-22":   "ssh://git@" + fluxtest.ForgeHost + ":22/" + repo + ".git",
		"default-https": "https://" + fluxtest.ForgeHost + ":443/" + repo,
	}
	var objs []client.Object
	for name, url := range forms {
		objs = append(objs, fluxtest.GitRepository(ns, name, url, main))
	}
	// Not this repository: another name, a prefix of it, another host, another port.
	objs = append(objs,
		fluxtest.GitRepository(ns, "other-repo", "https://"+fluxtest.ForgeHost+"/"+repo+"-2", main),
		fluxtest.GitRepository(ns, "other-host", "https://gitea.other.com/"+repo, main),
		fluxtest.GitRepository(ns, "other-port", "ssh://git@"+fluxtest.ForgeHost+":2222/"+repo, main),
	)
	fluxtest.Create(t, objs...)
	res, err := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local)).Request(t.Context(), fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA()))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range res.Targets {
		got = append(got, o.Name)
	}
	var want []string
	for name := range forms {
		want = append(want, name)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("matched %v, want %v", got, want)
	}
}

func TestRequestMatchesEachRefKind(t *testing.T) {
	fluxtest.Integration(t)
	ns := fluxtest.Namespace(t)
	repo := "org/refs-" + fluxtest.RandomHex(3)
	url := "http://" + fluxtest.ForgeHost + "/" + repo + ".git"
	refs := map[string]*sourcev1.GitRepositoryRef{
		"none":      nil,
		"main":      {Branch: "main"},
		"dev":       {Branch: "dev"},
		"tag-v1":    {Tag: "v1.0.0"},
		"semver-1x": {SemVer: "1.x"},
		"semver-2x": {SemVer: ">=2.0.0"},
		"name-main": {Name: "refs/heads/main"},
		"commit":    {Commit: "0123456789abcdef0123456789abcdef01234567"},
	}
	var objs []client.Object
	for name, ref := range refs {
		objs = append(objs, fluxtest.GitRepository(ns, name, url, ref))
	}
	fluxtest.Create(t, objs...)
	tests := []struct {
		ref  string
		want []string
	}{
		{"refs/heads/main", []string{"main", "name-main"}},
		{"refs/heads/master", []string{"none"}},
		{"refs/heads/dev", []string{"dev"}},
		{"refs/heads/feature", nil},
		{"refs/tags/v1.0.0", []string{"semver-1x", "tag-v1"}},
		{"refs/tags/v2.1.0", []string{"semver-2x"}},
	}
	r := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local))
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			res, err := r.Request(t.Context(), fluxtest.PushOf(repo, tt.ref, fluxtest.NewSHA()))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range res.Targets {
				got = append(got, o.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("push to %s matched %v, want %v", tt.ref, got, tt.want)
			}
		})
	}
}

func TestRequestFanOut(t *testing.T) {
	fluxtest.Integration(t)
	src, apps := fluxtest.Namespace(t), fluxtest.Namespace(t)
	repo := "org/fanout-" + fluxtest.RandomHex(3)
	url := "https://" + fluxtest.ForgeHost + "/" + repo + ".git"
	suspended := fluxtest.Kustomization(apps, "suspended", src, "app")
	suspended.Spec.Suspend = true
	fluxtest.Create(t,
		fluxtest.GitRepository(src, "app", url, &sourcev1.GitRepositoryRef{Branch: "main"}),
		fluxtest.Kustomization(src, "infra", "", "app"),
		fluxtest.Kustomization(apps, "apps", src, "app"),
		suspended,
		fluxtest.Kustomization(apps, "elsewhere", src, "not-app"),
		fluxtest.HelmReleaseFromGit(apps, "podinfo", src, "app"),
		// What helm-controller generates for the HelmRelease above.
		fluxtest.HelmChart(src, apps+"-podinfo", "app"),
		fluxtest.HelmChart(src, "shared", "app"),
		fluxtest.HelmReleaseFromChart(apps, "from-chart", src, "shared"),
	)
	sha := fluxtest.NewSHA()
	res, err := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local)).Request(t.Context(), fluxtest.PushOf(repo, "refs/heads/main", sha))
	out := res.Targets
	if err != nil {
		t.Fatal(err)
	}
	// Sources first, then by namespace and name within a kind.
	want := slices.Concat(
		[]string{"GitRepository/" + src + "/app=requested"},
		sorted("HelmChart/"+src+"/"+apps+"-podinfo=requested", "HelmChart/"+src+"/shared=requested"),
		sorted("Kustomization/"+apps+"/apps=requested", "Kustomization/"+apps+"/suspended=suspended",
			"Kustomization/"+src+"/infra=requested"),
		sorted("HelmRelease/"+apps+"/from-chart=requested", "HelmRelease/"+apps+"/podinfo=requested"),
	)
	if got := fluxtest.Targets(out); !slices.Equal(got, want) {
		t.Fatalf("targets\n got %v\nwant %v", got, want)
	}
	// Every requested object carries the same requestedAt and a record naming the push;
	// the suspended one is untouched.
	var token string
	for _, o := range out {
		obj := newObject(t, o.Kind)
		if err := fluxtest.Kube.Client.Get(t.Context(), client.ObjectKey{Namespace: o.Namespace, Name: o.Name}, obj); err != nil {
			t.Fatal(err)
		}
		ann := obj.GetAnnotations()
		if o.Result == api.ResultSuspended {
			if len(ann) != 0 {
				t.Fatalf("suspended %s touched: %v", o.Name, ann)
			}
			continue
		}
		if token == "" {
			token = ann[meta.ReconcileRequestAnnotation]
		}
		if tok := ann[meta.ReconcileRequestAnnotation]; tok == "" || tok != token {
			t.Fatalf("%s %s: requestedAt %q, want one token %q per push", o.Kind, o.Name, tok, token)
		}
		rec, err := record.Parse(ann)
		if err != nil || rec.Current == nil || rec.Current.SHA != sha || rec.Current.Repository != repo || rec.Current.Token != token {
			t.Fatalf("%s %s: record %+v, %v", o.Kind, o.Name, rec.Current, err)
		}
	}
	// One Event per push and cluster, on the source it requested, names repository, sha and
	// delivery, and counts what was requested; none on each object.
	events := func(ns string) []eventsv1.Event {
		var evs eventsv1.EventList
		if err := fluxtest.Kube.Client.List(t.Context(), &evs, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		return slices.DeleteFunc(evs.Items, func(e eventsv1.Event) bool {
			return e.Reason != "ReconcileRequested" || !strings.Contains(e.Note, sha)
		})
	}
	fluxtest.WaitFor(t, "a ReconcileRequested event", func() bool { return len(events(src)) > 0 })
	evs := events(src)
	if len(evs) != 1 || evs[0].Regarding.Kind != "GitRepository" || evs[0].Regarding.Name != "app" || !strings.Contains(evs[0].Note, repo) ||
		!strings.Contains(evs[0].Note, "delivery-"+sha[:8]) ||
		!strings.Contains(evs[0].Note, "reconcile requested for 7 Flux objects in this cluster (1 GitRepository, 2 HelmChart, 2 Kustomization, 2 HelmRelease)") {
		t.Fatalf("events %+v", evs)
	}
	if evs := events(apps); len(evs) > 0 {
		t.Fatalf("an event per object: %+v", evs)
	}
}

func TestRequestIsIdempotent(t *testing.T) {
	fluxtest.Integration(t)
	ns := fluxtest.Namespace(t)
	repo := "org/idem-" + fluxtest.RandomHex(3)
	gr := fluxtest.GitRepository(ns, "app", "http://"+fluxtest.ForgeHost+"/"+repo+".git", &sourcev1.GitRepositoryRef{Branch: "main"})
	fluxtest.Create(t, gr, fluxtest.Kustomization(ns, "app", "", "app"))
	// The push records' writes, counted.
	var creates atomic.Int32
	store := &record.PushStore{Client: countingCreates{fluxtest.Kube.Client, &creates}, Reader: fluxtest.Kube.Client, Namespace: fluxtest.Namespace(t)}
	set := cluster.NewSet(fluxtest.Local)
	r := fluxtest.NewRequester(t, set, func(r *request.Requester) { r.Store = store })
	push := fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA())
	accepted, err := r.Request(t.Context(), push)
	if err != nil {
		t.Fatal(err)
	}
	if n := creates.Load(); n != 1 {
		t.Fatalf("%d push records written, want 1", n)
	}
	before := &sourcev1.GitRepository{}
	if err := fluxtest.Kube.Client.Get(t.Context(), client.ObjectKeyFromObject(gr), before); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "cache sees the patch", func() bool {
		c := &sourcev1.GitRepository{}
		return fluxtest.Local.GetCache().Get(t.Context(), client.ObjectKeyFromObject(gr), c) == nil && c.ResourceVersion == before.ResourceVersion
	})
	push.Delivery = "redelivered"
	res, err := r.Request(t.Context(), push)
	out := res.Targets
	if err != nil {
		t.Fatal(err)
	}
	if !res.Repeat || res.Token != accepted.Token {
		t.Fatalf("redelivery answered %+v, want a repeat of %s", res, accepted.Token)
	}
	for _, o := range out {
		if o.Result != api.ResultAlreadyRequested {
			t.Fatalf("redelivery: %s %s = %s", o.Kind, o.Name, o.Result)
		}
	}
	after := &sourcev1.GitRepository{}
	if err := fluxtest.Kube.Client.Get(t.Context(), client.ObjectKeyFromObject(gr), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Fatal("redelivery patched the GitRepository again")
	}
	// This replica answered the redelivery from memory; another finds the record.
	if n := creates.Load(); n != 1 {
		t.Fatalf("the redelivery wrote: %d push record creates, want 1", n)
	}
	other := &request.Requester{Clusters: set, Store: store}
	res, err = other.Accept(t.Context(), push)
	if err != nil || !res.Repeat || res.Token != accepted.Token {
		t.Fatalf("the redelivery to another replica: %+v %v", res, err)
	}
	if n := creates.Load(); n != 2 {
		t.Fatalf("another replica: %d push record creates, want 2 (one that finds the record)", n)
	}
	// A push overtaken before it arrived, delivered twice: its warnings are recorded once.
	overtaken := fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA())
	overtaken.Head = push.SHA
	for range 2 {
		if res, err := r.Accept(t.Context(), overtaken); err != nil || len(res.Targets) == 0 || res.Targets[0].Result != api.ResultSuperseded {
			t.Fatalf("overtaken push: %+v %v", res, err)
		}
	}
	if n := creates.Load(); n != 3 {
		t.Fatalf("an overtaken push delivered twice: %d push record creates, want 3", n)
	}
}

// countingCreates counts a client's creates.
type countingCreates struct {
	client.Client
	n *atomic.Int32
}

func (c countingCreates) Create(ctx context.Context, o client.Object, opts ...client.CreateOption) error {
	c.n.Add(1)
	return c.Client.Create(ctx, o, opts...)
}

func newObject(t *testing.T, kind string) client.Object {
	t.Helper()
	switch kind {
	case sourcev1.GitRepositoryKind:
		return &sourcev1.GitRepository{}
	case sourcev1.HelmChartKind:
		return &sourcev1.HelmChart{}
	case kustomizev1.KustomizationKind:
		return &kustomizev1.Kustomization{}
	case helmv2.HelmReleaseKind:
		return &helmv2.HelmRelease{}
	}
	t.Fatalf("unknown kind %s", kind)
	return nil
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// Flux in a cluster usually fetches through Gitea's in-cluster Service; pushes report the
// external URL. An alias makes them one.
func TestRequestThroughAlias(t *testing.T) {
	fluxtest.Integration(t)
	ns := fluxtest.Namespace(t)
	repo := "org/alias-" + fluxtest.RandomHex(3)
	fluxtest.Create(t, fluxtest.GitRepository(ns, "app", "http://gitea-http.gitea.svc.cluster.local:3000/"+repo+".git", &sourcev1.GitRepositoryRef{Branch: "main"}))
	push := fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA())
	res, err := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local)).Request(t.Context(), push)
	if err != nil || len(res.Targets) != 0 {
		t.Fatalf("without the alias: %v %v", fluxtest.Targets(res.Targets), err)
	}
	alias, err := flux.ParseAlias("http://" + fluxtest.ForgeHost + "=http://gitea-http.gitea.svc.cluster.local:3000")
	if err != nil {
		t.Fatal(err)
	}
	res, err = fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local), func(r *request.Requester) { r.Aliases = []flux.Alias{alias} }).Request(t.Context(), push)
	if err != nil || len(res.Targets) != 1 || res.Targets[0].Result != api.ResultRequested {
		t.Fatalf("with the alias: %v %v", fluxtest.Targets(res.Targets), err)
	}
}

// TestWorkerWorksAPushOnceInACluster: the worker's queue is fed by every change of a push
// record, from its informer's copy, which can be older than the worker's own write that
// the push is done in the cluster; worked from such a copy again, the push requests,
// logs and counts nothing a second time.
func TestWorkerWorksAPushOnceInACluster(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	ns := fluxtest.Namespace(t)
	repo := "org/once-" + fluxtest.RandomHex(3)
	fluxtest.Create(t, fluxtest.GitRepository(ns, "app", "https://"+fluxtest.ForgeHost+"/"+repo+".git", &sourcev1.GitRepositoryRef{Branch: "main"}))
	r := fluxtest.NewRequester(t, cluster.NewSet(fluxtest.Local))
	push := fluxtest.PushOf(repo, "refs/heads/main", fluxtest.NewSHA())
	if _, err := r.Accept(ctx, push); err != nil {
		t.Fatal(err)
	}
	key := record.Request{Repository: push.Repository, Ref: push.Ref, Before: push.Before, SHA: push.SHA}.PushKey()
	stale, err := r.Store.Get(ctx, key) // the cluster not done yet: what a lagging informer holds
	if err != nil {
		t.Fatal(err)
	}
	first, again, err := r.Worker.Work(ctx, fluxtest.Local, stale)
	if err != nil || again || len(first) != 1 || first[0].Result != api.ResultRequested {
		t.Fatalf("first work: %+v, again %v, %v; want the GitRepository requested", first, again, err)
	}
	second, again, err := r.Worker.Work(ctx, fluxtest.Local, stale)
	if err != nil || again || len(second) != 0 {
		t.Fatalf("the same push worked again from a stale copy: %+v, again %v, %v; want nothing", second, again, err)
	}
}
