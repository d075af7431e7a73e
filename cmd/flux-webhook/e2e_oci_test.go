package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// Flux's gitless path, end to end: an artifact built from a commit is pushed to Gitea's
// registry (in Flux's format, with Flux's own library); Gitea's package event reaches
// flux-webhook, which reads the commit from the artifact in the registry, requests the
// OCIRepository and the Kustomization built from it, and reports the real
// source-controller's and kustomize-controller's answers on that commit. The next artifact
// comes as a workflow posts it (the package event's shape, a scoped organisation token) and
// as Gitea's event: one push, one pending and one final status per object.
func TestOCIArtifactIsAppliedAndReported(t *testing.T) {
	integration(t)
	ctx := t.Context()
	g := e2e.gitea
	org := "oci-" + randomSuffix()
	const pkg = "fleet-manifests"
	if err := g.CreateOrg(ctx, org, gitea.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	repo, err := g.CreateOrgRepo(ctx, org, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.AddOrgHook(ctx, org, testenv.Hook{URL: e2e.hookURL + "/hook", Secret: e2e.webhookKey, Events: []string{"package"}}); err != nil {
		t.Fatal(err)
	}
	value := "oci-" + randomSuffix()
	commit := func(v string) string {
		t.Helper()
		if err := repo.WriteFile("deploy/app.yaml", configMap("oci-"+org, v)); err != nil {
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
	push := func(sha string) {
		t.Helper()
		if _, err := g.PushFluxArtifact(ctx, testenv.FluxArtifact{Dir: filepath.Join(repo.Dir, "deploy"), Repository: org + "/" + pkg,
			Tag: "latest", Source: repo.CloneURL, Revision: testenv.GitRevision("main", sha)}); err != nil {
			t.Fatal(err)
		}
	}
	sha1 := commit(value + "-1")
	push(sha1)

	name := "oci-" + strings.ToLower(org)
	hour := &metav1.Duration{Duration: time.Hour}
	for _, o := range []client.Object{
		g.RegistrySecret(fluxNS, name+"-registry", "", ""),
		&sourcev1.OCIRepository{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name}, Spec: sourcev1.OCIRepositorySpec{
			URL: g.OCIURL(org + "/" + pkg), Reference: &sourcev1.OCIRepositoryRef{Tag: "latest"}, Insecure: true,
			SecretRef: &meta.LocalObjectReference{Name: name + "-registry"}, Interval: hour, Timeout: &metav1.Duration{Duration: time.Minute}}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name}, Spec: kustomizev1.KustomizationSpec{
			Interval: *hour, Path: "./", Prune: true, TargetNamespace: appsNS, Timeout: &metav1.Duration{Duration: time.Minute},
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.OCIRepositoryKind, Name: name}}},
	} {
		if err := e2e.kube.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	applied := func(want string) func() bool {
		return func() bool {
			var cm corev1.ConfigMap
			return e2e.kube.Client.Get(ctx, client.ObjectKey{Namespace: appsNS, Name: "oci-" + org}, &cm) == nil && cm.Data["value"] == want
		}
	}
	waitFor(t, 2*time.Minute, "the first artifact applied (Flux's own pull)", applied(value+"-1"))

	contexts := map[string]string{}
	for _, kind := range []string{sourcev1.OCIRepositoryKind, kustomizev1.KustomizationKind} {
		contexts[kind] = fmt.Sprintf("flux/%s/%s/%s/%s", clusterName, strings.ToLower(kind), fluxNS, name)
	}
	final := func(sha, kind string) *gitea.Status {
		t.Helper()
		var states []string
		var last *gitea.Status
		waitFor(t, resultWindow, "final status of "+contexts[kind], func() bool {
			all, err := repo.Statuses(ctx, sha)
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(all, func(a, b *gitea.Status) int { return int(a.ID - b.ID) })
			states, last = nil, nil
			for _, s := range all {
				if s.Context == contexts[kind] {
					states, last = append(states, string(s.State)), s
				}
			}
			return len(states) > 0 && states[len(states)-1] != "pending"
		})
		if !slices.Equal(states, []string{"pending", "success"}) {
			t.Fatalf("%s on %s: states %v (%q), want [pending success]", contexts[kind], sha[:12], states, last.Description)
		}
		return last
	}

	// 1. A new commit's artifact: Gitea's package event (signed) is all flux-webhook gets.
	sha2 := commit(value + "-2")
	start := time.Now()
	push(sha2)
	waitFor(t, time.Minute, "the second artifact applied, long before Flux's hourly pull", applied(value+"-2"))
	t.Logf("artifact of %s applied %s after its push", sha2[:12], time.Since(start).Round(time.Millisecond))
	if d := final(sha2, sourcev1.OCIRepositoryKind).Description; !strings.HasPrefix(d, "pulled latest@sha256:") {
		t.Errorf("OCIRepository description %q", d)
	}
	if d := final(sha2, kustomizev1.KustomizationKind).Description; !strings.HasPrefix(d, "applied latest@sha256:") {
		t.Errorf("Kustomization description %q", d)
	}

	// 2. The workflow's post, as the README shows it, and Gitea's event for the same push:
	// one push.
	sha3 := commit(value + "-3")
	push(sha3)
	body, _ := json.Marshal(map[string]any{"action": "created", "package": map[string]any{
		"owner": map[string]any{"login": org}, "name": pkg, "type": "container", "version": "latest"}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e2e.hookURL+"/hook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", "package")
	req.Header.Set("Authorization", "Bearer "+tokenFor(org))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ans map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || ans["package"] != org+"/"+pkg || ans["sha"] != sha3 || ans["repository"] != org+"/fleet" {
		t.Fatalf("workflow post: %d %v", resp.StatusCode, ans)
	}
	waitFor(t, time.Minute, "the third artifact applied", applied(value+"-3"))
	final(sha3, sourcev1.OCIRepositoryKind)
	final(sha3, kustomizev1.KustomizationKind)

	// 3. A token of another organisation may not speak for this package.
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, e2e.hookURL+"/hook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", "package")
	req.Header.Set("Authorization", "Bearer "+tokenFor("someone-else"))
	if resp, err := httpClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another organisation's token: %d, want 403", resp.StatusCode)
	}
}
