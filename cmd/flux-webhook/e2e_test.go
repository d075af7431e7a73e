package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// app is a Gitea repository with a ConfigMap under deploy/, and the GitRepository and
// Kustomization that apply it, both polling only hourly: a reconcile within seconds can
// only come from flux-webhook.
type app struct {
	name, branch string
	repo         *testenv.Repo
	// perCluster: a third object (a Kustomization applying the same manifests in another
	// namespace) takes its pushes over the service's --status-auto-threshold of 2: their
	// statuses are one per cluster, flux/<cluster>.
	perCluster bool
}

// newClusterApp is an app whose pushes get per-cluster statuses.
func newClusterApp(t testing.TB, name string) *app {
	t.Helper()
	a := newApp(t, name, "main")
	a.perCluster = true
	ks := &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name + "-copy"},
		Spec: kustomizev1.KustomizationSpec{
			Interval: metav1.Duration{Duration: time.Hour}, RetryInterval: &metav1.Duration{Duration: time.Hour},
			Path: "./deploy", Prune: true, TargetNamespace: copiesNS,
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: name},
		},
	}
	if err := e2e.kube.Client.Create(t.Context(), ks); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "first apply of "+ks.Name, func() bool {
		got := &kustomizev1.Kustomization{}
		return e2e.kube.Client.Get(t.Context(), client.ObjectKeyFromObject(ks), got) == nil && got.Status.LastAppliedRevision != ""
	})
	return a
}

// clusterContext is the per-cluster status context of the service's cluster.
const clusterContext = "flux/" + clusterName

// waitPending waits until the push of sha has its pending statuses, and only those.
func (a *app) waitPending(t testing.TB, sha string) {
	t.Helper()
	contexts := []string{a.context("GitRepository"), a.context("Kustomization")}
	if a.perCluster {
		contexts = []string{clusterContext}
	}
	for _, c := range contexts {
		waitFor(t, time.Minute, "pending "+c, func() bool {
			states, _ := a.states(t, sha, c)
			return slices.Equal(states, []string{"pending"})
		})
	}
}

// waitAllFinal waits for the final statuses of the push of sha, each the only one after a
// single pending: per object, or per cluster ("3/3 ready" for a success).
func (a *app) waitAllFinal(t testing.TB, sha, want string) {
	t.Helper()
	if !a.perCluster {
		a.waitFinal(t, sha, "GitRepository", want)
		a.waitFinal(t, sha, "Kustomization", want)
		return
	}
	var last *gitea.Status
	var states []string
	waitFor(t, resultWindow, want+" status of "+clusterContext, func() bool {
		states, last = a.states(t, sha, clusterContext)
		return len(states) > 0 && states[len(states)-1] != "pending"
	})
	if !slices.Equal(states, []string{"pending", want}) {
		t.Fatalf("%s on %s: states %v (%q), want [pending %s]", clusterContext, sha[:12], states, last.Description, want)
	}
	if want == "success" && last.Description != "3/3 ready" {
		t.Fatalf("%s: %q, want 3/3 ready", clusterContext, last.Description)
	}
	for _, kind := range []string{"GitRepository", "Kustomization"} {
		if states, _ := a.states(t, sha, a.context(kind)); len(states) != 0 {
			t.Fatalf("per-cluster push: %s got %v", a.context(kind), states)
		}
	}
}

func configMap(name, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  value: %q\n", name, value)
}

func newApp(t testing.TB, name, branch string) *app {
	t.Helper()
	repo, err := e2e.gitea.CreateRepo(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return newAppOf(t, repo, name, branch)
}

// newAppOf is newApp for a repository created already (an organization's), its Flux
// objects named name.
func newAppOf(t testing.TB, repo *testenv.Repo, name, branch string) *app {
	t.Helper()
	ctx := t.Context()
	a := &app{name: name, branch: branch, repo: repo}
	a.branch = "main"
	sha := a.commit(t, "deploy/configmap.yaml", configMap(name, "v1"), "v1")
	if branch != "main" {
		// A branch one commit ahead of main, as a pull request's would be.
		if err := repo.Branch(ctx, branch); err != nil {
			t.Fatal(err)
		}
		a.branch = branch
		sha = a.commit(t, "deploy/configmap.yaml", configMap(name, branch), branch)
	}
	c := e2e.kube.Client
	if err := c.Create(ctx, &sourcev1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name},
		Spec: sourcev1.GitRepositorySpec{
			URL:       repo.CloneURL,
			Interval:  metav1.Duration{Duration: time.Hour},
			Reference: &sourcev1.GitRepositoryRef{Branch: branch},
			SecretRef: &meta.LocalObjectReference{Name: repoAuth},
		},
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name},
		Spec: kustomizev1.KustomizationSpec{
			Interval:        metav1.Duration{Duration: time.Hour},
			RetryInterval:   &metav1.Duration{Duration: time.Hour},
			Path:            "./deploy",
			Prune:           true,
			TargetNamespace: appsNS,
			SourceRef:       kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: name},
		},
	}); err != nil {
		t.Fatal(err)
	}
	// Flux's first apply happens on creation, without flux-webhook.
	waitFor(t, 2*time.Minute, "first apply of "+name, func() bool { return a.applied(t) == branch+"@sha1:"+sha })
	return a
}

// commit writes one file (or removes it when content is empty), commits and pushes.
func (a *app) commit(t testing.TB, path, content, msg string) string {
	t.Helper()
	ctx := t.Context()
	var err error
	if content == "" {
		err = a.repo.Remove(path)
	} else {
		err = a.repo.WriteFile(path, content)
	}
	if err != nil {
		t.Fatal(err)
	}
	sha, err := a.repo.Commit(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.repo.Push(ctx, "HEAD:refs/heads/"+a.branch); err != nil {
		t.Fatal(err)
	}
	return sha
}

func (a *app) applied(t testing.TB) string {
	ks := &kustomizev1.Kustomization{}
	if err := e2e.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: fluxNS, Name: a.name}, ks); err != nil {
		return ""
	}
	if !apimeta.IsStatusConditionTrue(ks.Status.Conditions, meta.ReadyCondition) {
		return ""
	}
	return ks.Status.LastAppliedRevision
}

func (a *app) context(kind string) string {
	return fmt.Sprintf("flux/%s/%s/%s/%s", clusterName, strings.ToLower(kind), fluxNS, a.name)
}

// states returns the states posted under one context of a commit, oldest first.
func (a *app) states(t testing.TB, sha, context string) ([]string, *gitea.Status) {
	t.Helper()
	all, err := a.repo.Statuses(t.Context(), sha)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	var out []string
	var last *gitea.Status
	for _, s := range all {
		if s.Context == context {
			out = append(out, string(s.State))
			last = s
		}
	}
	return out, last
}

// waitFinal waits for the final status of a context and checks it is the only one after a
// single pending.
func (a *app) waitFinal(t testing.TB, sha, kind, want string) *gitea.Status {
	t.Helper()
	ctx := a.context(kind)
	var last *gitea.Status
	var states []string
	waitFor(t, resultWindow, fmt.Sprintf("%s status of %s", want, ctx), func() bool {
		states, last = a.states(t, sha, ctx)
		return len(states) > 0 && states[len(states)-1] != "pending"
	})
	if !slices.Equal(states, []string{"pending", want}) {
		t.Fatalf("%s on %s: states %v (%q), want [pending %s]", ctx, sha[:12], states, last.Description, want)
	}
	return last
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, d, what, cond)
}

func configMapValue(t testing.TB, name string) string {
	cm := &corev1.ConfigMap{}
	if err := e2e.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: appsNS, Name: name}, cm); err != nil {
		return ""
	}
	return cm.Data["value"]
}

// A push delivered by a native Gitea webhook (HMAC signature) is applied by the real Flux
// controllers within seconds, and the commit gets one pending then one final status per Flux
// object: success, then failure with Flux's own message for a broken manifest, then success
// again for the fix.
func TestNativeWebhookPushIsAppliedAndReported(t *testing.T) {
	integration(t)
	a := newApp(t, "native-"+randomSuffix(), "main")
	if _, err := a.repo.AddHook(t.Context(), testenv.Hook{URL: e2e.hookURL + "/hook", Secret: e2e.webhookKey}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "v2"), "v2")
	a.waitFinal(t, sha, "GitRepository", "success")
	ks := a.waitFinal(t, sha, "Kustomization", "success")
	t.Logf("push → success status: %s", time.Since(start).Round(10*time.Millisecond))
	if want := "applied main@sha1:" + sha[:12]; ks.Description != want {
		t.Fatalf("description %q, want %q", ks.Description, want)
	}
	if v := configMapValue(t, a.name); v != "v2" {
		t.Fatalf("ConfigMap value %q, want v2", v)
	}

	broken := a.commit(t, "deploy/broken.yaml", configMap("Bad_Name", "x"), "broken")
	a.waitFinal(t, broken, "GitRepository", "success")
	fail := a.waitFinal(t, broken, "Kustomization", "failure")
	if !strings.Contains(fail.Description, "Bad_Name") {
		t.Fatalf("failure description lacks Flux's message: %q", fail.Description)
	}

	fixed := a.commit(t, "deploy/broken.yaml", "", "fix")
	a.waitFinal(t, fixed, "Kustomization", "success")

	// The audit trail in Kubernetes, for each push (recorded asynchronously, after the
	// status): the request's Event, one per push and cluster, on the source it requested
	// (counting what it requested there), and the result's on the Kustomization.
	seen := map[string]bool{}
	waitFor(t, 10*time.Second, "Events for each push", func() bool {
		var evs eventsv1.EventList
		if err := e2e.kube.Client.List(t.Context(), &evs, client.InNamespace(fluxNS)); err != nil {
			return false
		}
		for _, e := range evs.Items {
			on := map[string]string{"ReconcileRequested": "GitRepository", "ResultReported": "Kustomization"}[e.Reason]
			if e.Regarding.Name == a.name && e.Regarding.Kind == on {
				for _, s := range []string{sha, broken, fixed} {
					if strings.Contains(e.Note, s) {
						seen[e.Reason+" "+s[:7]] = true
					}
				}
			}
		}
		return len(seen) == 6
	})
}

// The README's first workflow, run by the real Gitea Actions runner: the platform
// documentation's one-liner as it is written there (curl -X POST with only the Authorization
// header to /hook/<owner>/<repo>, no body), then the workflow posting the push event itself.
// Both pushes are applied and reported.
func TestActionsWorkflowFromReadme(t *testing.T) {
	integration(t)
	a := newApp(t, "actions-"+randomSuffix(), "main")
	ctx := t.Context()
	if err := a.repo.SetActionSecret(ctx, "FLUX_WEBHOOK_TOKEN", a.token()); err != nil {
		t.Fatal(err)
	}
	if err := a.repo.SetActionVariable(ctx, "FLUX_WEBHOOK_URL", e2e.hookURL); err != nil {
		t.Fatal(err)
	}
	workflow := func(name string) string {
		b, err := os.ReadFile("../../examples/.gitea/workflows/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	short := workflow("notify-flux.yaml")
	if !strings.Contains(short, "curl -X POST \\\n            -H \"Authorization: Bearer ${{ secrets.FLUX_WEBHOOK_TOKEN }}\" \\\n            ${{ vars.FLUX_WEBHOOK_URL }}/hook/${{ github.repository }}\n") {
		t.Fatalf("notify-flux.yaml is not the platform documentation's one-liner:\n%s", short)
	}
	if err := a.repo.WriteFile(".gitea/workflows/notify-flux.yaml", short); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "from-actions"), "via actions")
	a.waitFinal(t, sha, "Kustomization", "success")
	t.Logf("push → Actions job (the one-liner) → success status: %s", time.Since(start).Round(10*time.Millisecond))
	if v := configMapValue(t, a.name); v != "from-actions" {
		t.Fatalf("ConfigMap value %q", v)
	}
	// It was the short form: the request that requested the commit came to /hook/* with no
	// delivery id of its own (the one-liner sends none), and was answered 202.
	waitFor(t, 10*time.Second, "log lines of the one-liner's request", func() bool {
		var delivery string
		for _, line := range logLines(t) {
			if line["msg"] == "target" && line["commit"] == sha {
				delivery, _ = line["delivery"].(string)
			}
		}
		for _, line := range logLines(t) {
			if delivery != "" && !strings.HasPrefix(delivery, "actions-") && line["msg"] == "request" && line["delivery"] == delivery &&
				line["route"] == "/hook/*" && line["status"] == float64(http.StatusAccepted) {
				return true
			}
		}
		return false
	})

	// The push event form, in the next push (the one-liner's workflow removed).
	if err := a.repo.Remove(".gitea/workflows/notify-flux.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := a.repo.WriteFile(".gitea/workflows/notify-flux-event.yaml", workflow("notify-flux-event.yaml")); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	sha = a.commit(t, "deploy/configmap.yaml", configMap(a.name, "from-the-event"), "via actions, the push event")
	a.waitFinal(t, sha, "Kustomization", "success")
	t.Logf("push → Actions job (the push event) → success status: %s", time.Since(start).Round(10*time.Millisecond))
	if v := configMapValue(t, a.name); v != "from-the-event" {
		t.Fatalf("ConfigMap value %q", v)
	}
	// The delivery id the workflow sends is in the service's log, with the commit.
	waitFor(t, 10*time.Second, "log line with the Actions delivery", func() bool {
		b, _ := os.ReadFile(e2e.service.Log)
		for _, line := range bytes.Split(b, []byte("\n")) {
			if bytes.Contains(line, []byte(`"delivery":"actions-`)) && bytes.Contains(line, []byte(sha)) {
				return true
			}
		}
		return false
	})
}

// logLines returns the service's JSON log lines.
func logLines(t testing.TB) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(e2e.service.Log)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(b, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// A push to a pull request's branch gets a summary comment on the pull request once every
// Flux object has answered; the next push edits that comment.
func TestPullRequestSummaryComment(t *testing.T) {
	integration(t)
	a := newApp(t, "preview-"+randomSuffix(), "preview")
	ctx := t.Context()
	if _, err := a.repo.AddHook(ctx, testenv.Hook{URL: e2e.hookURL + "/hook", Authorization: "Bearer " + a.token()}); err != nil {
		t.Fatal(err)
	}
	var pr *gitea.PullRequest
	var err error
	waitFor(t, 10*time.Second, "pull request created", func() bool {
		pr, err = a.repo.CreatePullRequest(ctx, "preview", "main", "Preview environment")
		return err == nil
	})
	// One comment per pull request, edited in place as commits land.
	var summary *gitea.Comment
	for i, value := range []string{"preview-2", "preview-3"} {
		sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, value), "preview change "+value)
		a.waitFinal(t, sha, "GitRepository", "success")
		a.waitFinal(t, sha, "Kustomization", "success")
		var bodies []string
		waitFor(t, 30*time.Second, "summary comment of "+value, func() bool {
			cs, err := a.repo.IssueComments(ctx, pr.Index)
			if err != nil {
				return false
			}
			bodies = bodies[:0]
			for _, c := range cs {
				bodies = append(bodies, c.Body)
			}
			return len(bodies) > 0 && strings.Contains(bodies[len(bodies)-1], sha)
		})
		time.Sleep(time.Second)
		cs, _ := a.repo.IssueComments(ctx, pr.Index)
		if len(cs) != 1 || !strings.Contains(cs[0].Body, sha) || !strings.Contains(cs[0].Body, "kustomization/"+fluxNS+"/"+a.name) {
			t.Fatalf("commit %d: want one summary naming the commit and the Kustomization, got %d: %q", i+1, len(cs), bodies)
		}
		if summary != nil && cs[0].ID != summary.ID {
			t.Fatalf("commit %d: a new comment %d, want comment %d edited", i+1, cs[0].ID, summary.ID)
		}
		summary = cs[0]
	}
}

// hookPost posts a push event to /hook the way the Actions workflow does.
func hookPost(t *testing.T, body []byte, token string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e2e.hookURL+"/hook", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
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
	return resp, out
}

// pushEvent renders the push event Gitea would send for sha on the app's branch.
func (a *app) pushEvent(sha string) []byte { return a.pushEventFrom(strings.Repeat("0", 40), sha) }

// pushEventFrom is pushEvent for a push that moved the branch from before to sha.
func (a *app) pushEventFrom(before, sha string) []byte {
	b, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/" + a.branch, "after": sha, "before": before,
		"repository": map[string]any{"full_name": a.repo.FullName, "clone_url": a.repo.CloneURL,
			"html_url": strings.TrimSuffix(a.repo.CloneURL, ".git")},
	})
	return b
}

// While the API server cannot be reached, /hook answers 503 with Retry-After; the retry
// after it is back is accepted and reported.
func TestKubernetesUnavailable(t *testing.T) {
	integration(t)
	a := newApp(t, "outage-"+randomSuffix(), "main")
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "after-outage"), "during outage")
	e2e.proxy.Cut()
	resp, body := hookPost(t, a.pushEvent(sha), a.token())
	if err := e2e.proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("with the API server down: %d %v (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	var accepted bool
	waitFor(t, time.Minute, "hook accepted after the outage", func() bool {
		resp, body = hookPost(t, a.pushEvent(sha), a.token())
		accepted = resp.StatusCode == http.StatusAccepted
		return accepted
	})
	a.waitFinal(t, sha, "Kustomization", "success")
}

// A rotated hook key changes every scoped token within seconds, without a restart: the new
// token is accepted, the previous one keeps working for --token-grace, then stops.
func TestTokenRotation(t *testing.T) {
	integration(t)
	a := newApp(t, "rotate-"+randomSuffix(), "main")
	ctx := t.Context()
	s := &corev1.Secret{}
	key := client.ObjectKey{Namespace: fluxNS, Name: hookKeySecret}
	if err := e2e.kube.Client.Get(ctx, key, s); err != nil {
		t.Fatal(err)
	}
	old := a.token()
	e2e.hookKey = "e2e-rotated-hook-key-0123456789abcdef-" + randomSuffix()
	next := a.token()
	s.Data["token"] = []byte(e2e.hookKey)
	if err := e2e.kube.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "rotated"), "rotation")
	rotated := time.Now()
	waitFor(t, 10*time.Second, "new token accepted", func() bool {
		resp, _ := hookPost(t, a.pushEvent(sha), next)
		return resp.StatusCode == http.StatusAccepted
	})
	t.Logf("new token accepted %s after the Secret update", time.Since(rotated).Round(10*time.Millisecond))
	if resp, body := hookPost(t, a.pushEvent(sha), old); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("old token within grace: %d %v", resp.StatusCode, body)
	}
	waitFor(t, 10*time.Second, "old token refused after the grace period", func() bool {
		resp, _ := hookPost(t, a.pushEvent(sha), old)
		return resp.StatusCode == http.StatusUnauthorized
	})
	a.waitFinal(t, sha, "Kustomization", "success")

	// A rotation to a weak value, or to the webhook key's, is refused: the service says so
	// in /readyz's detail and its log, and the previous key keeps its grace only.
	for _, bad := range []string{"too-short", e2e.webhookKey} {
		if err := e2e.kube.Client.Get(ctx, key, s); err != nil {
			t.Fatal(err)
		}
		s.Data["token"] = []byte(bad)
		if err := e2e.kube.Client.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "refused hook key logged", func() bool {
			b, _ := os.ReadFile(e2e.service.Log)
			return bytes.Contains(b, []byte(`"secret value refused`))
		})
	}
	if err := e2e.kube.Client.Get(ctx, key, s); err != nil {
		t.Fatal(err)
	}
	s.Data["token"] = []byte(e2e.hookKey)
	if err := e2e.kube.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the good key back", func() bool {
		resp, _ := hookPost(t, a.pushEvent(sha), next)
		return resp.StatusCode == http.StatusAccepted
	})
}

func randomSuffix() string { return fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff) }

// A replica is alive at once but ready only once its caches are synced and a hook key it
// accepts is read; it serves /hook while another replica leads.
func TestReadinessAndSecondReplica(t *testing.T) {
	integration(t)
	ctx := t.Context()
	ports, err := testenv.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	health := fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	args := serviceArgs(e2e.kube.Kubeconfig, ports)
	for i, a := range args {
		switch a {
		case fluxNS + "/" + hookKeySecret:
			args[i] = fluxNS + "/replica-key"
		case fluxNS + "/" + webhookKeySecret:
			args[i] = fluxNS + "/replica-webhook-key"
		}
	}
	testenv.NewService(t, "replica", e2e.bin, health+"/healthz", args...)
	get := func(path string) (int, string) {
		resp, err := httpClient.Get(health + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	time.Sleep(time.Second)
	if code, body := get("/readyz?verbose"); code == http.StatusOK || !strings.Contains(body, "hook-credentials") {
		t.Fatalf("ready without its hook key Secret: %d %s", code, body)
	}
	// A weak key is no key: still not ready, and /readyz says why.
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: "replica-key"}, Data: map[string][]byte{"token": []byte("weak")}}
	if err := e2e.kube.Client.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e2e.kube.Client.Delete(context.Background(), s) })
	waitFor(t, 10*time.Second, "the weak key refused", func() bool {
		code, body := get("/readyz?verbose")
		return code != http.StatusOK && strings.Contains(body, "hook-credentials")
	})
	replicaKey := "replica-hook-key-0123456789abcdef-0123"
	s.Data["token"] = []byte(replicaKey)
	if err := e2e.kube.Client.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replica ready", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })

	event, _ := unfollowedPush(t)
	var full struct {
		Repository struct {
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	_ = json.Unmarshal(event, &full)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/hook", ports[0]), bytes.NewReader(event))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+credentials.DeriveToken([]byte(replicaKey), mustRepoScope(full.Repository.FullName)))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"result":"no-match"`) {
		t.Fatalf("replica /hook: %d %s", resp.StatusCode, b)
	}
}

// The README's waiting workflow makes the Actions job's own status follow Flux: green
// when the deploy applied, red when it failed.
func TestActionsWaitWorkflowGoesRed(t *testing.T) {
	integration(t)
	a := newApp(t, "actions-wait-"+randomSuffix(), "main")
	ctx := t.Context()
	if err := a.repo.SetActionSecret(ctx, "FLUX_WEBHOOK_TOKEN", a.token()); err != nil {
		t.Fatal(err)
	}
	if err := a.repo.SetActionVariable(ctx, "FLUX_WEBHOOK_URL", e2e.hookURL); err != nil {
		t.Fatal(err)
	}
	workflow, err := os.ReadFile("../../examples/.gitea/workflows/deploy-and-wait.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.repo.WriteFile(".gitea/workflows/deploy-and-wait.yaml", string(workflow)); err != nil {
		t.Fatal(err)
	}
	job := "deploy-and-wait / deploy (push)"
	jobState := func(sha string) string {
		var s string
		waitFor(t, resultWindow, "Actions job finished on "+sha[:12], func() bool {
			states, last := a.states(t, sha, job)
			if len(states) == 0 || last.State == "pending" {
				return false
			}
			s = string(last.State)
			return true
		})
		return s
	}
	good := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "waited"), "deploy and wait")
	a.waitFinal(t, good, "Kustomization", "success")
	if s := jobState(good); s != "success" {
		t.Fatalf("Actions job %s for a successful deploy", s)
	}
	bad := a.commit(t, "deploy/broken.yaml", configMap("Bad_Name", "x"), "broken deploy")
	a.waitFinal(t, bad, "Kustomization", "failure")
	if s := jobState(bad); s != "failure" {
		t.Fatalf("Actions job %s for a failed deploy, want failure", s)
	}
}
