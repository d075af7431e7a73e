package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// registerCluster starts a real API server with the Flux CRDs and registers it with the
// service as vcluster's Secret would be, with the given annotations; it is unregistered when
// the test ends. No Flux runs there: what flux-webhook writes into it stays as written.
func registerCluster(t *testing.T, name string, annotations map[string]string) (*testenv.Kube, *corev1.Secret) {
	t.Helper()
	ctx := t.Context()
	k := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	kc, err := os.ReadFile(k.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	reg := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clustersNS, Name: "vc-" + name,
		Labels: map[string]string{cluster.ClusterLabel: name}, Annotations: annotations}, Data: map[string][]byte{"config": kc}}
	if err := e2e.kube.Client.Create(ctx, reg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e2e.kube.Client.Delete(context.Background(), reg)
		waitFor(t, time.Minute, name+" removed", func() bool {
			b, _ := os.ReadFile(e2e.service.Log)
			return bytes.Contains(b, []byte(`"cluster removed","cluster":"`+name+`"`))
		})
	})
	if err := k.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fluxNS}}); err != nil {
		t.Fatal(err)
	}
	return k, reg
}

// annotateGrant sets (or, with nil, removes) a registration Secret's grant, and waits for the
// service to log that it took it; it returns how long that took.
func annotateGrant(t *testing.T, reg *corev1.Secret, value *string) time.Duration {
	t.Helper()
	ctx := t.Context()
	s := &corev1.Secret{}
	if err := e2e.kube.Client.Get(ctx, client.ObjectKeyFromObject(reg), s); err != nil {
		t.Fatal(err)
	}
	base := s.DeepCopy()
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	if value == nil {
		delete(s.Annotations, cluster.RepositoriesAnnotation)
	} else {
		s.Annotations[cluster.RepositoriesAnnotation] = *value
	}
	name := reg.Labels[cluster.ClusterLabel]
	before := countLines(t, "cluster grant changed", name)
	start := time.Now()
	if err := e2e.kube.Client.Patch(ctx, s, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the grant of "+name+" taken", func() bool { return countLines(t, "cluster grant changed", name) > before })
	return time.Since(start)
}

// countLines counts the service's log lines of a message about a cluster.
func countLines(t *testing.T, msg, clusterName string) int {
	n := 0
	for _, l := range logLines(t) {
		if l["msg"] == msg && l["cluster"] == clusterName {
			n++
		}
	}
	return n
}

// refusedIn returns how many objects the answer says were refused in a cluster, and how
// many it targets there.
func refusedIn(ans map[string]any, clusterName string) (refused, targets int) {
	cs, _ := ans["clusters"].([]any)
	for _, c := range cs {
		m, _ := c.(map[string]any)
		if m["cluster"] == clusterName {
			r, _ := m["refused"].(float64)
			n, _ := m["targets"].(float64)
			return int(r), int(n)
		}
	}
	return 0, 0
}

// untouched fails the test if a Flux object of k named in names carries a request, or any
// carries a record of sha, or an Event there names sha.
func untouched(t *testing.T, k *testenv.Kube, sha string, names ...string) {
	t.Helper()
	ctx := t.Context()
	var objs []client.Object
	var gl sourcev1.GitRepositoryList
	var ol sourcev1.OCIRepositoryList
	var kl kustomizev1.KustomizationList
	for _, l := range []client.ObjectList{&gl, &ol, &kl} {
		if err := k.Client.List(ctx, l, client.InNamespace(fluxNS)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range gl.Items {
		objs = append(objs, &gl.Items[i])
	}
	for i := range ol.Items {
		objs = append(objs, &ol.Items[i])
	}
	for i := range kl.Items {
		objs = append(objs, &kl.Items[i])
	}
	for _, o := range objs {
		ann := o.GetAnnotations()
		if strings.Contains(ann[record.Annotation], sha) ||
			slices.Contains(names, o.GetName()) && (ann[meta.ReconcileRequestAnnotation] != "" || ann[record.Annotation] != "" || ann[record.MACAnnotation] != "") {
			t.Fatalf("%s was written into the refused cluster: %v", o.GetName(), ann)
		}
	}
	var evs eventsv1.EventList
	if err := k.Client.List(ctx, &evs); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if strings.Contains(e.Note, sha) {
			t.Fatalf("an Event in the refused cluster names the push: %s", e.Note)
		}
	}
}

// A registered cluster (a tenant's vcluster) follows only the repositories it is granted,
// and public ones: played on the real binary, Gitea and API servers. A tenant whose Flux
// objects follow the platform's private repository (which it cannot read) gets nothing of
// its pushes: no requestedAt, record or Event in its cluster, no status under its context on
// the commit; the answer counts the refusal, the metric and the log (one line per push)
// too. Granting the repository by the Secret's annotation takes effect within seconds,
// without a restart; a public repository is followed without a grant; a registry push
// follows the rule for the repository its artifact names.
func TestTenantFollowsOnlyGrantedRepositories(t *testing.T) {
	integration(t)
	ctx := t.Context()
	platform := newClusterApp(t, "private-"+randomSuffix())
	// The default grant, {cluster}/* (as the shipped manifests set it): grantee's own
	// repositories, none here.
	tenant, reg := registerCluster(t, "grantee", nil)
	for _, o := range []client.Object{
		&sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "platform"},
			Spec: sourcev1.GitRepositorySpec{URL: platform.repo.CloneURL, Interval: metav1.Duration{Duration: time.Hour}, Reference: &sourcev1.GitRepositoryRef{Branch: "main"}}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "platform"},
			Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Hour}, Path: "./deploy", Prune: true,
				SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "platform"}}},
	} {
		if err := tenant.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	// 1. A push to the private repository: refused in the tenant's cluster.
	refusals := metricValue(t, "flux_webhook_grant_refusals_total", `cluster="grantee"`)
	logged := countLines(t, "push refused in cluster: its repository is neither public nor granted to it", "grantee")
	sha := platform.commit(t, "deploy/configmap.yaml", configMap(platform.name, "v2"), "v2")
	var ans map[string]any
	answers := 0
	waitFor(t, time.Minute, "the push refused in the tenant's cluster (its cache synced)", func() bool {
		resp, a := hookPost(t, platform.pushEvent(sha), platform.token())
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("push: %d %v", resp.StatusCode, a)
		}
		ans = a
		if r, _ := refusedIn(a, "grantee"); r > 0 {
			answers++
		}
		return answers > 0
	})
	if r, n := refusedIn(ans, "grantee"); r != 2 || n != 0 {
		t.Fatalf("answer for the tenant: refused %d, targets %d: %v", r, n, ans["clusters"])
	}
	for _, o := range ans["targets"].([]any) {
		if o.(map[string]any)["cluster"] == "grantee" {
			t.Fatalf("the answer lists a target of the refused cluster: %v", o)
		}
	}
	// By the time the platform's own cluster has its final status, anything the tenant's
	// would get is posted.
	platform.waitAllFinal(t, sha, "success")
	time.Sleep(2 * time.Second)
	all, err := platform.repo.Statuses(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if strings.HasPrefix(s.Context, "flux/grantee") {
			t.Fatalf("a status under the refused cluster's context: %s %s", s.Context, s.State)
		}
	}
	untouched(t, tenant, sha, "platform")
	if got := metricValue(t, "flux_webhook_grant_refusals_total", `cluster="grantee"`); got != refusals+float64(answers) {
		t.Fatalf("refusals counted %v, want %v", got-refusals, answers)
	}
	if got := countLines(t, "push refused in cluster: its repository is neither public nor granted to it", "grantee") - logged; got != answers {
		t.Fatalf("%d refusal lines logged for %d deliveries, want one each", got, answers)
	}

	// 2. Granted by the Secret's annotation: taken without a restart, the next push is
	// requested and reported there.
	grant := platform.repo.FullName
	took := annotateGrant(t, reg, &grant)
	t.Logf("the grant took effect %s after the annotation changed", took.Round(time.Millisecond))
	if countLines(t, "cluster registered", "grantee") != 1 {
		t.Fatal("the cluster was registered again for a change of its grant")
	}
	sha2 := platform.commit(t, "deploy/configmap.yaml", configMap(platform.name, "v3"), "v3")
	resp, ans := hookPost(t, platform.pushEvent(sha2), platform.token())
	if r, n := refusedIn(ans, "grantee"); resp.StatusCode != http.StatusAccepted || r != 0 || n != 2 {
		t.Fatalf("granted push: %d, refused %d, targets %d: %v", resp.StatusCode, r, n, ans)
	}
	waitFor(t, time.Minute, "pending under the tenant's context", func() bool {
		all, _ := platform.repo.Statuses(ctx, sha2)
		return slices.ContainsFunc(all, func(s *gitea.Status) bool { return s.Context == "flux/grantee" && s.State == gitea.StatusPending })
	})

	// 3. A public repository is followed without a grant.
	c, err := e2e.gitea.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	public, err := e2e.gitea.CreateRepo(ctx, "public-"+randomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	private := false
	if _, _, err := c.EditRepo(public.Owner, public.Name, gitea.EditRepoOption{Private: &private}); err != nil {
		t.Fatal(err)
	}
	pub := &app{name: "public", branch: "main", repo: public}
	pubSHA := pub.commit(t, "deploy/configmap.yaml", configMap("public", "v1"), "v1")
	if err := tenant.Client.Create(ctx, &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "public"},
		Spec: sourcev1.GitRepositorySpec{URL: public.CloneURL, Interval: metav1.Duration{Duration: time.Hour}, Reference: &sourcev1.GitRepositoryRef{Branch: "main"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the public push requested in the tenant's cluster", func() bool {
		resp, ans := hookPost(t, pub.pushEvent(pubSHA), pub.token())
		_, n := refusedIn(ans, "grantee")
		return resp.StatusCode == http.StatusAccepted && n == 1
	})

	// 4. A registry push follows the rule for the repository its artifact names: an
	// organisation's artifact built from its private repository, refused in the tenant's
	// cluster until the organisation is granted; followed without an annotation by the
	// cluster registered under the organisation's name (the default grant, {cluster}/*).
	org := "grant-" + randomSuffix()
	if err := e2e.gitea.CreateOrg(ctx, org, gitea.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	fleet, err := e2e.gitea.CreateOrgRepo(ctx, org, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	orgApp := &app{name: "fleet", branch: "main", repo: fleet}
	manifests := func() client.Object {
		return &sourcev1.OCIRepository{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "manifests"},
			Spec: sourcev1.OCIRepositorySpec{URL: e2e.gitea.OCIURL(org + "/manifests"), Reference: &sourcev1.OCIRepositoryRef{Tag: "latest"},
				Interval: &metav1.Duration{Duration: time.Hour}}}
	}
	if err := tenant.Client.Create(ctx, manifests()); err != nil {
		t.Fatal(err)
	}
	publish := func(v string) string {
		t.Helper()
		sha := orgApp.commit(t, "deploy/configmap.yaml", configMap(org, v), v)
		if _, err := e2e.gitea.PushFluxArtifact(ctx, testenv.FluxArtifact{Dir: filepath.Join(fleet.Dir, "deploy"), Repository: org + "/manifests",
			Tag: "latest", Source: fleet.CloneURL, Revision: testenv.GitRevision("main", sha)}); err != nil {
			t.Fatal(err)
		}
		return sha
	}
	ociSHA := publish("v1")
	var code int
	refusals = metricValue(t, "flux_webhook_grant_refusals_total", `cluster="grantee"`)
	logged = countLines(t, "push refused in cluster: its repository is neither public nor granted to it", "grantee")
	waitFor(t, 30*time.Second, "the registry push refused in the tenant's cluster", func() bool {
		code, ans = packagePost(t, org, "manifests", "latest")
		r, _ := refusedIn(ans, "grantee")
		return r == 1
	})
	if code != http.StatusOK || ans["result"] != "no-match" || ans["sha"] != ociSHA {
		t.Fatalf("refused registry push: %d %v", code, ans)
	}
	if got := metricValue(t, "flux_webhook_grant_refusals_total", `cluster="grantee"`) - refusals; got != 1 {
		t.Fatalf("refusals of the registry push counted %v, want 1", got)
	}
	if got := countLines(t, "push refused in cluster: its repository is neither public nor granted to it", "grantee") - logged; got != 1 {
		t.Fatalf("%d refusal lines logged for the registry push, want 1", got)
	}
	untouched(t, tenant, ociSHA, "manifests")
	own, _ := registerCluster(t, org, nil)
	if err := own.Client.Create(ctx, manifests()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the registry push requested in the organisation's own cluster", func() bool {
		code, ans = packagePost(t, org, "manifests", "latest")
		_, n := refusedIn(ans, org)
		return code == http.StatusAccepted && n == 1
	})
	if r, n := refusedIn(ans, "grantee"); r != 1 || n != 0 || ans["sha"] != ociSHA {
		t.Fatalf("registry push with the organisation's cluster: refused %d, targets %d in the tenant's: %v", r, n, ans)
	}
	untouched(t, tenant, ociSHA, "manifests")
	both := platform.repo.FullName + "," + org + "/*"
	annotateGrant(t, reg, &both)
	ociSHA2 := publish("v2")
	code, ans = packagePost(t, org, "manifests", "latest")
	if r, n := refusedIn(ans, "grantee"); code != http.StatusAccepted || r != 0 || n != 1 || ans["sha"] != ociSHA2 {
		t.Fatalf("granted registry push: %d, refused %d, targets %d: %v", code, r, n, ans)
	}

	// 5. The grant withdrawn (the annotation removed: the default again), within seconds and
	// without a restart: the next push of the platform's repository is refused there, and
	// its objects keep what the last granted push wrote.
	took = annotateGrant(t, reg, nil)
	t.Logf("the grant was withdrawn %s after the annotation was removed", took.Round(time.Millisecond))
	before := &sourcev1.GitRepository{}
	if err := tenant.Client.Get(ctx, client.ObjectKey{Namespace: fluxNS, Name: "platform"}, before); err != nil {
		t.Fatal(err)
	}
	sha3 := platform.commit(t, "deploy/configmap.yaml", configMap(platform.name, "v4"), "v4")
	resp, ans = hookPost(t, platform.pushEvent(sha3), platform.token())
	if r, n := refusedIn(ans, "grantee"); resp.StatusCode != http.StatusAccepted || r != 2 || n != 0 {
		t.Fatalf("push after the grant was withdrawn: %d, refused %d, targets %d: %v", resp.StatusCode, r, n, ans)
	}
	platform.waitAllFinal(t, sha3, "success")
	time.Sleep(2 * time.Second)
	untouched(t, tenant, sha3)
	after := &sourcev1.GitRepository{}
	if err := tenant.Client.Get(ctx, client.ObjectKey{Namespace: fluxNS, Name: "platform"}, after); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before.GetAnnotations(), after.GetAnnotations()) {
		t.Fatalf("the withdrawn cluster's GitRepository was written: %v, then %v", before.GetAnnotations(), after.GetAnnotations())
	}
	if all, _ := platform.repo.Statuses(ctx, sha3); slices.ContainsFunc(all, func(s *gitea.Status) bool { return strings.HasPrefix(s.Context, "flux/grantee") }) {
		t.Fatal("a status under the withdrawn cluster's context")
	}
}

// packagePost posts the package event of a tag, signed with the webhook key as Gitea's
// webhook would, and returns the answer.
func packagePost(t *testing.T, owner, pkg, tag string) (int, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"action": "created", "package": map[string]any{
		"owner": map[string]any{"login": owner}, "name": pkg, "type": "container", "version": tag}})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e2e.hookURL+"/hook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", "package")
	req.Header.Set("X-Gitea-Delivery", "package-"+randomSuffix()+fmt.Sprint(time.Now().UnixNano()))
	req.Header.Set("X-Gitea-Signature", hmacHex(e2e.webhookKey, body))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("answer %d is not JSON: %s", resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

// A package event signed with the webhook key speaks for every package, and the artifact's
// annotations are written by whoever may push to the package: played on the real binary,
// Gitea registry and source-controller. An artifact of owner A naming a commit of owner B's
// repository is pulled (the stream and the logs have its results), and B's commit gets no
// status; a revision whose reference is 100,000 characters leaves no more than the record's
// bound on the OCIRepository and no status; the same artifact naming A's own repository and a
// well-formed revision gets its statuses.
func TestArtifactSpeaksOnlyForItsOwner(t *testing.T) {
	integration(t)
	ctx := t.Context()
	a, b := "owner-a-"+randomSuffix(), "owner-b-"+randomSuffix()
	repos := map[string]*app{}
	for _, org := range []string{a, b} {
		if err := e2e.gitea.CreateOrg(ctx, org, gitea.VisibleTypePrivate); err != nil {
			t.Fatal(err)
		}
		r, err := e2e.gitea.CreateOrgRepo(ctx, org, "fleet")
		if err != nil {
			t.Fatal(err)
		}
		repos[org] = &app{name: "fleet", branch: "main", repo: r}
	}
	shaA := repos[a].commit(t, "deploy/app.yaml", configMap("owner-"+a, "a"), "a")
	shaB := repos[b].commit(t, "deploy/app.yaml", configMap("owner-"+a, "b"), "b")
	// One OCIRepository per tag, each case a push of its own tag: a registry push whose
	// artifact names no commit is keyed by its tag.
	name := "owner-" + strings.ToLower(a)
	publish := func(tag, source, revision string) string {
		t.Helper()
		digest, err := e2e.gitea.PushFluxArtifact(ctx, testenv.FluxArtifact{Dir: filepath.Join(repos[a].repo.Dir, "deploy"),
			Repository: a + "/manifests", Tag: tag, Source: source, Revision: revision, Annotations: map[string]string{"org.example/case": tag + "-" + randomSuffix()}})
		if err != nil {
			t.Fatal(err)
		}
		return digest
	}
	hour := &metav1.Duration{Duration: time.Hour}
	objs := []client.Object{e2e.gitea.RegistrySecret(fluxNS, name+"-registry", "", "")}
	for _, tag := range []string{"cross", "long", "own"} {
		publish(tag, "", "") // what Flux pulls first, on its own
		objs = append(objs, &sourcev1.OCIRepository{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name + "-" + tag}, Spec: sourcev1.OCIRepositorySpec{
			URL: e2e.gitea.OCIURL(a + "/manifests"), Reference: &sourcev1.OCIRepositoryRef{Tag: tag}, Insecure: true,
			SecretRef: &meta.LocalObjectReference{Name: name + "-registry"}, Interval: hour, Timeout: &metav1.Duration{Duration: time.Minute}}})
	}
	for _, o := range objs {
		if err := e2e.kube.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	oci := &sourcev1.OCIRepository{}
	pulled := func(tag, digest string) func() bool {
		return func() bool {
			return e2e.kube.Client.Get(ctx, client.ObjectKey{Namespace: fluxNS, Name: name + "-" + tag}, oci) == nil &&
				oci.Status.Artifact != nil && strings.HasSuffix(oci.Status.Artifact.Revision, digest)
		}
	}
	for _, tag := range []string{"cross", "long", "own"} {
		waitFor(t, 2*time.Minute, "the first pull of "+tag, func() bool {
			return e2e.kube.Client.Get(ctx, client.ObjectKey{Namespace: fluxNS, Name: name + "-" + tag}, oci) == nil && oci.Status.Artifact != nil
		})
	}
	noStatus := func(r *app, sha string) {
		t.Helper()
		all, err := r.repo.Statuses(ctx, sha)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 0 {
			t.Fatalf("%s's commit %s got %d statuses (%s %s)", r.repo.FullName, sha[:12], len(all), all[0].Context, all[0].State)
		}
	}

	// 1. Owner A's artifact naming owner B's commit: pulled, B's commit untouched.
	digest := publish("cross", repos[b].repo.CloneURL, testenv.GitRevision("main", shaB))
	code, ans := packagePost(t, a, "manifests", "cross")
	if code != http.StatusAccepted || ans["sha"] != nil || ans["repository"] != nil {
		t.Fatalf("A's artifact naming B's commit: %d %v", code, ans)
	}
	waitFor(t, 2*time.Minute, "the artifact pulled", pulled("cross", digest))
	time.Sleep(3 * time.Second) // anything the service would post is posted by now
	noStatus(repos[b], shaB)

	// 2. A reference of 100,000 characters: pulled, nothing of it kept, no status.
	long := strings.Repeat("r", 100000)
	digest = publish("long", repos[a].repo.CloneURL, long+"@sha1:"+shaA)
	code, ans = packagePost(t, a, "manifests", "long")
	if code != http.StatusAccepted || ans["sha"] != nil || ans["ref"] != nil {
		t.Fatalf("a 100,000-character reference: %d %v", code, ans)
	}
	waitFor(t, 2*time.Minute, "the artifact pulled", pulled("long", digest))
	time.Sleep(3 * time.Second)
	if err := e2e.kube.Client.Get(ctx, client.ObjectKey{Namespace: fluxNS, Name: name + "-long"}, oci); err != nil {
		t.Fatal(err)
	}
	size := 0
	for k, v := range oci.GetAnnotations() {
		size += len(k) + len(v)
	}
	if size > 8<<10 || oci.GetAnnotations()[record.Annotation] == "" || strings.Contains(oci.GetAnnotations()[record.Annotation], "rrrrrrrr") {
		t.Fatalf("the OCIRepository carries %d bytes of annotations, the reference among them: %.300v", size, oci.GetAnnotations())
	}
	t.Logf("OCIRepository annotations after a 100,000-character reference: %d bytes", size)
	noStatus(repos[a], shaA)

	// 3. A's own repository, a well-formed revision: its statuses.
	digest = publish("own", repos[a].repo.CloneURL, testenv.GitRevision("main", shaA))
	code, ans = packagePost(t, a, "manifests", "own")
	if code != http.StatusAccepted || ans["sha"] != shaA {
		t.Fatalf("A's artifact naming A's commit: %d %v", code, ans)
	}
	waitFor(t, 2*time.Minute, "the artifact pulled", pulled("own", digest))
	statusContext := fmt.Sprintf("flux/%s/ocirepository/%s/%s", clusterName, fluxNS, name+"-own")
	waitFor(t, resultWindow, "success on A's commit", func() bool {
		all, _ := repos[a].repo.Statuses(ctx, shaA)
		return slices.ContainsFunc(all, func(s *gitea.Status) bool { return s.Context == statusContext && s.State == gitea.StatusSuccess })
	})
}
