package gitea_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "code.gitea.io/sdk/gitea"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
	"github.com/openova-io/flux-webhook/webhook"
	"github.com/openova-io/flux-webhook/webhook/gitea"
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
func statusClient(t *testing.T) *gitea.Gitea {
	t.Helper()
	tok, err := giteaSrv.CreateToken(t.Context(), "flux-webhook-"+strings.ReplaceAll(t.Name(), "/", "-"), "write:repository", "write:issue", "read:user")
	if err != nil {
		t.Fatal(err)
	}
	g := &gitea.Gitea{URL: giteaSrv.URL, HTTP: &http.Client{Timeout: 10 * time.Second}, Keys: &credentials.Keyring{}}
	setToken(t, g, tok)
	return g
}

func TestGiteaStatuses(t *testing.T) {
	integration(t)
	ctx := t.Context()
	repo, sha := newRepo(t, "statuses")
	g := statusClient(t)
	target := api.Target{Cluster: "local", Kind: "Kustomization", Namespace: "flux-system", Name: "apps"}
	kctx := target.Context()
	long := strings.Repeat("é", 300)
	for _, st := range []api.Status{{State: api.StatePending, Description: "reconcile requested"}, {State: api.StateFailure, Description: long}} {
		if err := g.PostStatus(ctx, report.CommitStatus{Repository: repo.FullName, SHA: sha, Context: kctx, Target: target, Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	latest, err := g.LatestStatus(ctx, repo.FullName, sha, kctx)
	if err != nil {
		t.Fatal(err)
	}
	if latest == nil || latest.State != api.StateFailure || len([]rune(latest.Description)) != 255 || !strings.HasSuffix(latest.Description, "…") {
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
	if string(cs.State) != api.StateFailure || len(cs.Statuses) != 1 || cs.Statuses[0].Context != kctx {
		t.Fatalf("combined status %+v", cs)
	}
	// The link of a status: Gitea's page of the commit by default, as Gitea names it...
	admin, err := giteaSrv.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	owner, name, _ := strings.Cut(repo.FullName, "/")
	commit, _, err := admin.GetSingleCommit(owner, name, sha)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Statuses[0].TargetURL != commit.HTMLURL {
		t.Fatalf("target URL %q, want the commit's page %q", cs.Statuses[0].TargetURL, commit.HTMLURL)
	}
	// ...or the operator's template, each value escaped where it stands.
	if g.TargetURL, err = gitea.ParseTargetURL("https://grafana.example.com/d/flux/{cluster}/{kind}?var-ns={namespace}&var-name={name}&var-repo={repository}&var-sha={commit}"); err != nil {
		t.Fatal(err)
	}
	hctx := api.Target{Cluster: "local", Kind: "HelmRelease", Namespace: "apps", Name: "web"}
	if err := g.PostStatus(ctx, report.CommitStatus{Repository: repo.FullName, SHA: sha, Context: hctx.Context(), Target: hctx,
		Status: api.Status{State: api.StateSuccess, Description: "released"}}); err != nil {
		t.Fatal(err)
	}
	if cs, err = repo.CombinedStatus(ctx, sha); err != nil {
		t.Fatal(err)
	}
	want := "https://grafana.example.com/d/flux/local/HelmRelease?var-ns=apps&var-name=web&var-repo=" + url.QueryEscape(repo.FullName) + "&var-sha=" + sha
	for _, st := range cs.Statuses {
		if st.Context == hctx.Context() && st.TargetURL != want {
			t.Fatalf("target URL %q, want %q", st.TargetURL, want)
		}
	}
}

func TestGiteaErrors(t *testing.T) {
	integration(t)
	ctx := t.Context()
	g := statusClient(t)
	err := g.PostStatus(ctx, report.CommitStatus{Repository: "gitea-admin/does-not-exist", SHA: strings.Repeat("a", 40),
		Context: "flux/x", Status: api.Status{State: api.StateSuccess}})
	var se *gitea.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound || !se.Permanent() {
		t.Fatalf("missing repository: %v", err)
	}
	setToken(t, g, "")
	if err := g.PostStatus(ctx, report.CommitStatus{Repository: "a/b", SHA: "c"}); !errors.Is(err, gitea.ErrNoToken) {
		t.Fatalf("no token: %v", err)
	}
	setToken(t, g, strings.Repeat("0", 40))
	err = g.PostStatus(ctx, report.CommitStatus{Repository: "gitea-admin/x", SHA: strings.Repeat("a", 40), Context: "flux/x", Status: api.Status{State: api.StateSuccess}})
	if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("bad token: %v", err)
	}
}

// One summary comment per pull request, written by flux-webhook's own user once every flux
// status of the head commit is final, and edited in place as later commits land.
func TestPullRequestSummary(t *testing.T) {
	integration(t)
	ctx := t.Context()
	repo, mainSHA := newRepo(t, "summary")
	if err := repo.Branch(ctx, "feature"); err != nil {
		t.Fatal(err)
	}
	commit := func(replicas string) string {
		t.Helper()
		if err := repo.WriteFile("app.yaml", "replicas: "+replicas+"\n"); err != nil {
			t.Fatal(err)
		}
		sha, err := repo.Commit(ctx, "scale to "+replicas)
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.Push(ctx, "feature"); err != nil {
			t.Fatal(err)
		}
		return sha
	}
	sha := commit("2")
	pr, err := repo.CreatePullRequest(ctx, "feature", "main", "Scale the app")
	if err != nil {
		t.Fatal(err)
	}
	g := statusClient(t)
	post := func(sha, context, state, desc string) {
		t.Helper()
		if err := g.PostStatus(ctx, report.CommitStatus{Repository: repo.FullName, SHA: sha, Context: context,
			Status: api.Status{State: state, Description: desc}}); err != nil {
			t.Fatal(err)
		}
	}
	comments := func() []*sdk.Comment {
		t.Helper()
		cs, err := repo.IssueComments(ctx, pr.Index)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	final := func(sha string) {
		t.Helper()
		if err := g.FinalPosted(ctx, repo.FullName, sha); err != nil {
			t.Fatal(err)
		}
	}
	post(sha, "flux/local/gitrepository/flux-system/app", api.StateSuccess, "fetched main@sha1:"+sha[:12])
	post(sha, "flux/local/kustomization/flux-system/app", api.StatePending, "reconcile requested")
	post(sha, "ci/build", api.StatePending, "someone else's status")
	final(sha)
	if c := comments(); len(c) != 0 {
		t.Fatalf("summary before every flux status was final: %q", c[0].Body)
	}
	// Someone else in the pull request writes the summary's marker first: it is not
	// flux-webhook's summary, and does not stand in for it.
	tok, err := giteaSrv.CreateUser(ctx, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.AddCollaborator(ctx, "mallory"); err != nil {
		t.Fatal(err)
	}
	mallory, err := sdk.NewClient(giteaSrv.URL, sdk.SetToken(tok), sdk.SetContext(ctx), sdk.SetGiteaVersion(giteaSrv.Version))
	if err != nil {
		t.Fatal(err)
	}
	owner, name, _ := strings.Cut(repo.FullName, "/")
	if _, _, err := mallory.CreateIssueComment(owner, name, pr.Index, sdk.CreateIssueCommentOption{
		Body: "<!-- flux-webhook summary -->\nall green, trust me"}); err != nil {
		t.Fatal(err)
	}
	post(sha, "flux/local/kustomization/flux-system/app", api.StateFailure, "dry-run failed | bad name")
	for range 2 {
		final(sha)
	}
	c := comments()
	if len(c) != 2 || !strings.Contains(c[0].Body, "trust me") {
		t.Fatalf("want mallory's comment and one summary, got %d", len(c))
	}
	summary := c[1]
	for _, want := range []string{sha, "✅ | `local/gitrepository/flux-system/app`", "❌ | `local/kustomization/flux-system/app` | `dry-run failed \\| bad name`"} {
		if !strings.Contains(summary.Body, want) {
			t.Fatalf("summary lacks %q:\n%s", want, summary.Body)
		}
	}
	if strings.Contains(summary.Body, "ci/build") {
		t.Fatalf("summary lists another tool's status:\n%s", summary.Body)
	}

	// A second commit lands: the same comment now summarises it.
	second := commit("3")
	post(second, "flux/local/gitrepository/flux-system/app", api.StateSuccess, "fetched main@sha1:"+second[:12])
	post(second, "flux/local/kustomization/flux-system/app", api.StateSuccess, "applied main@sha1:"+second[:12])
	final(second)
	// The first commit finishing again late (a redelivery) changes nothing: it is no longer
	// the pull request's head.
	final(sha)
	c = comments()
	if len(c) != 2 || c[1].ID != summary.ID || c[1].Poster.ID != summary.Poster.ID || !strings.Contains(c[0].Body, "trust me") {
		t.Fatalf("want mallory's comment and the one summary (comment %d), got %d comments", summary.ID, len(c))
	}
	if edited := c[1].Body; !strings.Contains(edited, second) || strings.Contains(edited, sha) ||
		!strings.Contains(edited, "✅ | `local/kustomization/flux-system/app` | `applied") || strings.Contains(edited, "❌") {
		t.Fatalf("summary not edited to the second commit:\n%s", edited)
	}
	// A commit outside any pull request keeps its statuses only.
	final(mainSHA)
}

// Flux's messages carry whatever a tenant wrote into its objects' status (and anyone who may
// post a status on the repository writes contexts and descriptions): in the statuses they
// are plain text, and the pull request summary, rendered by the real Gitea, shows them as
// text only: no link, image, HTML, mention or reference, and the table keeps its rows.
func TestHostileSummary(t *testing.T) {
	integration(t)
	ctx := t.Context()
	repo, _ := newRepo(t, "hostile-summary")
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
	pr, err := repo.CreatePullRequest(ctx, "feature", "main", "Scale")
	if err != nil {
		t.Fatal(err)
	}
	g := statusClient(t)
	hostile := map[string]string{
		"flux/local/kustomization/apps/link":    "failed: [click to fix](https://evil.example/phish) <https://evil.example/auto> https://evil.example/bare",
		"flux/local/kustomization/apps/image":   "![pixel](https://evil.example/track.png)",
		"flux/local/kustomization/apps/html":    `<img src=x onerror=alert(1)><a href="https://evil.example">x</a><script>alert(1)</script>`,
		"flux/local/kustomization/apps/mention": "@" + giteaSrv.AdminUser + " see #1 and !1 " + sha,
		"flux/local/kustomization/apps/table":   "a | b | c\n| --- |\n# heading",
		"flux/local/kustomization/apps/bidi":    "access \u202edeineD\u202c ok\u200b\ufeff\x1b[31m",
		"flux/local/kustomization/apps/ticks":   "``` fenced ```` `code` ``",
	}
	for c, desc := range hostile {
		if err := g.PostStatus(ctx, report.CommitStatus{Repository: repo.FullName, SHA: sha, Context: c,
			Status: api.Status{State: api.StateFailure, Description: desc}}); err != nil {
			t.Fatal(err)
		}
	}
	// A context someone else posted, with Markdown of its own.
	if err := g.PostStatus(ctx, report.CommitStatus{Repository: repo.FullName, SHA: sha, Context: "flux/x`](https://evil.example)",
		Status: api.Status{State: api.StateSuccess, Description: "ok"}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range statusesOf(t, repo, sha) {
		for _, r := range s.Description {
			if r < ' ' || r == 0x7f || r == '\u202e' || r == '\u202c' || r == '\u200b' || r == '\ufeff' {
				t.Fatalf("status %s keeps %U: %q", s.Context, r, s.Description)
			}
		}
	}
	if err := g.FinalPosted(ctx, repo.FullName, sha); err != nil {
		t.Fatal(err)
	}
	cs, err := repo.IssueComments(ctx, pr.Index)
	if err != nil || len(cs) != 1 {
		t.Fatalf("comments: %d, %v", len(cs), err)
	}
	html := renderMarkdown(t, repo.FullName, cs[0].Body)
	for _, bad := range []string{"<a ", "<img", "<script", "evil.example/track.png\"", "<h1", "<table><thead><tr><th>a"} {
		if strings.Contains(html, bad) {
			t.Fatalf("the rendered summary holds %q:\n%s\n\nfrom:\n%s", bad, html, cs[0].Body)
		}
	}
	if n := strings.Count(html, "<tr>"); n != len(hostile)+2 { // the header, and one row per status
		t.Fatalf("%d table rows, want %d:\n%s", n, len(hostile)+2, html)
	}
	for _, want := range []string{"[click to fix](https://evil.example/phish)", "@" + giteaSrv.AdminUser + " see #1", "access deineD ok"} {
		if !strings.Contains(html, want) {
			t.Fatalf("the rendered summary lacks the text %q:\n%s", want, html)
		}
	}
}

// statusesOf lists a commit's statuses.
func statusesOf(t *testing.T, repo *testenv.Repo, sha string) []*sdk.Status {
	t.Helper()
	c, err := giteaSrv.Client(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	owner, name, _ := strings.Cut(repo.FullName, "/")
	list, _, err := c.ListStatuses(owner, name, sha, sdk.ListStatusesOption{})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// renderMarkdown renders a comment body as the real Gitea shows it in the repository.
func renderMarkdown(t *testing.T, repository, body string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"Text": body, "Mode": "comment", "Context": repository})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, giteaSrv.URL+"/api/v1/markdown", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "token "+giteaSrv.Token)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	html, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("render: %d %s", resp.StatusCode, html)
	}
	return string(html)
}

// setToken gives g an API token, or takes it away ("").
func setToken(t *testing.T, g *gitea.Gitea, tok string) {
	t.Helper()
	if err := g.Keys.Set(credentials.GiteaToken, tok); err != nil {
		t.Fatal(err)
	}
}

type nopRequester struct{ pushes []gitops.Push }

func (r *nopRequester) Accept(_ context.Context, p gitops.Push) (gitops.Result, error) {
	r.pushes = append(r.pushes, p)
	return gitops.Result{}, nil
}

// What a push claims, asked of a real Gitea: its repository and URLs, where its reference
// is (a branch, a lightweight tag, an annotated tag), and whether a commit exists; and the
// intake's verdicts on true, stale and forged claims.
func TestGiteaAnswersClaims(t *testing.T) {
	integration(t)
	ctx := t.Context()
	repo, first := newRepo(t, "claims")
	if err := repo.WriteFile("b.txt", "b\n"); err != nil {
		t.Fatal(err)
	}
	second, err := repo.Commit(ctx, "second")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, "v1"); err != nil {
		t.Fatal(err)
	}
	tagObject, err := repo.AnnotatedTag(ctx, "v2", "release v2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"v1", "v2"} {
		if err := repo.PushTag(ctx, tag); err != nil {
			t.Fatal(err)
		}
	}
	g := statusClient(t)
	info, err := g.Repository(ctx, strings.ToUpper(repo.FullName))
	if err != nil || info.FullName != repo.FullName || len(info.URLs) != 3 || info.DefaultBranch != "main" {
		t.Fatalf("repository: %+v %v", info, err)
	}
	for ref, want := range map[string][]string{
		"refs/heads/main": {second},
		"refs/tags/v1":    {second},
		"refs/tags/v2":    {tagObject, second},
	} {
		got, err := g.RefCommits(ctx, repo.FullName, ref)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: %v %v, want %v", ref, got, err, want)
		}
	}
	for _, ref := range []string{"refs/heads/nope", "refs/tags/nope", "refs/notes/nope", "refs/heads/mai"} {
		if _, err := g.RefCommits(ctx, repo.FullName, ref); !errors.Is(err, webhook.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", ref, err)
		}
	}
	forged := strings.Repeat("f", 40)
	// A commit that exists, on another branch only.
	if err := repo.Branch(ctx, "side"); err != nil {
		t.Fatal(err)
	}
	if err := repo.WriteFile("side.txt", "side\n"); err != nil {
		t.Fatal(err)
	}
	other, err := repo.Commit(ctx, "side")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx, "side"); err != nil {
		t.Fatal(err)
	}
	if recent, err := g.RecentCommits(ctx, repo.FullName, "refs/heads/main", 50); err != nil || !slices.Equal(recent, []string{second, first}) {
		t.Fatalf("recent commits of main: %v %v", recent, err)
	}
	for sha, want := range map[string]bool{first: true, second: true, forged: false} {
		if got, err := g.CommitExists(ctx, repo.FullName, sha); err != nil || got != want {
			t.Errorf("commit %s: %v %v, want %v", sha, got, err, want)
		}
	}
	if _, err := g.Repository(ctx, "gitea-admin/no-such-repository"); !errors.Is(err, webhook.ErrNotFound) {
		t.Fatalf("missing repository: %v", err)
	}

	req := &nopRequester{}
	in := &webhook.Intake{Forge: g, Requester: req}
	claim := func(ref, sha string) gitops.Push {
		return gitops.Push{Repository: strings.ToUpper(repo.FullName), URLs: info.URLs, Ref: ref, SHA: sha}
	}
	webhookSig := credentials.Principal{Kind: credentials.Webhook}
	for _, tc := range []struct {
		name    string
		push    gitops.Push
		want    error
		ignored bool
	}{
		{"the branch's head", claim("refs/heads/main", second), nil, false},
		{"an annotated tag", claim("refs/tags/v2", tagObject), nil, false},
		{"a commit the branch moved on from", claim("refs/heads/main", first), nil, false},
		{"a forged commit", claim("refs/heads/main", forged), webhook.ErrContradicted, false},
		{"a commit of another branch's history only", claim("refs/heads/main", other), webhook.ErrContradicted, false},
		{"a forged branch", claim("refs/heads/forged", forged), webhook.ErrContradicted, false},
		{"another repository's name with this one's URLs", gitops.Push{Repository: "gitea-admin/statuses", URLs: info.URLs, Ref: "refs/heads/main", SHA: second}, webhook.ErrBadPayload, false},
	} {
		acc, err := in.Accept(ctx, webhookSig, tc.push)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) || (acc.Ignored != "") != tc.ignored {
			t.Errorf("%s: %+v %v", tc.name, acc, err)
		}
	}
	if len(req.pushes) != 3 || req.pushes[0].Repository != repo.FullName || req.pushes[0].Head != "" || req.pushes[2].Head != second {
		t.Fatalf("requested %+v, want the three true claims, as Gitea spells the repository, the stale one with its head", req.pushes)
	}
}
