package cluster_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

func TestParseGrant(t *testing.T) {
	for _, tt := range []struct {
		value, canonical string
		covers, not      []string
	}{
		{"", "", nil, []string{"acme/app", "x/y"}},
		{" \t", "", nil, []string{"acme/app"}},
		{"*", "*", []string{"acme/app", "Beta/Platform"}, nil},
		{"acme/*", "acme/*", []string{"acme/app", "ACME/App", "acme/manifests"}, []string{"acme2/app", "acm/app", "beta/acme", "acme"}},
		{"Acme/App", "acme/app", []string{"acme/app", "ACME/APP"}, []string{"acme/app2", "acme/ap", "acme/other"}},
		{"acme/*, beta/platform ,acme/*", "acme/*,beta/platform", []string{"acme/x", "beta/platform"}, []string{"beta/x"}},
		{"my_org.x/repo-1.git", "my_org.x/repo-1.git", []string{"my_org.x/repo-1.git"}, []string{"my_org.x/repo-1"}},
		{"acme/*,*", "*", []string{"zeta/q"}, nil},
	} {
		g, err := cluster.ParseGrant(tt.value)
		if err != nil {
			t.Fatalf("ParseGrant(%q): %v", tt.value, err)
		}
		if g.String() != tt.canonical {
			t.Errorf("ParseGrant(%q) = %q, want %q", tt.value, g.String(), tt.canonical)
		}
		for _, r := range tt.covers {
			if !g.Covers(r) {
				t.Errorf("%q does not cover %s", tt.value, r)
			}
		}
		for _, r := range tt.not {
			if g.Covers(r) {
				t.Errorf("%q covers %s", tt.value, r)
			}
		}
	}
	for _, value := range []string{
		",", "acme/*,", ",acme/*", "acme/*,,beta/*", "acme", "acme/", "/app", "acme/app/x", "*/*", "*/app", "acme/a*",
		"acme/*x", "./app", "../app", "acme/..", "acme/.", "ac me/app", "acme/app\n", "acme/app\x00", "acme\u202e/app",
		"acme/ärger", "{cluster}/*", "acme/app;beta/app", strings.Repeat("a", 101) + "/app",
		strings.Repeat("a/b,", 256) + "a/b", strings.Repeat("a", 16<<10+1),
	} {
		if g, err := cluster.ParseGrant(value); !errors.Is(err, cluster.ErrInvalidGrant) {
			t.Errorf("ParseGrant(%.40q) = %q, %v: want an invalid grant", value, g.String(), err)
		} else if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "\x00") {
			t.Errorf("error %q carries the value", err)
		}
	}
	// The default's placeholder stands for the cluster's name.
	g, err := cluster.DefaultGrant("{cluster}/*,platform/fleet", "acme")
	if err != nil || g.String() != "acme/*,platform/fleet" {
		t.Fatalf("DefaultGrant = %q, %v", g.String(), err)
	}
	if err := cluster.CheckDefaultGrant("{cluster}"); err == nil {
		t.Fatal("a placeholder that is no entry passed")
	}
}

// A grant annotation is written by whoever writes the clusters' Secrets: whatever it holds,
// parsing it never panics, a grant that parses is canonical (its String parses to itself)
// and bounded, and it covers a repository exactly when one of its entries does.
func FuzzParseGrant(f *testing.F) {
	for _, s := range []string{"", "*", "acme/*", "acme/app,beta/*", " acme/App , beta/x ", ",", "acme/*,", "*/*", "a/..",
		"{cluster}/*", "acme/app\x00", strings.Repeat("a/b,", 300)} {
		f.Add(s, "acme/app")
	}
	f.Fuzz(func(t *testing.T, value, repository string) {
		g, err := cluster.ParseGrant(value)
		if err != nil {
			if !errors.Is(err, cluster.ErrInvalidGrant) || g.String() != "" {
				t.Fatalf("error %v with grant %q", err, g.String())
			}
			return
		}
		canonical := g.String()
		if len(canonical) > len(value) {
			t.Fatalf("canonical %q longer than %q", canonical, value)
		}
		again, err := cluster.ParseGrant(canonical)
		if err != nil || again.String() != canonical {
			t.Fatalf("canonical %q parses to %q, %v", canonical, again.String(), err)
		}
		covered := false
		for _, e := range strings.Split(canonical, ",") {
			owner, _, _ := strings.Cut(strings.ToLower(repository), "/")
			if e == "*" || e == strings.ToLower(repository) && strings.Contains(repository, "/") ||
				strings.HasSuffix(e, "/*") && strings.Contains(repository, "/") && owner == strings.TrimSuffix(e, "/*") {
				covered = true
			}
		}
		if g.Covers(repository) != covered {
			t.Fatalf("%q covers %q: %v, its entries say %v", canonical, repository, g.Covers(repository), covered)
		}
	})
}

// The grant of a registered cluster, played on two real API servers: a Secret's annotation
// grants it repositories besides public ones; a push of another repository is refused there
// (counted in the answer, nothing in the push record, nothing written into the cluster); a
// change of the annotation takes effect at the next push without a restart; a push accepted
// while granted and withdrawn before the worker requests it is not requested there; a grant
// that does not parse grants none.
func TestGrant(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	tenant := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	ns := fluxtest.Namespace(t)
	kc, err := os.ReadFile(tenant.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vc-tenant",
		Labels:      map[string]string{cluster.ClusterLabel: "tenant"},
		Annotations: map[string]string{cluster.RepositoriesAnnotation: "tenant/*"}}, Data: map[string][]byte{"config": kc}}
	if err := fluxtest.Kube.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	set := cluster.NewSet(fluxtest.Local)
	cs, err := kubernetes.NewForConfig(fluxtest.Kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The test's API servers listen on loopback: a category refused unless allowed.
		local, _ := cluster.ParseKubeconfigPolicy([]string{cluster.KubeconfigLocalAddress})
		_ = (&cluster.Secrets{Client: cs, Namespace: ns, Clusters: set, QPS: 50, Burst: 100, Policy: local, Keys: fluxtest.RecordKeys, Log: logr.Discard(),
			DefaultGrant: "*"}).Start(runCtx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	fluxtest.WaitFor(t, "tenant ready", func() bool { c := set.Get("tenant"); return c != nil && c.Ready() })
	registered := set.Get("tenant")

	// The platform's private repository feeds objects in both clusters; the tenant's own
	// repository, one in the tenant's.
	platform, own := "platform/fleet-"+fluxtest.RandomHex(3), "tenant/app-"+fluxtest.RandomHex(3)
	for _, c := range []client.Client{fluxtest.Kube.Client, tenant.Client} {
		for _, o := range []client.Object{
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			fluxtest.GitRepository(ns, "fleet", "https://"+fluxtest.ForgeHost+"/"+platform, &sourcev1.GitRepositoryRef{Branch: "main"}),
			fluxtest.Kustomization(ns, "fleet", "", "fleet"),
		} {
			if err := c.Create(ctx, o); err != nil && !strings.Contains(err.Error(), "already exists") {
				t.Fatal(err)
			}
		}
	}
	if err := tenant.Client.Create(ctx, fluxtest.GitRepository(ns, "app", "https://"+fluxtest.ForgeHost+"/"+own, &sourcev1.GitRepositoryRef{Branch: "main"})); err != nil {
		t.Fatal(err)
	}
	pushes := &record.PushStore{Client: fluxtest.Kube.Client, Reader: fluxtest.Kube.Client, Namespace: ns}
	r := fluxtest.NewRequester(t, set)
	r.Store, r.Worker.Store = pushes, pushes
	inTenant := func(outs []api.Outcome) int {
		return len(slices.DeleteFunc(slices.Clone(outs), func(o api.Outcome) bool { return o.Cluster != "tenant" }))
	}
	recorded := func(sha string) bool { // a request record of sha on any of the tenant's objects
		var list sourcev1.GitRepositoryList
		var ks kustomizev1.KustomizationList
		_ = tenant.Client.List(ctx, &list, client.InNamespace(ns))
		_ = tenant.Client.List(ctx, &ks, client.InNamespace(ns))
		var all []metav1.Object
		for i := range list.Items {
			all = append(all, &list.Items[i])
		}
		for i := range ks.Items {
			all = append(all, &ks.Items[i])
		}
		return slices.ContainsFunc(all, func(o metav1.Object) bool { return strings.Contains(o.GetAnnotations()[record.Annotation], sha) })
	}

	// 1. Its own repository, granted: requested there.
	fluxtest.WaitFor(t, "the tenant's own push requested", func() bool {
		res, err := r.Request(ctx, fluxtest.PushOf(own, "refs/heads/main", fluxtest.NewSHA()))
		return err == nil && inTenant(res.Targets) == 1
	})

	// 2. The platform's private repository: refused in the tenant's cluster, requested in
	// the local one; the push record does not list the tenant; nothing is written there.
	refusals := fluxtest.Counter(t, "flux_webhook_grant_refusals_total", "cluster", "tenant")
	sha := fluxtest.NewSHA()
	res, err := r.Request(ctx, fluxtest.PushOf(platform, "refs/heads/main", sha))
	if err != nil || inTenant(res.Targets) != 0 || len(res.Targets) != 2 ||
		!slices.Contains(res.Clusters, api.ClusterTargets{Cluster: "tenant", Refused: 2}) {
		t.Fatalf("private push: %v %v %v", fluxtest.Targets(res.Targets), res.Clusters, err)
	}
	if got := fluxtest.Counter(t, "flux_webhook_grant_refusals_total", "cluster", "tenant"); got != refusals+1 {
		t.Fatalf("refusals %v, want %v", got, refusals+1)
	}
	rec, err := pushes.Get(ctx, (record.Request{Repository: platform, Ref: "refs/heads/main", SHA: sha}).PushKey())
	if err != nil || slices.ContainsFunc(rec.Clusters, func(cw record.ClusterWork) bool { return cw.Cluster == "tenant" }) {
		t.Fatalf("push record %+v %v lists the tenant", rec, err)
	}
	if recorded(sha) {
		t.Fatal("the refused push was recorded in the tenant's cluster")
	}
	// Public, it is followed whatever the grant.
	pub := fluxtest.PushOf(platform, "refs/heads/main", fluxtest.NewSHA())
	pub.Public = true
	if res, err := r.Request(ctx, pub); err != nil || inTenant(res.Targets) != 2 {
		t.Fatalf("public push: %v %v", fluxtest.Targets(res.Targets), err)
	}

	// 3. Granted by a change of the annotation: taken at the next push, the cluster (its
	// cache) not restarted.
	annotate := func(value *string) {
		t.Helper()
		s := &corev1.Secret{}
		if err := fluxtest.Kube.Client.Get(ctx, client.ObjectKeyFromObject(secret), s); err != nil {
			t.Fatal(err)
		}
		base := s.DeepCopy()
		if value == nil {
			delete(s.Annotations, cluster.RepositoriesAnnotation)
		} else {
			s.Annotations[cluster.RepositoriesAnnotation] = *value
		}
		if err := fluxtest.Kube.Client.Patch(ctx, s, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	grant := func(v string) *string { return &v }
	start := time.Now()
	annotate(grant("tenant/*, " + strings.ToUpper(platform)))
	fluxtest.WaitFor(t, "the grant changed", func() bool {
		res, err := r.Request(ctx, fluxtest.PushOf(platform, "refs/heads/main", fluxtest.NewSHA()))
		return err == nil && inTenant(res.Targets) == 2
	})
	t.Logf("a new grant took effect %s after the annotation changed", time.Since(start).Round(time.Millisecond))
	if set.Get("tenant") != registered {
		t.Fatal("the cluster was registered again for a change of its grant")
	}

	// 4. Accepted while granted, withdrawn before the worker requests it: not requested
	// there, and the push record forgets the cluster.
	late := fluxtest.PushOf(platform, "refs/heads/main", fluxtest.NewSHA())
	if res, err := r.Accept(ctx, late); err != nil || inTenant(res.Targets) != 2 {
		t.Fatalf("accept: %v %v", fluxtest.Targets(res.Targets), err)
	}
	annotate(grant(""))
	fluxtest.WaitFor(t, "the grant withdrawn", func() bool { return registered.GrantString() == "" })
	key := (record.Request{Repository: platform, Ref: "refs/heads/main", SHA: late.SHA}).PushKey()
	outs, err := r.Worker.Request(ctx, key)
	if err != nil || inTenant(outs) != 0 || len(outs) != 2 {
		t.Fatalf("worker: %v %v", fluxtest.Targets(outs), err)
	}
	if rec, err := pushes.Get(ctx, key); err != nil || slices.ContainsFunc(rec.Clusters, func(cw record.ClusterWork) bool { return cw.Cluster == "tenant" }) {
		t.Fatalf("push record %+v %v", rec, err)
	}
	if recorded(late.SHA) {
		t.Fatal("the withdrawn push was recorded in the tenant's cluster")
	}

	// 5. A grant that does not parse grants none (not the default, "*"); without the
	// annotation the default holds.
	annotate(grant("tenant/*,,platform/*"))
	fluxtest.WaitFor(t, "the invalid grant taken as none", func() bool {
		res, err := r.Request(ctx, fluxtest.PushOf(own, "refs/heads/main", fluxtest.NewSHA()))
		return err == nil && inTenant(res.Targets) == 0 && slices.Contains(res.Clusters, api.ClusterTargets{Cluster: "tenant", Refused: 1})
	})
	annotate(nil)
	fluxtest.WaitFor(t, "the default grant", func() bool { return registered.GrantString() == "*" })
}
