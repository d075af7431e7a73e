package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// A tenant is cluster-admin in its vcluster, which is a registered cluster: it writes every
// annotation of its Flux objects. Played on a second real API server, against the real
// service and Gitea: a hand-written record naming a platform repository's commit, a real
// record altered, a real record copied onto another object, and a real record on an object
// whose source was pointed at the platform repository afterwards. Gitea shows nothing on the
// platform repository from any of them; each is counted and leaves an Event.
func TestTenantCannotForgeStatuses(t *testing.T) {
	integration(t)
	ctx := t.Context()
	platform := newApp(t, "platform-"+randomSuffix(), "main")
	platformSHA := strings.TrimPrefix(platform.applied(t), "main@sha1:")

	// The tenant's vcluster, registered with flux-webhook, and its repository on Gitea.
	tenant := testenv.NewKube(t, testenv.KubeOptions{CRDs: true})
	kc, err := os.ReadFile(tenant.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := e2e.gitea.CreateRepo(ctx, "tenant-"+randomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	// Granted its own (private) repository: the platform's it is not.
	reg := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: clustersNS, Name: "vc-tenant",
		Labels:      map[string]string{cluster.ClusterLabel: "tenant"},
		Annotations: map[string]string{cluster.RepositoriesAnnotation: repo.FullName}}, Data: map[string][]byte{"config": kc}}
	if err := e2e.kube.Client.Create(ctx, reg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e2e.kube.Client.Delete(context.Background(), reg)
		waitFor(t, time.Minute, "tenant removed", func() bool {
			b, _ := os.ReadFile(e2e.service.Log)
			return bytes.Contains(b, []byte(`"cluster removed","cluster":"tenant"`))
		})
	})
	tenantApp := &app{name: "app", branch: "main", repo: repo}
	if err := repo.WriteFile("deploy/cm.yaml", configMap("tenant", "v1")); err != nil {
		t.Fatal(err)
	}
	tenantSHA, err := repo.Commit(ctx, "tenant v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	tc := tenant.Client
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fluxNS}},
		&sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "app"},
			Spec: sourcev1.GitRepositorySpec{URL: repo.CloneURL, Interval: metav1.Duration{Duration: time.Hour}, Reference: &sourcev1.GitRepositoryRef{Branch: "main"}}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "app"},
			Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Hour}, Path: "./deploy", Prune: true,
				SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "app"}}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "other"},
			Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Hour}, Path: "./deploy", Prune: true,
				SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "app"}}},
	} {
		if err := tc.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// The tenant's own push, real: flux-webhook writes its records in the tenant cluster.
	waitFor(t, time.Minute, "the tenant's push accepted", func() bool {
		resp, _ := hookPost(t, tenantApp.pushEvent(tenantSHA), tenantApp.token())
		return resp.StatusCode == http.StatusAccepted
	})
	// Three targets in the tenant's cluster, above the suite's --status-auto-threshold: one
	// status for the cluster, flux/tenant, reported from the three objects' records.
	waitFor(t, time.Minute, "pending on the tenant's commit", func() bool {
		all, _ := repo.Statuses(ctx, tenantSHA)
		return slices.ContainsFunc(all, func(s *gitea.Status) bool { return s.Context == "flux/tenant" && s.State == gitea.StatusPending })
	})
	get := func(o client.Object, name string) client.Object {
		t.Helper()
		if err := tc.Get(ctx, client.ObjectKey{Namespace: fluxNS, Name: name}, o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	tamper := func(o client.Object, edit func(ann map[string]string)) {
		t.Helper()
		base := o.DeepCopyObject().(client.Object)
		ann := o.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		edit(ann)
		o.SetAnnotations(ann)
		if err := tc.Patch(ctx, o, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	real := get(&kustomizev1.Kustomization{}, "app").GetAnnotations()
	forged := `{"current":{"token":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","repository":"` + platform.repo.FullName +
		`","ref":"refs/heads/main","sha":"` + platformSHA + `","posted":"pending","intent":{"state":"success","description":"applied main@sha1:` +
		platformSHA[:12] + `"}}}`
	// 1. The GitRepository pointed at the platform repository: its real records name the
	// tenant's repository, their source now the platform's.
	gr := get(&sourcev1.GitRepository{}, "app").(*sourcev1.GitRepository)
	base := gr.DeepCopy()
	gr.Spec.URL = platform.repo.CloneURL
	if err := tc.Patch(ctx, gr, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	rejections := func(reason string) float64 {
		return metricValue(t, "flux_webhook_records_rejected_total", `cluster="tenant",reason="`+reason+`"`)
	}
	waitFor(t, time.Minute, "records of another repository rejected", func() bool { return rejections("repository") >= 1 })
	// 2. Hand-written, on the second Kustomization.
	tamper(get(&kustomizev1.Kustomization{}, "other"), func(ann map[string]string) {
		ann[record.Annotation], ann[record.MACAnnotation] = forged, strings.Repeat("A", 43)
	})
	// 3. The real record, altered to name the platform repository's commit.
	tamper(get(&kustomizev1.Kustomization{}, "app"), func(ann map[string]string) {
		ann[record.Annotation] = strings.NewReplacer(tenantSHA, platformSHA, repo.FullName, platform.repo.FullName).Replace(ann[record.Annotation])
	})
	// 4. The real record and MAC of the Kustomization, copied onto the GitRepository.
	tamper(get(&sourcev1.GitRepository{}, "app"), func(ann map[string]string) {
		ann[record.Annotation], ann[record.MACAnnotation] = real[record.Annotation], real[record.MACAnnotation]
	})
	waitFor(t, time.Minute, "the forged, altered and copied records rejected", func() bool { return rejections("mac") >= 3 })
	time.Sleep(3 * time.Second) // anything the service would post is posted by now
	if all, err := platform.repo.Statuses(ctx, platformSHA); err != nil || len(all) != 0 {
		t.Fatalf("the platform repository's commit got %d statuses (%v)", len(all), err)
	}
	var evs eventsv1.EventList
	if err := tc.List(ctx, &evs, client.InNamespace(fluxNS)); err != nil {
		t.Fatal(err)
	}
	rejected := map[string]bool{}
	for _, e := range evs.Items {
		if e.Reason == "RecordRejected" {
			rejected[e.Regarding.Kind+"/"+e.Regarding.Name] = true
		}
	}
	if len(rejected) < 2 {
		t.Fatalf("RecordRejected events on %v, want the tampered objects", rejected)
	}
}

// metricValue reads one series of the service's /metrics, by its name and labels as the
// exposition writes them; 0 when absent.
func metricValue(t *testing.T, name, labels string) float64 {
	t.Helper()
	return metricAt(t, e2e.metrics, name, labels)
}

// metricAt is metricValue of the service whose /metrics is url; labels "" for a series
// without any.
func metricAt(t *testing.T, url, name, labels string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	prefix := name + "{" + labels + "} "
	if labels == "" {
		prefix = name + " "
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}
