package webhook_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/testenv"
	"github.com/openova-io/flux-webhook/webhook"
)

// newRepo creates a repository with one commit on main and returns it with its sha.
func newRepo(t *testing.T, name string) (*testenv.Repo, string) {
	t.Helper()
	ctx := t.Context()
	repo, err := giteaSrv.CreateRepo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.WriteFile("README.md", "# "+name+"\n"); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	return repo, sha
}

// statusClient returns a Gitea client with a token limited to what flux-webhook needs.
func statusClient(t *testing.T) *webhook.Gitea {
	t.Helper()
	tok, err := giteaSrv.CreateToken(t.Context(), "flux-webhook-"+strings.ReplaceAll(t.Name(), "/", "-"), "write:repository", "write:issue")
	if err != nil {
		t.Fatal(err)
	}
	g := &webhook.Gitea{URL: giteaSrv.URL, HTTP: &http.Client{Timeout: 10 * time.Second}}
	g.SetToken(tok)
	return g
}

func TestGiteaStatuses(t *testing.T) {
	integration(t)
	ctx := t.Context()
	repo, sha := newRepo(t, "statuses")
	g := statusClient(t)
	kctx := "flux/local/kustomization/flux-system/apps"
	long := strings.Repeat("é", 300)
	for _, st := range []gitops.Status{{State: gitops.StatePending, Description: "reconcile requested"}, {State: gitops.StateFailure, Description: long}} {
		if err := g.PostStatus(ctx, gitops.CommitStatus{Repository: repo.FullName, SHA: sha, Context: kctx, Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	latest, err := g.LatestStatus(ctx, repo.FullName, sha, kctx)
	if err != nil {
		t.Fatal(err)
	}
	if latest == nil || latest.State != gitops.StateFailure || len([]rune(latest.Description)) != 255 || !strings.HasSuffix(latest.Description, "…") {
		t.Fatalf("latest %+v", latest)
	}
	if none, err := g.LatestStatus(ctx, repo.FullName, sha, "flux/other"); err != nil || none != nil {
		t.Fatalf("unknown context: %+v, %v", none, err)
	}
	// What auditors read: Gitea's combined status.
	cs, err := repo.CombinedStatus(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	if string(cs.State) != gitops.StateFailure || len(cs.Statuses) != 1 || cs.Statuses[0].Context != kctx {
		t.Fatalf("combined status %+v", cs)
	}
}

func TestGiteaErrors(t *testing.T) {
	integration(t)
	ctx := t.Context()
	g := statusClient(t)
	err := g.PostStatus(ctx, gitops.CommitStatus{Repository: "gitea-admin/does-not-exist", SHA: strings.Repeat("a", 40),
		Context: "flux/x", Status: gitops.Status{State: gitops.StateSuccess}})
	var se *webhook.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound || !se.Permanent() {
		t.Fatalf("missing repository: %v", err)
	}
	g.SetToken("")
	if err := g.PostStatus(ctx, gitops.CommitStatus{Repository: "a/b", SHA: "c"}); !errors.Is(err, webhook.ErrNoToken) {
		t.Fatalf("no token: %v", err)
	}
	g.SetToken(strings.Repeat("0", 40))
	err = g.PostStatus(ctx, gitops.CommitStatus{Repository: "gitea-admin/x", SHA: strings.Repeat("a", 40), Context: "flux/x", Status: gitops.Status{State: gitops.StateSuccess}})
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("bad token: %v", err)
	}
}

func TestPullRequestSummary(t *testing.T) {
	integration(t)
	ctx := t.Context()
	repo, mainSHA := newRepo(t, "summary")
	if err := repo.Branch(ctx, "feature"); err != nil {
		t.Fatal(err)
	}
	if err := repo.WriteFile("app.yaml", "replicas: 2\n"); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit(ctx, "scale")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx, "feature"); err != nil {
		t.Fatal(err)
	}
	pr, err := repo.CreatePullRequest(ctx, "feature", "main", "Scale the app")
	if err != nil {
		t.Fatal(err)
	}
	g := statusClient(t)
	post := func(context, state, desc string) {
		t.Helper()
		if err := g.PostStatus(ctx, gitops.CommitStatus{Repository: repo.FullName, SHA: sha, Context: context,
			Status: gitops.Status{State: state, Description: desc}}); err != nil {
			t.Fatal(err)
		}
	}
	comments := func() []string {
		t.Helper()
		cs, err := repo.IssueComments(ctx, pr.Index)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, c.Body)
		}
		return out
	}
	post("flux/local/gitrepository/flux-system/app", gitops.StateSuccess, "fetched main@sha1:"+sha[:12])
	post("flux/local/kustomization/flux-system/app", gitops.StatePending, "reconcile requested")
	post("ci/build", gitops.StatePending, "someone else's status")
	if err := g.FinalPosted(ctx, repo.FullName, sha); err != nil {
		t.Fatal(err)
	}
	if c := comments(); len(c) != 0 {
		t.Fatalf("summary before every flux status was final: %q", c)
	}
	post("flux/local/kustomization/flux-system/app", gitops.StateFailure, "dry-run failed | bad name")
	for range 2 {
		if err := g.FinalPosted(ctx, repo.FullName, sha); err != nil {
			t.Fatal(err)
		}
	}
	c := comments()
	if len(c) != 1 {
		t.Fatalf("want one summary, got %d: %q", len(c), c)
	}
	for _, want := range []string{sha, "✅ | `local/gitrepository/flux-system/app`", "❌ | `local/kustomization/flux-system/app` | dry-run failed \\| bad name"} {
		if !strings.Contains(c[0], want) {
			t.Fatalf("summary lacks %q:\n%s", want, c[0])
		}
	}
	if strings.Contains(c[0], "ci/build") {
		t.Fatalf("summary lists another tool's status:\n%s", c[0])
	}
	// A commit outside any pull request keeps its statuses only.
	if err := g.FinalPosted(ctx, repo.FullName, mainSHA); err != nil {
		t.Fatal(err)
	}
}
