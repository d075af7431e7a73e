package testenv

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"
	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestPathsErrors(t *testing.T) {
	missing := t.TempDir() + "/nope"
	tests := []struct {
		name    string
		env     string
		value   string
		require func(Assets) error
		want    []string
	}{
		{"kube unset", EnvKubebuilderAssets, "", func(a Assets) error { _, err := a.RequireKube(); return err }, []string{EnvKubebuilderAssets, "is not set", "make testbin", "hack/testbin.sh"}},
		{"kube missing", EnvKubebuilderAssets, missing, func(a Assets) error { _, err := a.RequireKube(); return err }, []string{EnvKubebuilderAssets, missing, "make testbin"}},
		{"crds unset", EnvCRDs, "", func(a Assets) error { _, err := a.RequireCRDs(); return err }, []string{EnvCRDs, "make testbin"}},
		{"gitea missing", EnvGitea, missing, func(a Assets) error { _, _, err := a.RequireGitea(); return err }, []string{EnvGitea, missing, "make testbin"}},
		{"runner unset", EnvGiteaRunner, "", func(a Assets) error { _, err := a.RequireGiteaRunner(); return err }, []string{EnvGiteaRunner, "make testbin"}},
		{"flux missing", EnvFluxBin, missing, func(a Assets) error { _, err := a.RequireFlux(); return err }, []string{EnvFluxBin, missing, "make testbin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			err := tt.require(Paths())
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// real skips the test under -short; otherwise a missing binary fails it (in NewX).
func real(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real processes; skipped under -short")
	}
}

// eventually calls f every 100 ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestKube(t *testing.T) {
	real(t)
	ctx := t.Context()
	t0 := time.Now()
	k := NewKube(t, KubeOptions{CRDs: true})
	t.Logf("envtest with CRDs up in %s", time.Since(t0).Round(time.Millisecond))

	gr := &sourcev1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Spec:       sourcev1.GitRepositorySpec{URL: "http://127.0.0.1:1/o/r.git", Interval: metav1.Duration{Duration: time.Minute}},
	}
	if err := k.Client.Create(ctx, gr); err != nil {
		t.Fatal(err)
	}

	// The kubeconfig file works on its own.
	cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := kc.Get(ctx, client.ObjectKeyFromObject(gr), &sourcev1.GitRepository{}); err != nil {
		t.Fatalf("get through kubeconfig: %v", err)
	}

	// Through a proxy, the API server can be cut off and reached again.
	proxy, err := StartProxy(k.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Cut()
	via, err := proxy.KubeconfigVia(ctx, k.Kubeconfig, t.TempDir(), "via-proxy")
	if err != nil {
		t.Fatal(err)
	}
	pcfg, err := clientcmd.BuildConfigFromFlags("", via)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.Timeout = 2 * time.Second
	pc, err := client.New(pcfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.Get(ctx, client.ObjectKeyFromObject(gr), &sourcev1.GitRepository{}); err != nil {
		t.Fatalf("get through the proxy: %v", err)
	}
	proxy.Cut()
	if err := pc.Get(ctx, client.ObjectKeyFromObject(gr), &sourcev1.GitRepository{}); err == nil {
		t.Fatal("get succeeded while cut off")
	}
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := pc.Get(ctx, client.ObjectKeyFromObject(gr), &sourcev1.GitRepository{}); err != nil {
		t.Fatalf("get after restore: %v", err)
	}
}

func TestFluxStatus(t *testing.T) {
	real(t)
	ctx := t.Context()
	k := NewKube(t, KubeOptions{CRDs: true})
	c := k.Client
	ns := "default"
	key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
	interval := metav1.Duration{Duration: time.Minute}
	objs := []client.Object{
		&sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Name: "gr", Namespace: ns, Annotations: map[string]string{meta.ReconcileRequestAnnotation: "tok-1"}},
			Spec: sourcev1.GitRepositorySpec{URL: "http://127.0.0.1:1/o/r.git", Interval: interval}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Name: "ks", Namespace: ns},
			Spec: kustomizev1.KustomizationSpec{Interval: interval, Prune: true, SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "gr"}}},
		&sourcev1.HelmChart{ObjectMeta: metav1.ObjectMeta{Name: "default-hr", Namespace: ns},
			Spec: sourcev1.HelmChartSpec{Chart: "./charts/app", Interval: interval, SourceRef: sourcev1.LocalHelmChartSourceReference{Kind: "GitRepository", Name: "gr"}}},
		&helmv2.HelmRelease{ObjectMeta: metav1.ObjectMeta{Name: "hr", Namespace: ns},
			Spec: helmv2.HelmReleaseSpec{Interval: interval, Chart: &helmv2.HelmChartTemplate{Spec: helmv2.HelmChartTemplateSpec{
				Chart: "./charts/app", SourceRef: &helmv2.CrossNamespaceObjectReference{Kind: "GitRepository", Name: "gr"}}}}},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	rev := GitRevision("main", strings.Repeat("ab", 20))
	chart := key("default-hr")

	tests := []struct {
		name  string
		mark  func() error
		obj   client.Object
		check func(o client.Object) string // "" when fine
	}{
		{"gitrepository ready", func() error { return MarkGitRepositoryReady(ctx, c, key("gr"), rev, "") }, &sourcev1.GitRepository{},
			func(o client.Object) string {
				s := o.(*sourcev1.GitRepository).Status
				return checkAll(s.Artifact != nil && s.Artifact.Revision == rev, s.LastHandledReconcileAt == "tok-1",
					readyIs(s.Conditions, metav1.ConditionTrue, meta.SucceededReason, o.GetGeneration()))
			}},
		{"gitrepository failed", func() error {
			return MarkGitRepositoryFailed(ctx, c, key("gr"), "tok-2", sourcev1.GitOperationFailedReason, "boom")
		}, &sourcev1.GitRepository{},
			func(o client.Object) string {
				s := o.(*sourcev1.GitRepository).Status
				return checkAll(s.Artifact != nil && s.Artifact.Revision == rev, s.LastHandledReconcileAt == "tok-2",
					readyIs(s.Conditions, metav1.ConditionFalse, sourcev1.GitOperationFailedReason, o.GetGeneration()))
			}},
		{"kustomization applied", func() error { return MarkKustomizationApplied(ctx, c, key("ks"), rev, "tok-3") }, &kustomizev1.Kustomization{},
			func(o client.Object) string {
				s := o.(*kustomizev1.Kustomization).Status
				return checkAll(s.LastAppliedRevision == rev, s.LastAttemptedRevision == rev, s.LastHandledReconcileAt == "tok-3",
					readyIs(s.Conditions, metav1.ConditionTrue, meta.ReconciliationSucceededReason, o.GetGeneration()))
			}},
		{"kustomization failed", func() error {
			return MarkKustomizationFailed(ctx, c, key("ks"), "main@sha1:ffff", "tok-4", meta.ReconciliationFailedReason, "dry-run failed")
		}, &kustomizev1.Kustomization{},
			func(o client.Object) string {
				s := o.(*kustomizev1.Kustomization).Status
				return checkAll(s.LastAppliedRevision == rev, s.LastAttemptedRevision == "main@sha1:ffff",
					readyIs(s.Conditions, metav1.ConditionFalse, meta.ReconciliationFailedReason, o.GetGeneration()))
			}},
		{"helmchart ready", func() error { return MarkHelmChartReady(ctx, c, chart, rev, "1.2.3", "") }, &sourcev1.HelmChart{},
			func(o client.Object) string {
				s := o.(*sourcev1.HelmChart).Status
				return checkAll(s.ObservedSourceArtifactRevision == rev, s.Artifact != nil && s.Artifact.Revision == "1.2.3",
					readyIs(s.Conditions, metav1.ConditionTrue, sourcev1.ChartPackageSucceededReason, o.GetGeneration()))
			}},
		{"helmrelease ready", func() error { return MarkHelmReleaseReady(ctx, c, key("hr"), chart, "1.2.3", "tok-5") }, &helmv2.HelmRelease{},
			func(o client.Object) string {
				s := o.(*helmv2.HelmRelease).Status
				return checkAll(s.HelmChart == "default/default-hr", s.LastAttemptedRevision == "1.2.3", s.LastHandledReconcileAt == "tok-5",
					readyIs(s.Conditions, metav1.ConditionTrue, helmv2.InstallSucceededReason, o.GetGeneration()))
			}},
		{"helmrelease failed", func() error {
			return MarkHelmReleaseFailed(ctx, c, key("hr"), chart, "1.2.4", "tok-6", helmv2.UpgradeFailedReason, "timeout")
		}, &helmv2.HelmRelease{},
			func(o client.Object) string {
				s := o.(*helmv2.HelmRelease).Status
				return checkAll(s.LastAttemptedRevision == "1.2.4", s.Failures == 1,
					readyIs(s.Conditions, metav1.ConditionFalse, helmv2.UpgradeFailedReason, o.GetGeneration()))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.mark(); err != nil {
				t.Fatal(err)
			}
			name := map[string]string{"gitrepository": "gr", "kustomization": "ks", "helmchart": "default-hr", "helmrelease": "hr"}[strings.Fields(tt.name)[0]]
			if err := c.Get(ctx, key(name), tt.obj); err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(tt.obj); msg != "" {
				t.Errorf("%s; status: %s", msg, mustJSON(tt.obj))
			}
		})
	}
}

func checkAll(checks ...any) string {
	for i, c := range checks {
		switch c := c.(type) {
		case bool:
			if !c {
				return fmt.Sprintf("check %d failed", i)
			}
		case string:
			if c != "" {
				return c
			}
		}
	}
	return ""
}

func readyIs(conds []metav1.Condition, status metav1.ConditionStatus, reason string, gen int64) string {
	r := apimeta.FindStatusCondition(conds, meta.ReadyCondition)
	if r == nil || r.Status != status || r.Reason != reason || r.ObservedGeneration != gen {
		return fmt.Sprintf("Ready is %+v, want %s/%s at generation %d", r, status, reason, gen)
	}
	return ""
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// hookRecorder is a webhook receiver that keeps every request.
type hookRecorder struct {
	reqs chan recorded
}

type recorded struct {
	header http.Header
	body   []byte
}

func newHookRecorder(t *testing.T) (*hookRecorder, *httptest.Server) {
	h := &hookRecorder{reqs: make(chan recorded, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.reqs <- recorded{r.Header.Clone(), b}
	}))
	t.Cleanup(srv.Close)
	return h, srv
}

func (h *hookRecorder) next(t *testing.T, timeout time.Duration) recorded {
	t.Helper()
	select {
	case r := <-h.reqs:
		return r
	case <-time.After(timeout):
		t.Fatalf("nothing received in %s", timeout)
		return recorded{}
	}
}

func TestGitea(t *testing.T) {
	real(t)
	ctx := t.Context()
	t0 := time.Now()
	g := NewGitea(t)
	t.Logf("gitea %s up in %s at %s", g.Version, time.Since(t0).Round(time.Millisecond), g.URL)

	repo, err := g.CreateRepo(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if want := g.URL + "/" + g.AdminUser + "/app.git"; repo.CloneURL != want {
		t.Errorf("CloneURL = %q, want %q", repo.CloneURL, want)
	}
	if err := repo.WriteFile("deploy/cm.yaml", "kind: ConfigMap\n"); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx); err != nil {
		t.Fatal(err)
	}

	// Commit statuses, posted with the SDK, read back.
	c, err := g.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.CreateStatus(repo.Owner, repo.Name, sha, gitea.CreateStatusOption{State: gitea.StatusSuccess, Context: "flux/app", Description: "applied"}); err != nil {
		t.Fatal(err)
	}
	cs, err := repo.CombinedStatus(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	if cs.State != gitea.StatusSuccess || cs.TotalCount != 1 {
		t.Errorf("combined status = %s (%d), want success (1)", cs.State, cs.TotalCount)
	}
	if st, err := repo.Statuses(ctx, sha); err != nil || len(st) != 1 || st[0].Context != "flux/app" {
		t.Errorf("statuses = %v, %v", st, err)
	}

	// A native webhook with a secret and an Authorization header reaches a loopback server.
	rec, srv := newHookRecorder(t)
	if _, err := repo.AddWebhook(ctx, srv.URL+"/hook", "s3cret", "Bearer hook-token"); err != nil {
		t.Fatal(err)
	}
	if err := repo.Branch(ctx, "feature"); err != nil {
		t.Fatal(err)
	}
	if err := repo.Remove("deploy"); err != nil {
		t.Fatal(err)
	}
	head, err := repo.Commit(ctx, "on feature")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx); err != nil {
		t.Fatal(err)
	}
	r := rec.next(t, 20*time.Second)
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(r.body)
	if got := r.header.Get("X-Gitea-Signature"); got != hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("X-Gitea-Signature %q does not match the body", got)
	}
	if got := r.header.Get("Authorization"); got != "Bearer hook-token" {
		t.Errorf("Authorization = %q", got)
	}
	var push struct{ Ref, After string }
	if err := json.Unmarshal(r.body, &push); err != nil || push.Ref != "refs/heads/feature" || push.After != head {
		t.Errorf("push payload ref=%q after=%q (%v), want refs/heads/feature %s", push.Ref, push.After, err, head)
	}

	// Tags push too.
	if err := repo.Tag(ctx, "v0.1.0"); err != nil {
		t.Fatal(err)
	}
	if err := repo.PushTag(ctx, "v0.1.0"); err != nil {
		t.Fatal(err)
	}

	// A pull request, and comments on it.
	pr, err := repo.CreatePullRequest(ctx, "feature", "main", "Feature")
	if err != nil {
		t.Fatal(err)
	}
	if pr.Head.Sha != head {
		t.Errorf("PR head %s, want %s", pr.Head.Sha, head)
	}
	if _, _, err := c.CreateIssueComment(repo.Owner, repo.Name, pr.Index, gitea.CreateIssueCommentOption{Body: "applied"}); err != nil {
		t.Fatal(err)
	}
	if cm, err := repo.IssueComments(ctx, pr.Index); err != nil || len(cm) != 1 || cm[0].Body != "applied" {
		t.Errorf("comments = %v, %v", cm, err)
	}

	// Kill and restart: same URL, same state.
	g.Kill()
	if _, err := repo.CombinedStatus(ctx, sha); err == nil {
		t.Fatal("gitea answers after Kill")
	}
	t0 = time.Now()
	if err := g.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("gitea restarted in %s", time.Since(t0).Round(time.Millisecond))
	if cs, err := repo.CombinedStatus(ctx, sha); err != nil || cs.State != gitea.StatusSuccess {
		t.Errorf("after restart: %v, %v", cs, err)
	}
}

func TestRunner(t *testing.T) {
	real(t)
	ctx := t.Context()
	g := NewGitea(t)
	t0 := time.Now()
	NewRunner(t, g)
	t.Logf("runner online in %s", time.Since(t0).Round(time.Millisecond))

	rec, srv := newHookRecorder(t)
	repo, err := g.CreateRepo(ctx, "ci")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.SetActionSecret(ctx, "FLUX_WEBHOOK_TOKEN", "tok-123"); err != nil {
		t.Fatal(err)
	}
	if err := repo.WriteFile(".gitea/workflows/ping.yml", `name: ping
on: [push]
jobs:
  ping:
    runs-on: linux
    steps:
      - run: |
          curl -fsS -H "Authorization: Bearer ${{ secrets.FLUX_WEBHOOK_TOKEN }}" -d '${{ github.sha }}' `+srv.URL+`/from-actions
`); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit(ctx, "workflow")
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if err := repo.Push(ctx); err != nil {
		t.Fatal(err)
	}
	r := rec.next(t, 90*time.Second)
	t.Logf("workflow step reached the loopback server %s after the push", time.Since(t0).Round(time.Millisecond))
	if string(r.body) != sha || r.header.Get("Authorization") != "Bearer tok-123" {
		t.Errorf("got body %q, Authorization %q; want %s and the secret", r.body, r.header.Get("Authorization"), sha)
	}
}

func TestFlux(t *testing.T) {
	real(t)
	ctx := t.Context()
	k := NewKube(t, KubeOptions{CRDs: true})
	g := NewGitea(t)
	t0 := time.Now()
	NewFlux(t, k.Kubeconfig)
	t.Logf("flux controllers ready in %s", time.Since(t0).Round(time.Millisecond))

	repo, err := g.CreateRepo(ctx, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	cm := func(v string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  value: \"" + v + "\"\n"
	}
	if err := repo.WriteFile("app-config.yaml", cm("v1")); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx); err != nil {
		t.Fatal(err)
	}

	c := k.Client
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flux-system"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gitea-auth", Namespace: "flux-system"},
			StringData: map[string]string{"username": g.AdminUser, "password": g.Token}},
		&sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "flux-system"},
			Spec: sourcev1.GitRepositorySpec{URL: repo.CloneURL, Interval: metav1.Duration{Duration: time.Minute},
				Reference: &sourcev1.GitRepositoryRef{Branch: "main"}, SecretRef: &meta.LocalObjectReference{Name: "gitea-auth"},
				Timeout: &metav1.Duration{Duration: time.Minute}}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "flux-system"},
			Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: 10 * time.Minute}, Path: "./", Prune: true,
				TargetNamespace: "default", Timeout: &metav1.Duration{Duration: time.Minute},
				RetryInterval: &metav1.Duration{Duration: 10 * time.Second},
				SourceRef:     kustomizev1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "app"}}},
	}
	t0 = time.Now()
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	applied := func(rev, value string) func() error {
		return func() error {
			var ks kustomizev1.Kustomization
			if err := c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "app"}, &ks); err != nil {
				return err
			}
			if ks.Status.LastAppliedRevision != rev {
				return fmt.Errorf("lastAppliedRevision %q, want %q; conditions %v", ks.Status.LastAppliedRevision, rev, ks.Status.Conditions)
			}
			var got corev1.ConfigMap
			if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "app-config"}, &got); err != nil {
				return err
			}
			if got.Data["value"] != value {
				return fmt.Errorf("app-config value %q, want %q", got.Data["value"], value)
			}
			return nil
		}
	}
	eventually(t, 2*time.Minute, applied(GitRevision("main", sha), "v1"))
	t.Logf("first apply %s after creating GitRepository+Kustomization", time.Since(t0).Round(time.Millisecond))

	// A new commit plus requestedAt on the GitRepository: applied within seconds.
	if err := repo.WriteFile("app-config.yaml", cm("v2")); err != nil {
		t.Fatal(err)
	}
	if sha, err = repo.Commit(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	var src sourcev1.GitRepository
	if err := c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "app"}, &src); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(src.DeepCopy())
	src.SetAnnotations(map[string]string{meta.ReconcileRequestAnnotation: time.Now().Format(time.RFC3339Nano)})
	if err := c.Patch(ctx, &src, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, applied(GitRevision("main", sha), "v2"))
	t.Logf("requestedAt → lastAppliedRevision in %s", time.Since(t0).Round(time.Millisecond))
}
