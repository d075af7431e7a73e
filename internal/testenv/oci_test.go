package testenv

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/oci"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var capture = flag.Bool("capture", false, "record the package webhook events of a real Gitea into testdata/gitea-package-event*")

// captureSecret is the webhook secret of the recorded events: their signature headers are
// HMAC-SHA256 of the .body.json files with this key.
const captureSecret = "capture-secret"

func TestFluxMediaTypes(t *testing.T) {
	if FluxConfigMediaType != string(oci.CanonicalConfigMediaType) || FluxContentMediaType != string(oci.CanonicalContentMediaType) {
		t.Errorf("media types %s %s differ from fluxcd/pkg/oci's %s %s", FluxConfigMediaType, FluxContentMediaType,
			oci.CanonicalConfigMediaType, oci.CanonicalContentMediaType)
	}
}

func TestParseGitRevision(t *testing.T) {
	sha := strings.Repeat("0a", 20)
	for _, tt := range []struct {
		in, ref, commit string
		ok              bool
	}{
		{"main@sha1:" + sha, "main", sha, true},
		{"refs/heads/main@sha1:" + sha, "refs/heads/main", sha, true},
		{"a@b@sha1:" + sha, "a@b", sha, true},
		{"sha1:" + sha, "", sha, true},
		{sha, "", sha, true},
		{"latest@sha256:" + sha, "", "", false},
		{"main@sha1:abc", "", "", false},
		{"", "", "", false},
	} {
		ref, commit, ok := ParseGitRevision(tt.in)
		if ref != tt.ref || commit != tt.commit || ok != tt.ok {
			t.Errorf("ParseGitRevision(%q) = %q, %q, %v; want %q, %q, %v", tt.in, ref, commit, ok, tt.ref, tt.commit, tt.ok)
		}
	}
}

// delivery is one webhook request as received.
type delivery struct {
	path   string
	header http.Header
	body   []byte
	at     time.Time
}

func newDeliveries(t *testing.T) (chan delivery, *httptest.Server) {
	ch := make(chan delivery, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ch <- delivery{r.URL.Path, r.Header.Clone(), b, time.Now()}
	}))
	t.Cleanup(srv.Close)
	return ch, srv
}

// nextDeliveries waits for n deliveries, then a little longer to catch any extra one.
func nextDeliveries(t *testing.T, ch chan delivery, n int, timeout time.Duration) []delivery {
	t.Helper()
	var got []delivery
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case d := <-ch:
			got = append(got, d)
		case <-deadline:
			t.Fatalf("got %d of %d webhook deliveries in %s", len(got), n, timeout)
		}
	}
	select {
	case d := <-ch:
		t.Errorf("unexpected extra delivery to %s: %s", d.path, d.body)
	case <-time.After(time.Second):
	}
	slices.SortFunc(got, func(a, b delivery) int { return strings.Compare(a.path, b.path) })
	return got
}

// packageEvent is the part of Gitea's package event payload the test checks.
type packageEvent struct {
	Action  string `json:"action"`
	Package *struct {
		ID         int64             `json:"id"`
		Type       string            `json:"type"`
		Name       string            `json:"name"`
		Version    string            `json:"version"`
		HTMLURL    string            `json:"html_url"`
		Owner      *gitea.User       `json:"owner"`
		Creator    *gitea.User       `json:"creator"`
		Repository *gitea.Repository `json:"repository"`
	} `json:"package"`
	Repository   *gitea.Repository   `json:"repository"`
	Organization *gitea.Organization `json:"organization"`
	Sender       *gitea.User         `json:"sender"`
}

func checkPackageEvent(t *testing.T, d delivery, owner, name, version, linkedRepo string) packageEvent {
	t.Helper()
	if ev := d.header.Get("X-Gitea-Event"); ev != "package" {
		t.Errorf("X-Gitea-Event = %q, want package", ev)
	}
	mac := hmac.New(sha256.New, []byte(captureSecret))
	mac.Write(d.body)
	if got := d.header.Get("X-Gitea-Signature"); got != hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("X-Gitea-Signature %q does not match the body", got)
	}
	var ev packageEvent
	if err := json.Unmarshal(d.body, &ev); err != nil {
		t.Fatalf("package event: %v: %s", err, d.body)
	}
	p := ev.Package
	switch {
	case ev.Action != "created" || p == nil:
		t.Errorf("action %q, package %v; want created", ev.Action, p)
	case p.Type != "container" || p.Name != name || p.Version != version || p.Owner == nil || p.Owner.UserName != owner:
		t.Errorf("package %s %s %s of %v; want container %s %s of %s", p.Type, p.Name, p.Version, p.Owner, name, version, owner)
	case linkedRepo == "" && p.Repository != nil:
		t.Errorf("package.repository = %s, want null (not linked)", p.Repository.FullName)
	case linkedRepo != "" && (p.Repository == nil || p.Repository.FullName != linkedRepo):
		t.Errorf("package.repository = %v, want %s", p.Repository, linkedRepo)
	case ev.Repository != nil:
		t.Errorf("top-level repository = %s, want null", ev.Repository.FullName)
	}
	return ev
}

// recordEvent writes d as testdata/NAME.json (headers with Authorization redacted, the body
// as JSON) and the body exactly as delivered as testdata/NAME.body.json.
func recordEvent(t *testing.T, name, giteaVersion, hook string, d delivery) {
	t.Helper()
	h := map[string]string{}
	for k, v := range d.header {
		h[k] = strings.Join(v, ", ")
	}
	if h["Authorization"] != "" {
		h["Authorization"] = "Bearer <redacted>"
	}
	rec := struct {
		Note    string            `json:"_note"`
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	}{
		Note: fmt.Sprintf("Gitea %s, %s; %s.body.json is the body exactly as delivered: X-Gitea-Signature and "+
			"X-Hub-Signature-256 are HMAC-SHA256 of it with the secret %q. Regenerate: go test ./internal/testenv -run TestOCI -capture",
			giteaVersion, hook, name, captureSecret),
		Headers: h,
		Body:    d.body,
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	for file, content := range map[string][]byte{name + ".json": append(b, '\n'), name + ".body.json": d.body} {
		if err := os.WriteFile(filepath.Join("testdata", file), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOCI proves the OCI path on the real parts: a Flux artifact pushed to Gitea's
// registry fires a package webhook event, source-controller pulls it (OCIRepository),
// kustomize-controller applies it and reports the Git commit it was built from, and a
// Helm chart pushed to the same registry is pulled through an OCI HelmRepository.
func TestOCI(t *testing.T) {
	real(t)
	ctx := t.Context()
	begin := time.Now()
	k := NewKube(t, KubeOptions{CRDs: true})
	g := NewGitea(t)
	NewFlux(t, k.Kubeconfig)
	t.Logf("kube, gitea %s and flux up in %s", g.Version, time.Since(begin).Round(time.Millisecond))

	// A private organisation with a private repository; package events go to the
	// organisation's webhook, and to the repository's only once the package is linked.
	const org, pkg = "platform", "fleet-manifests"
	if err := g.CreateOrg(ctx, org, gitea.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	repo, err := g.CreateOrgRepo(ctx, org, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	hooks, srv := newDeliveries(t)
	if _, err := g.AddOrgHook(ctx, org, Hook{URL: srv.URL + "/org", Secret: captureSecret, Authorization: "Bearer org-hook-token",
		Events: []string{"package"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.AddHook(ctx, Hook{URL: srv.URL + "/repo", Secret: captureSecret, Events: []string{"package"}}); err != nil {
		t.Fatal(err)
	}

	cm := func(v string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  value: \"" + v + "\"\n"
	}
	commit := func(v string) string {
		t.Helper()
		if err := repo.WriteFile("deploy/app-config.yaml", cm(v)); err != nil {
			t.Fatal(err)
		}
		sha, err := repo.Commit(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.Push(ctx); err != nil {
			t.Fatal(err)
		}
		return sha
	}
	artifact := func(sha string) FluxArtifact {
		return FluxArtifact{Dir: filepath.Join(repo.Dir, "deploy"), Repository: org + "/" + pkg, Tag: "latest",
			Source: repo.CloneURL, Revision: GitRevision("main", sha)}
	}

	// 1. Push an artifact built from commit v1: one package event, to the organisation's hook.
	sha1 := commit("v1")
	t0 := time.Now()
	digest1, err := g.PushFluxArtifact(ctx, artifact(sha1))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed %s:latest = %s in %s", pkg, digest1, time.Since(t0).Round(time.Millisecond))
	ds := nextDeliveries(t, hooks, 1, 20*time.Second)
	t.Logf("package event at the org hook %s after the push started; headers %v", ds[0].at.Sub(t0).Round(time.Millisecond), headerKeys(ds[0].header))
	if ds[0].path != "/org" {
		t.Errorf("delivered to %s, want /org", ds[0].path)
	}
	checkPackageEvent(t, ds[0], org, pkg, "latest", "")
	if got := ds[0].header.Get("Authorization"); got != "Bearer org-hook-token" {
		t.Errorf("Authorization = %q", got)
	}
	if *capture {
		recordEvent(t, "gitea-package-event", g.Version, "organisation webhook (type gitea, content type json, events [package]) of "+
			"the private org "+org+"; the package is not linked to a repository", ds[0])
	}

	// The manifest as Gitea serves it: Flux's annotations; not readable anonymously.
	d, ann, err := g.ManifestAnnotations(ctx, org+"/"+pkg+":latest", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if d != digest1 || ann[AnnotationRevision] != GitRevision("main", sha1) || ann[AnnotationSource] != repo.CloneURL || ann[AnnotationCreated] == "" {
		t.Errorf("manifest %s annotations %v", d, ann)
	}
	if _, _, err := g.ManifestAnnotations(ctx, org+"/"+pkg+":latest", Anonymous, ""); err == nil {
		t.Error("a private organisation's package is readable anonymously")
	} else {
		t.Logf("anonymous read of a private org's package: %v", err)
	}

	// The registry API as is: basic auth with a token is enough, no bearer-token dance.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/v2/"+org+"/"+pkg+"/manifests/latest", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	req.SetBasicAuth(g.AdminUser, g.Token)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Error(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("GET /v2/%s/%s/manifests/latest with basic auth: %d, Content-Type %q, Docker-Content-Digest %q: %s", org, pkg,
			resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Docker-Content-Digest"), b)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != digest1 {
			t.Errorf("manifest by basic auth: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
		}
	}
	req.Header.Del("Authorization")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Logf("the same without credentials: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Values("WWW-Authenticate"))
	}

	// 2. The package API, and linking the package to the repository.
	pkgPath := "/packages/" + org + "/container/" + pkg
	code, body, err := g.API(ctx, http.MethodGet, pkgPath+"/latest", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s/latest: %d %s %v", pkgPath, code, body, err)
	}
	t.Logf("GET /api/v1%s/latest (not linked): %s", pkgPath, compactJSON(body))
	if code, body, _ := g.API(ctx, http.MethodGet, pkgPath+"/latest/files", nil); code == http.StatusOK {
		t.Logf("GET /api/v1%s/latest/files: %s", pkgPath, compactJSON(body))
	}
	if err := g.LinkPackage(ctx, org, "container", pkg, repo.Name); err != nil {
		t.Fatal(err)
	}
	code, body, _ = g.API(ctx, http.MethodPost, pkgPath+"/-/link/"+repo.Name, nil)
	t.Logf("linking again: %d %s", code, bytes.TrimSpace(body))
	var linked gitea.Package
	if code, body, err := g.API(ctx, http.MethodGet, pkgPath+"/latest", nil); err != nil || code != http.StatusOK || json.Unmarshal(body, &linked) != nil ||
		linked.Repository == nil || linked.Repository.FullName != repo.FullName {
		t.Fatalf("after linking: %d %s %v", code, body, err)
	}

	// 3. Flux pulls the artifact from Gitea's registry and applies it.
	c := k.Client
	ns := "flux-system"
	key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		g.RegistrySecret(ns, "gitea-registry", "", ""),
		&sourcev1.OCIRepository{ObjectMeta: metav1.ObjectMeta{Name: "fleet", Namespace: ns},
			Spec: sourcev1.OCIRepositorySpec{URL: g.OCIURL(org + "/" + pkg), Reference: &sourcev1.OCIRepositoryRef{Tag: "latest"},
				Insecure: true, SecretRef: &meta.LocalObjectReference{Name: "gitea-registry"},
				Interval: &metav1.Duration{Duration: 10 * time.Minute}, Timeout: &metav1.Duration{Duration: time.Minute}}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Name: "fleet", Namespace: ns},
			Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: 10 * time.Minute}, Path: "./", Prune: true,
				TargetNamespace: "default", Timeout: &metav1.Duration{Duration: time.Minute},
				RetryInterval: &metav1.Duration{Duration: 10 * time.Second},
				SourceRef:     kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.OCIRepositoryKind, Name: "fleet"}}},
	}
	t0 = time.Now()
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	var (
		src sourcev1.OCIRepository
		ks  kustomizev1.Kustomization
	)
	applied := func(digest, sha, value, handled string) func() error {
		return func() error {
			if err := c.Get(ctx, key("fleet"), &src); err != nil {
				return err
			}
			if a := src.Status.Artifact; a == nil || a.Revision != "latest@"+digest || src.Status.LastHandledReconcileAt != handled {
				return fmt.Errorf("OCIRepository artifact %+v, lastHandledReconcileAt %q; conditions %v", a, src.Status.LastHandledReconcileAt, src.Status.Conditions)
			}
			if err := c.Get(ctx, key("fleet"), &ks); err != nil {
				return err
			}
			if ks.Status.LastAppliedRevision != "latest@"+digest || ks.Status.LastAppliedOriginRevision != GitRevision("main", sha) {
				return fmt.Errorf("Kustomization lastAppliedRevision %q, lastAppliedOriginRevision %q; conditions %v",
					ks.Status.LastAppliedRevision, ks.Status.LastAppliedOriginRevision, ks.Status.Conditions)
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
	eventually(t, 2*time.Minute, applied(digest1, sha1, "v1", ""))
	t.Logf("first apply %s after creating OCIRepository+Kustomization", time.Since(t0).Round(time.Millisecond))
	t.Logf("OCIRepository status: %s", mustJSON(src.Status))
	t.Logf("Kustomization status: lastAppliedRevision %q lastAppliedOriginRevision %q lastAttemptedRevision %q; Ready %s",
		ks.Status.LastAppliedRevision, ks.Status.LastAppliedOriginRevision, ks.Status.LastAttemptedRevision,
		mustJSON(apimeta.FindStatusCondition(ks.Status.Conditions, meta.ReadyCondition)))
	if md := src.Status.Artifact.Metadata; md[AnnotationRevision] != GitRevision("main", sha1) || md[AnnotationSource] != repo.CloneURL {
		t.Errorf("status.artifact.metadata = %v, want the manifest's annotations", md)
	}

	// The commit the artifact was built from takes a status, on the linked repository.
	_, origin, ok := ParseGitRevision(ks.Status.LastAppliedOriginRevision)
	if !ok || origin != sha1 {
		t.Fatalf("origin revision %q", ks.Status.LastAppliedOriginRevision)
	}
	gc, err := g.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := gc.CreateStatus(linked.Repository.Owner.UserName, linked.Repository.Name, origin,
		gitea.CreateStatusOption{State: gitea.StatusSuccess, Context: "flux/fleet", Description: "applied " + ks.Status.LastAppliedRevision}); err != nil {
		t.Fatal(err)
	}
	if cs, err := repo.CombinedStatus(ctx, origin); err != nil || cs.State != gitea.StatusSuccess {
		t.Errorf("combined status %v, %v", cs, err)
	}

	// 4. A new commit, its artifact pushed under the same tag: events to the organisation
	// and (linked now) the repository; requestedAt on the OCIRepository applies it.
	sha2 := commit("v2")
	t0 = time.Now()
	digest2, err := g.PushFluxArtifact(ctx, artifact(sha2))
	if err != nil {
		t.Fatal(err)
	}
	ds = nextDeliveries(t, hooks, 2, 20*time.Second)
	t.Logf("package events at the org and repo hooks %s and %s after the push started", ds[0].at.Sub(t0).Round(time.Millisecond), ds[1].at.Sub(t0).Round(time.Millisecond))
	if ds[0].path != "/org" || ds[1].path != "/repo" {
		t.Errorf("delivered to %s and %s, want /org and /repo", ds[0].path, ds[1].path)
	}
	for _, d := range ds {
		checkPackageEvent(t, d, org, pkg, "latest", repo.FullName)
	}
	if *capture {
		recordEvent(t, "gitea-package-event-linked", g.Version, "repository webhook (type gitea, content type json, events [package]) of "+
			repo.FullName+", after the package was linked to it; the organisation's webhook gets the same body", ds[1])
	}
	t0 = time.Now()
	if err := c.Get(ctx, key("fleet"), &src); err != nil {
		t.Fatal(err)
	}
	token := time.Now().Format(time.RFC3339Nano)
	patch := client.MergeFrom(src.DeepCopy())
	src.SetAnnotations(map[string]string{meta.ReconcileRequestAnnotation: token})
	if err := c.Patch(ctx, &src, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, applied(digest2, sha2, "v2", token))
	t.Logf("requestedAt on the OCIRepository → applied %s in %s; OCIRepository lastHandledReconcileAt %q, Kustomization lastHandledReconcileAt %q",
		ks.Status.LastAppliedRevision, time.Since(t0).Round(time.Millisecond), src.Status.LastHandledReconcileAt, ks.Status.LastHandledReconcileAt)

	// 5. A package of a public owner (the admin user) is readable anonymously.
	if _, err := g.PushFluxArtifact(ctx, FluxArtifact{Dir: filepath.Join(repo.Dir, "deploy"), Repository: g.AdminUser + "/probe", Tag: "v1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.ManifestAnnotations(ctx, g.AdminUser+"/probe:v1", Anonymous, ""); err != nil {
		t.Errorf("anonymous read of a public user's package: %v", err)
	}

	// 6. A Helm chart as an OCI artifact, pulled through an OCI HelmRepository.
	t0 = time.Now()
	chartDigest, err := g.PushHelmChart(ctx, HelmChartPackage{Owner: org, Name: "blueprint", Version: "0.1.0",
		Description: "a blueprint", Sources: []string{repo.CloneURL},
		Annotations: map[string]string{AnnotationRevision: GitRevision("main", sha2)},
		Templates: map[string]string{"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-blueprint\n" +
			"data:\n  value: {{ .Values.value | quote }}\n"},
		Values: "value: hello\n"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pushed chart blueprint:0.1.0 = %s in %s", chartDigest, time.Since(t0).Round(time.Millisecond))
	ds = nextDeliveries(t, hooks, 1, 20*time.Second)
	t.Logf("chart package event %s after the push started", ds[0].at.Sub(t0).Round(time.Millisecond))
	checkPackageEvent(t, ds[0], org, "blueprint", "0.1.0", "")
	if _, ann, err := g.ManifestAnnotations(ctx, org+"/blueprint:0.1.0", "", ""); err != nil || ann[AnnotationRevision] != GitRevision("main", sha2) {
		t.Errorf("chart manifest annotations %v, %v", ann, err)
	}
	if code, body, _ := g.API(ctx, http.MethodGet, "/packages/"+org+"/container/blueprint/0.1.0", nil); code == http.StatusOK {
		t.Logf("GET /api/v1/packages/%s/container/blueprint/0.1.0: %s", org, compactJSON(body))
	}
	t0 = time.Now()
	for _, o := range []client.Object{
		&sourcev1.HelmRepository{ObjectMeta: metav1.ObjectMeta{Name: "blueprints", Namespace: ns},
			Spec: sourcev1.HelmRepositorySpec{Type: sourcev1.HelmRepositoryTypeOCI, URL: g.OCIURL(org), Insecure: true,
				SecretRef: &meta.LocalObjectReference{Name: "gitea-registry"}, Interval: metav1.Duration{Duration: 10 * time.Minute}}},
		&sourcev1.HelmChart{ObjectMeta: metav1.ObjectMeta{Name: "blueprint", Namespace: ns},
			Spec: sourcev1.HelmChartSpec{Chart: "blueprint", Version: "0.1.0", Interval: metav1.Duration{Duration: 10 * time.Minute},
				SourceRef: sourcev1.LocalHelmChartSourceReference{Kind: sourcev1.HelmRepositoryKind, Name: "blueprints"}}},
	} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	var chart sourcev1.HelmChart
	eventually(t, time.Minute, func() error {
		if err := c.Get(ctx, key("blueprint"), &chart); err != nil {
			return err
		}
		if r := apimeta.FindStatusCondition(chart.Status.Conditions, meta.ReadyCondition); r == nil || r.Status != metav1.ConditionTrue || chart.Status.Artifact == nil {
			return fmt.Errorf("HelmChart not ready: %s", mustJSON(chart.Status))
		}
		return nil
	})
	t.Logf("HelmChart ready %s after creation; status: %s", time.Since(t0).Round(time.Millisecond), mustJSON(chart.Status))
	var hr sourcev1.HelmRepository
	if err := c.Get(ctx, key("blueprints"), &hr); err != nil {
		t.Fatal(err)
	}
	t.Logf("OCI HelmRepository status: %s", mustJSON(hr.Status))
	t.Logf("TestOCI took %s", time.Since(begin).Round(time.Millisecond))
}

func headerKeys(h http.Header) []string { return slices.Sorted(maps.Keys(h)) }

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}
