package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
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
	"sigs.k8s.io/yaml"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
	"github.com/openova-io/flux-webhook/webhook/enroll"
)

// enrollSecret holds the enrollment's own Gitea token (write:organization and
// write:repository only).
const enrollSecret = "flux-webhook-enroll"

// enrolling is the service with enrollment on, while TestEnrollment runs.
type enrolling struct {
	url, ready, metrics string
	svc                 *testenv.Service
}

// strictWorkflow is the README's one-liner with curl told to fail on a refusal (and to
// retry what may pass), so that a run's result says whether its post was accepted.
const strictWorkflow = `name: notify-flux-strict
on:
  push:
    branches: [main]
jobs:
  notify:
    runs-on: ubuntu-latest
    steps:
      - name: Trigger Flux reconciliation
        run: |
          curl --fail-with-body --silent --show-error --retry 5 --retry-connrefused -X POST \
            -H "Authorization: Bearer ${{ secrets.FLUX_WEBHOOK_TOKEN }}" \
            ${{ vars.FLUX_WEBHOOK_URL }}/hook/${{ github.repository }}
`

const strictJob = "notify-flux-strict / notify (push)"

// startEnrolling replaces the suite's service, for the test, by one that enrolls org and
// the repositories Flux follows and keeps org's webhook, with an enrollment token of its
// own (one leader: the suite's would report the same objects). The suite's service is
// back when the test ends.
func startEnrolling(t *testing.T, org string) *enrolling {
	t.Helper()
	ctx := t.Context()
	tok, err := e2e.gitea.CreateToken(ctx, "flux-webhook-enroll", "write:organization", "write:repository")
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: enrollSecret}, Data: map[string][]byte{"token": []byte(tok)}}
	if err := e2e.kube.Client.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	ports, err := testenv.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	en := &enrolling{url: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), ready: fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[2]),
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[3])}
	args := serviceArgs(e2e.kube.Kubeconfig, ports,
		"--enroll-organization", org,
		"--enroll-followed",
		"--enroll-url", en.url,
		"--enroll-token-secret", fluxNS+"/"+enrollSecret,
		"--enroll-webhook",
		"--enroll-resync-interval", "10s")
	// Jobs that read the old token just before its secret was rewritten post within this.
	args[slices.Index(args, "--token-grace")+1] = "20s"
	e2e.service.Stop()
	t.Cleanup(func() {
		if err := e2e.service.Restart(context.Background(), e2e.ready); err != nil {
			t.Errorf("the suite's service did not come back: %v", err)
		}
	})
	if en.svc, err = testenv.StartService(ctx, "flux-webhook-enroll", e2e.dir, e2e.bin, en.ready, args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		en.svc.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(en.svc.Log)
			if len(b) > 12000 {
				b = b[len(b)-12000:]
			}
			t.Logf("enrolling flux-webhook log (tail):\n%s", b)
		}
	})
	return en
}

// cli runs the binary with args, returning its stdout and exit status.
func cli(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), e2e.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if errb.Len() > 0 {
		t.Logf("flux-webhook %s: stderr %s", args[0], errb.String())
	}
	return out.String(), code
}

// record reads the enrollment record through the CLI, as an operator does.
func (en *enrolling) record(t *testing.T) *enroll.Record {
	t.Helper()
	out, _ := cli(t, "enrollment", "--kubeconfig", e2e.kube.Kubeconfig, "-n", fluxNS, "-o", "json")
	rec := &enroll.Record{}
	if err := json.Unmarshal([]byte(out), rec); err != nil {
		return &enroll.Record{}
	}
	return rec
}

func scopeOf(rec *enroll.Record, s string) *enroll.ScopeRecord {
	for i := range rec.Scopes {
		if rec.Scopes[i].Scope == s {
			return &rec.Scopes[i]
		}
	}
	return nil
}

// requestLines counts the service's log lines of requests on route answered status by
// principal.
func requestLines(t *testing.T, log, route string, status int, principal string) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && m["msg"] == "request" && m["route"] == route &&
			m["status"] == float64(status) && m["principal"] == principal {
			n++
		}
	}
	return n
}

// jobState waits for the final state of the Actions job of sha (its commit status).
func (a *app) jobState(t *testing.T, sha, job string) string {
	t.Helper()
	var s string
	waitFor(t, resultWindow, "Actions job "+job+" on "+sha[:12], func() bool {
		states, last := a.states(t, sha, job)
		if len(states) == 0 || last.State == "pending" {
			return false
		}
		s = string(last.State)
		return true
	})
	return s
}

// shortPost posts the short form for a repository with a token to the enrolling service.
func (en *enrolling) shortPost(t *testing.T, fullName, token string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, en.url+"/hook/"+fullName, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Enrollment on the real parts: an organization of three repositories whose workflows are
// the README's one-liner, with nothing stored by hand; a hook key rotation under a
// continuous stream of pushes without one failed run; a repository created afterwards
// deploying on its first push; a repository a Flux source starts to follow, enrolled; the
// organization webhook deleted in Gitea and back within the resync, the next push arriving
// through it; `enroll` and `enrollment` as an operator runs them.
func TestEnrollment(t *testing.T) {
	integration(t)
	ctx := t.Context()
	org := "enrolled-" + randomSuffix()
	if err := e2e.gitea.CreateOrg(ctx, org, gitea.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	var apps []*app
	for i := range 3 {
		repo, err := e2e.gitea.CreateOrgRepo(ctx, org, fmt.Sprintf("app%d", i))
		if err != nil {
			t.Fatal(err)
		}
		apps = append(apps, newAppOf(t, repo, fmt.Sprintf("%s-app%d", org, i), "main"))
	}
	oldOrgToken := tokenFor(org) // what enrollment writes; known to the secret sweep
	en := startEnrolling(t, org)
	orgScope := "org " + org
	waitFor(t, time.Minute, "the organization enrolled", func() bool {
		s := scopeOf(en.record(t), orgScope)
		return s != nil && s.Written != nil && s.Webhook != nil
	})
	admin, err := e2e.gitea.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := admin.GetOrgActionVariable(org, "FLUX_WEBHOOK_URL"); err != nil || v.Data != en.url {
		t.Fatalf("organization variable: %+v, %v", v, err)
	}

	readme, err := os.ReadFile("../../examples/.gitea/workflows/notify-flux.yaml")
	if err != nil {
		t.Fatal(err)
	}
	principal := "scoped token for org " + org

	t.Run("the README's one-liner, nothing stored by hand", func(t *testing.T) {
		var shas []string
		for _, a := range apps {
			if err := a.repo.WriteFile(".gitea/workflows/notify-flux.yaml", string(readme)); err != nil {
				t.Fatal(err)
			}
			shas = append(shas, a.commit(t, "deploy/configmap.yaml", configMap(a.name, "enrolled"), "enrolled"))
		}
		for i, a := range apps {
			a.waitFinal(t, shas[i], "GitRepository", "success")
			a.waitFinal(t, shas[i], "Kustomization", "success")
		}
		// Each workflow's post was accepted with the organization's token enrollment wrote.
		waitFor(t, 30*time.Second, "three short-form posts answered 202", func() bool {
			return requestLines(t, en.svc.Log, "/hook/*", http.StatusAccepted, principal) >= 3
		})
	})

	t.Run("rotation under load: no failed run, then the old key refused", func(t *testing.T) {
		for _, a := range apps {
			if err := a.repo.Remove(".gitea/workflows/notify-flux.yaml"); err != nil {
				t.Fatal(err)
			}
			if err := a.repo.WriteFile(".gitea/workflows/notify-flux-strict.yaml", strictWorkflow); err != nil {
				t.Fatal(err)
			}
		}
		type push struct {
			a   *app
			sha string
		}
		var (
			mu     sync.Mutex
			pushes []push
		)
		pushRound := func(round int) {
			var wg sync.WaitGroup
			errs := make(chan error, len(apps))
			for _, a := range apps {
				wg.Go(func() {
					sha, err := a.tryCommit(context.Background(), "deploy/configmap.yaml", configMap(a.name, fmt.Sprintf("round-%d", round)), fmt.Sprintf("round %d", round))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					pushes = append(pushes, push{a, sha})
					mu.Unlock()
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
		}
		// Pushes keep coming across the three repositories: two rounds before the rotation,
		// two while enrollment rewrites the secret, two after.
		rotated := make(chan time.Time, 1)
		go func() {
			var at time.Time
			defer func() { rotated <- at }()
			time.Sleep(3 * time.Second)
			s := &corev1.Secret{}
			if err := e2e.kube.Client.Get(context.Background(), client.ObjectKey{Namespace: fluxNS, Name: hookKeySecret}, s); err != nil {
				t.Error(err)
				return
			}
			e2e.hookKey = "e2e-enroll-rotated-hook-key-0123456789abcdef-" + randomSuffix()
			s.Data["token"] = []byte(e2e.hookKey)
			if err := e2e.kube.Client.Update(context.Background(), s); err != nil {
				t.Error(err)
				return
			}
			at = time.Now()
		}()
		for round := range 6 {
			pushRound(round)
			time.Sleep(2 * time.Second)
		}
		at := <-rotated
		if at.IsZero() {
			t.FailNow()
		}
		newOrgToken := tokenFor(org)
		failed := 0
		for _, p := range pushes {
			if s := p.a.jobState(t, p.sha, strictJob); s != "success" {
				failed++
				t.Errorf("run of %s on %s: %s", strictJob, p.sha[:12], s)
			}
		}
		t.Logf("%d runs across the rotation, %d failed", len(pushes), failed)
		for _, a := range apps {
			// The last push of each repository was applied.
			var last string
			for _, p := range pushes {
				if p.a == a {
					last = p.sha
				}
			}
			waitFor(t, resultWindow, "the last push applied in "+a.name, func() bool { return a.applied(t) == "main@sha1:"+last })
		}
		var rec *enroll.Record
		waitFor(t, time.Minute, "rotation recorded as settled", func() bool {
			rec = en.record(t)
			return rec.Rotation != nil && rec.Rotation.Settled != nil && rec.Settled.HookKey == rec.KeyGeneration &&
				rec.KeyGeneration == credentials.Fingerprint([]byte(e2e.hookKey))
		})
		t.Logf("hook key rotated: every enrolled secret rewritten %s after the Secret's update (%d scopes)",
			rec.Rotation.Settled.Sub(at).Round(time.Millisecond), len(rec.Scopes))
		// The rotation's progress where operators look: the metrics and the Events on the
		// enrollment record.
		if v := metricAt(t, en.metrics, "flux_webhook_enrollment_rotation_pending", ""); v != 0 {
			t.Errorf("flux_webhook_enrollment_rotation_pending %v after the rotation settled, want 0", v)
		}
		if v := metricAt(t, en.metrics, "flux_webhook_enrollment_rotation_seconds", ""); v <= 0 {
			t.Errorf("flux_webhook_enrollment_rotation_seconds %v after the rotation settled, want its time", v)
		}
		if v := metricAt(t, en.metrics, "flux_webhook_enrollment_writes_total", `result="ok",what="secret"`); v < float64(len(rec.Scopes)) {
			t.Errorf("flux_webhook_enrollment_writes_total{secret, ok} %v, want at least one per scope (%d)", v, len(rec.Scopes))
		}
		waitFor(t, time.Minute, "the rotation's Events on the enrollment record", func() bool {
			var evs eventsv1.EventList
			if err := e2e.kube.Client.List(t.Context(), &evs, client.InNamespace(fluxNS)); err != nil {
				return false
			}
			seen := map[string]bool{}
			for _, e := range evs.Items {
				if e.Regarding.Name == enroll.RecordName {
					seen[e.Reason] = true
				}
			}
			return seen["RotationStarted"] && seen["RotationComplete"]
		})
		// The old key stays valid for --token-grace (20 s) after that, then is refused.
		waitFor(t, time.Minute, "the old key refused", func() bool {
			return en.shortPost(t, apps[0].repo.FullName, oldOrgToken) == http.StatusUnauthorized
		})
		if code := en.shortPost(t, apps[0].repo.FullName, newOrgToken); code != http.StatusAccepted {
			t.Fatalf("the new organization token: %d", code)
		}
	})

	t.Run("a repository created after enrollment deploys on its first push", func(t *testing.T) {
		repo, err := e2e.gitea.CreateOrgRepo(ctx, org, "late")
		if err != nil {
			t.Fatal(err)
		}
		a := &app{name: org + "-late", branch: "main", repo: repo}
		a.createFluxObjects(t)
		if err := repo.WriteFile(".gitea/workflows/notify-flux.yaml", string(readme)); err != nil {
			t.Fatal(err)
		}
		sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "first"), "first push")
		a.waitFinal(t, sha, "Kustomization", "success")
		if v := configMapValue(t, a.name); v != "first" {
			t.Fatalf("ConfigMap value %q", v)
		}
	})

	t.Run("a repository a Flux source starts to follow is enrolled within a minute", func(t *testing.T) {
		repo, err := e2e.gitea.CreateRepo(ctx, "followed-"+randomSuffix())
		if err != nil {
			t.Fatal(err)
		}
		tokenFor(repo.FullName) // what enrollment writes; known to the secret sweep
		a := &app{name: repo.Name, branch: "main", repo: repo}
		if err := repo.WriteFile(".gitea/workflows/notify-flux.yaml", string(readme)); err != nil {
			t.Fatal(err)
		}
		if err := repo.WriteFile("deploy/configmap.yaml", configMap(a.name, "v1")); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.Commit(ctx, "before anyone follows it"); err != nil {
			t.Fatal(err)
		}
		if err := repo.Push(ctx, "HEAD:refs/heads/main"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		a.createFluxObjects(t)
		waitFor(t, time.Minute, "the followed repository's secret and variable", func() bool {
			secrets, _, err := admin.ListRepoActionSecret(repo.Owner, repo.Name, gitea.ListRepoActionSecretOption{})
			v, _, verr := admin.GetRepoActionVariable(repo.Owner, repo.Name, "FLUX_WEBHOOK_URL")
			return err == nil && verr == nil && len(secrets) == 1 && secrets[0].Name == "FLUX_WEBHOOK_TOKEN" && v.Value == en.url
		})
		t.Logf("followed repository enrolled %s after its GitRepository appeared", time.Since(start).Round(100*time.Millisecond))
		if s := scopeOf(en.record(t), "repo "+strings.ToLower(repo.FullName)); s == nil || !slices.Equal(s.Sources, []string{enroll.SourceFlux}) {
			t.Fatalf("record of the followed repository: %+v", s)
		}
		sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "v2"), "a push of a followed repository")
		a.waitFinal(t, sha, "Kustomization", "success")
	})

	t.Run("the organization webhook deleted in Gitea is back within the resync", func(t *testing.T) {
		hooks, _, err := admin.ListOrgHooks(org, gitea.ListHooksOptions{})
		if err != nil || len(hooks) != 1 || hooks[0].Config["url"] != en.url+"/hook" {
			t.Fatalf("organization webhooks: %+v, %v", hooks, err)
		}
		if _, err := admin.DeleteOrgHook(org, hooks[0].ID); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		waitFor(t, time.Minute, "the webhook back", func() bool {
			hs, _, err := admin.ListOrgHooks(org, gitea.ListHooksOptions{})
			return err == nil && len(hs) == 1 && hs[0].ID != hooks[0].ID && hs[0].Config["url"] == en.url+"/hook"
		})
		t.Logf("organization webhook back %s after its deletion (resync interval 10s)", time.Since(deleted).Round(100*time.Millisecond))
		// A push with no workflow: only the webhook can tell flux-webhook.
		a := apps[1]
		if err := a.repo.Remove(".gitea/workflows"); err != nil {
			t.Fatal(err)
		}
		before := requestLines(t, en.svc.Log, "/hook", http.StatusAccepted, "webhook signature")
		sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "through-the-webhook"), "no workflow")
		a.waitFinal(t, sha, "Kustomization", "success")
		if after := requestLines(t, en.svc.Log, "/hook", http.StatusAccepted, "webhook signature"); after <= before {
			t.Fatalf("no signed delivery accepted (%d before, %d after)", before, after)
		}
	})

	t.Run("enroll and enrollment, as an operator runs them", func(t *testing.T) {
		repo, err := e2e.gitea.CreateRepo(ctx, "by-hand-"+randomSuffix())
		if err != nil {
			t.Fatal(err)
		}
		tok := tokenFor(repo.FullName)
		enrollRepo := []string{"enroll", "--repository", repo.FullName, "--url", en.url, "--gitea-url", e2e.gitea.URL,
			"--hook-key-secret", fluxNS + "/" + hookKeySecret, "--enroll-token-secret", fluxNS + "/" + enrollSecret, "--kubeconfig", e2e.kube.Kubeconfig}
		out, code := cli(t, enrollRepo...)
		if code != 0 || strings.Contains(out, tok) || !strings.Contains(out, "secret   FLUX_WEBHOOK_TOKEN   written: the repository's token (key generation "+credentials.Fingerprint([]byte(e2e.hookKey))+")") ||
			!strings.Contains(out, "variable FLUX_WEBHOOK_URL     created: "+en.url) {
			t.Fatalf("enroll: exit %d\n%s", code, out)
		}
		if secrets, _, err := admin.ListRepoActionSecret(repo.Owner, repo.Name, gitea.ListRepoActionSecretOption{}); err != nil || len(secrets) != 1 {
			t.Fatalf("secrets after enroll: %+v, %v", secrets, err)
		}
		// The same, once more, for a script: one JSON document, and one YAML, saying what was
		// written (the secret again; the variable already holds the URL), never the token.
		for _, format := range []string{"json", "yaml"} {
			out, code := cli(t, append(enrollRepo, "-o", format)...)
			var got enrolled
			if err := yaml.UnmarshalStrict([]byte(out), &got); code != 0 || strings.Contains(out, tok) || err != nil {
				t.Fatalf("enroll -o %s: exit %d, %v\n%s", format, code, err, out)
			}
			if !strings.HasSuffix(got.Scope, " "+strings.ToLower(repo.FullName)) || got.Level != "repository" || got.Secret.Action == "" ||
				got.Secret.Name != "FLUX_WEBHOOK_TOKEN" || got.Secret.KeyGeneration != credentials.Fingerprint([]byte(e2e.hookKey)) ||
				got.Variable.Name != "FLUX_WEBHOOK_URL" || got.Variable.Value != en.url {
				t.Fatalf("enroll -o %s: %+v\n%s", format, got, out)
			}
		}
		// Its token is the one the service accepts for that repository.
		if err := repo.WriteFile("README.md", "by hand\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.Commit(ctx, "first"); err != nil {
			t.Fatal(err)
		}
		if err := repo.Push(ctx, "main"); err != nil {
			t.Fatal(err)
		}
		if code := en.shortPost(t, repo.FullName, tok); code != http.StatusOK {
			t.Fatalf("the enrolled repository's token on an unfollowed repository: %d, want 200 no-match", code)
		}
		out, code = cli(t, "enrollment", "--kubeconfig", e2e.kube.Kubeconfig, "-n", fluxNS)
		if code != 0 || !strings.Contains(out, orgScope) || !strings.Contains(out, "summary: ") || !strings.Contains(out, "all current") {
			t.Fatalf("enrollment: exit %d\n%s", code, out)
		}
		t.Logf("flux-webhook enrollment:\n%s", out)
		// -o yaml is the record -o json gives (which the tests above read), as YAML.
		out, code = cli(t, "enrollment", "--kubeconfig", e2e.kube.Kubeconfig, "-n", fluxNS, "-o", "yaml")
		fromYAML := &enroll.Record{}
		if err := yaml.UnmarshalStrict([]byte(out), fromYAML); code != 0 || err != nil {
			t.Fatalf("enrollment -o yaml: exit %d, %v\n%s", code, err, out)
		}
		if fromJSON := en.record(t); fromYAML.KeyGeneration != fromJSON.KeyGeneration || len(fromYAML.Scopes) != len(fromJSON.Scopes) ||
			scopeOf(fromYAML, orgScope) == nil {
			t.Fatalf("enrollment -o yaml: %d scopes, key generation %q; -o json: %d, %q",
				len(fromYAML.Scopes), fromYAML.KeyGeneration, len(fromJSON.Scopes), fromJSON.KeyGeneration)
		}
		// /readyz names enrollment's state without failing.
		resp, err := httpClient.Get(en.ready + "?verbose")
		if err != nil {
			t.Fatal(err)
		}
		b := new(bytes.Buffer)
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), "[+]enrollment ok: ") {
			t.Fatalf("/readyz?verbose: %d %s", resp.StatusCode, b)
		}
	})
}

// createFluxObjects creates the app's GitRepository and Kustomization (polling hourly),
// without waiting for them: the repository may be empty yet.
func (a *app) createFluxObjects(t *testing.T) {
	t.Helper()
	c := e2e.kube.Client
	if err := c.Create(t.Context(), &sourcev1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: a.name},
		Spec: sourcev1.GitRepositorySpec{URL: a.repo.CloneURL, Interval: metav1.Duration{Duration: time.Hour},
			Reference: &sourcev1.GitRepositoryRef{Branch: a.branch}, SecretRef: &meta.LocalObjectReference{Name: repoAuth}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(t.Context(), &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: a.name},
		Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Hour}, RetryInterval: &metav1.Duration{Duration: time.Hour},
			Path: "./deploy", Prune: true, TargetNamespace: appsNS,
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: a.name}},
	}); err != nil {
		t.Fatal(err)
	}
}

// tryCommit is commit for a goroutine: it returns the error instead of failing the test.
func (a *app) tryCommit(ctx context.Context, path, content, msg string) (string, error) {
	if err := a.repo.WriteFile(path, content); err != nil {
		return "", err
	}
	sha, err := a.repo.Commit(ctx, msg)
	if err != nil {
		return "", err
	}
	return sha, a.repo.Push(ctx, "HEAD:refs/heads/"+a.branch)
}
