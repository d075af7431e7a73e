package gitea

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"

	sdk "code.gitea.io/sdk/gitea"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook"
)

var (
	_ report.StatusPoster   = (*Gitea)(nil)
	_ report.StatusLookup   = (*Gitea)(nil)
	_ report.ResultNotifier = (*Gitea)(nil)
)

const (
	// maxDescription: Gitea stores descriptions as text, but its UI and GitHub-compatible
	// clients show a line; long Flux messages are cut here.
	maxDescription = 255
	// statusPageSize is the page size used to read a commit's statuses (Gitea caps pages
	// at its MAX_RESPONSE_ITEMS, 50 by default).
	statusPageSize = 50
)

// ErrNoToken: the Gitea API token Secret has no token yet.
var ErrNoToken = errors.New("no gitea api token")

// Gitea posts commit statuses and pull request comments through Gitea's API.
type Gitea struct {
	// URL is Gitea's base URL, e.g. https://gitea.example.com.
	URL string
	// HTTP is the client for every call; its timeout bounds each one.
	HTTP *http.Client
	// Keys holds flux-webhook's Gitea API token (credentials.GiteaToken).
	Keys *credentials.Keyring
	// TargetURL is the link each status carries; nil: Gitea's page of the commit
	// (DefaultTargetURL).
	TargetURL *TargetURL

	summaries sync.Mutex // serialises pull request summaries: one comment per pull request
	registry  registry   // reads of the registry: bounded, cached by digest

	meMu    sync.Mutex
	me      int64    // the bot's user id, for meToken
	login   string   // the bot's login, for meToken
	meToken [32]byte // digest of the token me was asked with
}

// botID returns the id of the user flux-webhook's token belongs to: only that user's
// comments are flux-webhook's (anyone in a pull request can write the summary's marker).
func (g *Gitea) botID(ctx context.Context) (int64, error) {
	id, _, err := g.bot(ctx)
	return id, err
}

// bot returns the id and login of the user flux-webhook's token belongs to, asked once per
// token.
func (g *Gitea) bot(ctx context.Context) (int64, string, error) {
	tok := sha256.Sum256([]byte(g.token()))
	g.meMu.Lock()
	defer g.meMu.Unlock()
	if g.me != 0 && g.meToken == tok {
		return g.me, g.login, nil
	}
	c, err := g.client(ctx)
	if err != nil {
		return 0, "", err
	}
	u, resp, err := c.GetMyUserInfo()
	if err := apiError("get own user", resp, err); err != nil {
		return 0, "", err
	}
	g.me, g.login, g.meToken = u.ID, u.UserName, tok
	return u.ID, u.UserName, nil
}

// token returns the current API token, "" when there is none.
func (g *Gitea) token() string { return string(g.Keys.Current(credentials.GiteaToken)) }

// client returns an SDK client bound to ctx. It is cheap: no call is made (the version
// check is skipped; flux-webhook uses only long-standing endpoints).
func (g *Gitea) client(ctx context.Context) (*sdk.Client, error) {
	tok := g.token()
	if tok == "" {
		return nil, ErrNoToken
	}
	return sdk.NewClient(g.URL, sdk.SetToken(tok), sdk.SetHTTPClient(g.HTTP),
		sdk.SetContext(ctx), sdk.SetGiteaVersion(""))
}

// PostStatus creates a commit status, linked to TargetURL.
func (g *Gitea) PostStatus(ctx context.Context, s report.CommitStatus) error {
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	target := g.TargetURL
	if target == nil {
		target = &TargetURL{template: DefaultTargetURL(g.URL)}
	}
	owner, repo, _ := strings.Cut(s.Repository, "/")
	_, resp, err := c.CreateStatus(owner, repo, s.SHA, sdk.CreateStatusOption{
		State:       sdk.StatusState(s.State),
		TargetURL:   target.Expand(s.Target, s.Repository, s.SHA),
		Context:     s.Context,
		Description: webhook.Clip(observe.PlainText(s.Description), maxDescription),
	})
	return apiError("create status", resp, err)
}

// LatestStatus returns the newest status of sha under context, nil if there is none.
func (g *Gitea) LatestStatus(ctx context.Context, repository, sha, context string) (*api.Status, error) {
	latest, err := g.latestStatuses(ctx, repository, sha)
	if err != nil {
		return nil, err
	}
	if s, ok := latest[context]; ok {
		return &api.Status{State: string(s.State), Description: s.Description}, nil
	}
	return nil, nil
}

// latestStatuses returns the newest status per context of a commit.
func (g *Gitea) latestStatuses(ctx context.Context, repository, sha string) (map[string]*sdk.Status, error) {
	c, err := g.client(ctx)
	if err != nil {
		return nil, err
	}
	owner, repo, _ := strings.Cut(repository, "/")
	latest := map[string]*sdk.Status{}
	for page := 1; ; page++ {
		list, resp, err := c.ListStatuses(owner, repo, sha, sdk.ListStatusesOption{
			ListOptions: sdk.ListOptions{Page: page, PageSize: statusPageSize},
		})
		if err := apiError("list statuses", resp, err); err != nil {
			return nil, err
		}
		for _, s := range list {
			if cur, ok := latest[s.Context]; !ok || s.ID > cur.ID {
				latest[s.Context] = s
			}
		}
		if len(list) < statusPageSize {
			return latest, nil
		}
	}
}

// summaryMarker opens flux-webhook's summary comment on a pull request. Earlier versions
// wrote one comment per commit, "<!-- flux-webhook summary <commit> -->": summaryPrefix finds
// those too.
const (
	summaryMarker = "<!-- flux-webhook summary -->"
	summaryPrefix = "<!-- flux-webhook summary"
)

// FinalPosted summarises a commit's flux statuses in one comment on the pull request the
// commit belongs to, once none of them is pending any more: the pull request's one summary
// comment, written by flux-webhook's own user, edited in place as later commits land
// (created when there is none). Gitea has no API to comment on a commit itself; a commit
// outside any pull request keeps its statuses only. Only the head of an open pull request,
// or the commit that merged one, is summarised, so an older commit finishing late does not
// overwrite a newer one's summary.
func (g *Gitea) FinalPosted(ctx context.Context, repository, sha string) error {
	// One summary at a time (the leader alone reports): no two comments for one pull request.
	g.summaries.Lock()
	defer g.summaries.Unlock()
	latest, err := g.latestStatuses(ctx, repository, sha)
	if err != nil {
		return err
	}
	var flux []*sdk.Status
	for ctxName, s := range latest {
		if !strings.HasPrefix(ctxName, api.ContextPrefix) {
			continue
		}
		if s.State == sdk.StatusPending {
			return nil // another target still waits for Flux
		}
		flux = append(flux, s)
	}
	pr, err := g.pullRequestOf(ctx, repository, sha)
	if err != nil || pr == 0 {
		return err
	}
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	owner, repo, _ := strings.Cut(repository, "/")
	bot, err := g.botID(ctx)
	if err != nil {
		return err
	}
	body := summary(summaryMarker, sha, flux)
	var own *sdk.Comment // the bot's first summary comment
	for page := 1; own == nil; page++ {
		comments, resp, err := c.ListIssueComments(owner, repo, pr, sdk.ListIssueCommentOptions{
			ListOptions: sdk.ListOptions{Page: page, PageSize: statusPageSize},
		})
		if err := apiError("list comments", resp, err); err != nil {
			return err
		}
		for _, cm := range comments {
			// Only the bot's own: anyone in a pull request can write the marker.
			if cm.Poster != nil && cm.Poster.ID == bot && strings.HasPrefix(cm.Body, summaryPrefix) {
				own = cm
				break
			}
		}
		if len(comments) < statusPageSize {
			break
		}
	}
	switch {
	case own == nil:
		_, resp, err := c.CreateIssueComment(owner, repo, pr, sdk.CreateIssueCommentOption{Body: body})
		return apiError("create comment", resp, err)
	case strings.TrimSpace(own.Body) == strings.TrimSpace(body):
		return nil // summarised already
	}
	_, resp, err := c.EditIssueComment(owner, repo, own.ID, sdk.EditIssueCommentOption{Body: body})
	return apiError("edit comment", resp, err)
}

// maxPullPages bounds the search for the open pull request of a commit: repositories with
// more than maxPullPages*statusPageSize open pull requests get no summary comment.
const maxPullPages = 4

// pullRequestOf returns the index of the pull request sha belongs to, 0 if none: an open
// pull request whose head is sha, else the pull request sha was merged by (Gitea's
// GET /repos/{owner}/{repo}/commits/{sha}/pull knows merged ones only; the SDK lacks it).
func (g *Gitea) pullRequestOf(ctx context.Context, repository, sha string) (int64, error) {
	c, err := g.client(ctx)
	if err != nil {
		return 0, err
	}
	owner, repo, _ := strings.Cut(repository, "/")
	for page := 1; page <= maxPullPages; page++ {
		prs, resp, err := c.ListRepoPullRequests(owner, repo, sdk.ListPullRequestsOptions{
			ListOptions: sdk.ListOptions{Page: page, PageSize: statusPageSize},
			State:       sdk.StateOpen,
		})
		if err := apiError("list pull requests", resp, err); err != nil {
			return 0, err
		}
		for _, pr := range prs {
			if pr.Head != nil && pr.Head.Sha == sha {
				return pr.Index, nil
			}
		}
		if len(prs) < statusPageSize {
			break
		}
	}
	tok := g.token()
	u := fmt.Sprintf("%s/api/v1/repos/%s/%s/commits/%s/pull", strings.TrimSuffix(g.URL, "/"),
		url.PathEscape(owner), url.PathEscape(repo), url.PathEscape(sha))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "token "+tok)
	req.Header.Set("Accept", "application/json")
	resp, err := g.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("get merged pull request: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return 0, nil
	case resp.StatusCode != http.StatusOK:
		return 0, &StatusError{Op: "get merged pull request", Code: resp.StatusCode}
	}
	var pr struct {
		Index int64 `json:"number"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&pr); err != nil {
		return 0, fmt.Errorf("get merged pull request: %w", err)
	}
	return pr.Index, nil
}

// summary renders the pull request comment.
func summary(marker, sha string, statuses []*sdk.Status) string {
	sort.Slice(statuses, func(i, j int) bool { return statuses[i].Context < statuses[j].Context })
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n**Flux** finished with commit `%s`:\n\n| | Flux object | Result |\n|---|---|---|\n", marker, sha)
	for _, s := range statuses {
		// Contexts and descriptions as Gitea keeps them: anyone who may post a status there
		// wrote them, and Flux's messages are a tenant's. Code spans only.
		fmt.Fprintf(&b, "| %s | %s | %s |\n", stateIcon(string(s.State)),
			observe.MarkdownCode(strings.TrimPrefix(s.Context, api.ContextPrefix)), observe.MarkdownCode(s.Description))
	}
	return b.String()
}

func stateIcon(state string) string {
	switch state {
	case api.StateSuccess:
		return "✅"
	case api.StateWarning:
		return "⚠️"
	}
	return "❌"
}

// StatusError is a Gitea API answer other than success.
type StatusError struct {
	Op   string
	Code int
}

func (e *StatusError) Error() string { return fmt.Sprintf("%s: gitea answered %d", e.Op, e.Code) }

// Permanent reports whether retrying cannot help: Gitea refused the request itself (4xx,
// e.g. the repository or commit is gone), rather than failing to serve it.
func (e *StatusError) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusTooManyRequests && e.Code != http.StatusRequestTimeout
}

// apiError turns an SDK result into an error carrying Gitea's status code.
func apiError(op string, resp *sdk.Response, err error) error {
	if resp != nil && resp.Response != nil && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		return &StatusError{Op: op, Code: resp.StatusCode}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// notFound maps Gitea's 404 to webhook.ErrNotFound.
func notFound(op string, resp *sdk.Response, err error) error {
	if resp != nil && resp.Response != nil && resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w", op, webhook.ErrNotFound)
	}
	return apiError(op, resp, err)
}

// Repository returns what Gitea says of the repository fullName ("owner/name").
func (g *Gitea) Repository(ctx context.Context, fullName string) (*webhook.Repository, error) {
	c, err := g.client(ctx)
	if err != nil {
		return nil, err
	}
	owner, name, _ := strings.Cut(fullName, "/")
	r, resp, err := c.GetRepo(owner, name)
	if err := notFound("get repository", resp, err); err != nil {
		return nil, err
	}
	info := &webhook.Repository{FullName: r.FullName, DefaultBranch: r.DefaultBranch,
		Public: !r.Private && !r.Internal && r.Owner != nil && r.Owner.Visibility == sdk.VisibleTypePublic}
	for _, u := range []string{r.CloneURL, r.SSHURL, r.HTMLURL} {
		if u != "" {
			info.URLs = append(info.URLs, u)
		}
	}
	return info, nil
}

// RefCommits returns the objects a full reference points at in fullName: the commit of a
// branch; of a tag, the commit and, for an annotated tag, the tag object too (pushes report
// either, depending on the sender). webhook.ErrNotFound when the reference does not exist.
func (g *Gitea) RefCommits(ctx context.Context, fullName, ref string) ([]string, error) {
	c, err := g.client(ctx)
	if err != nil {
		return nil, err
	}
	owner, name, _ := strings.Cut(fullName, "/")
	if branch, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		b, resp, err := c.GetRepoBranch(owner, name, branch)
		if err := notFound("get branch", resp, err); err != nil {
			return nil, err
		}
		if b.Commit == nil {
			return nil, fmt.Errorf("get branch: %w", webhook.ErrNotFound)
		}
		return []string{b.Commit.ID}, nil
	}
	if tag, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		t, resp, err := c.GetTag(owner, name, tag)
		if err := notFound("get tag", resp, err); err != nil {
			return nil, err
		}
		out := []string{t.ID}
		if t.Commit != nil && t.Commit.SHA != t.ID {
			out = append(out, t.Commit.SHA)
		}
		return out, nil
	}
	r, resp, err := c.GetRepoRef(owner, name, ref)
	switch {
	case resp != nil && resp.Response != nil && resp.StatusCode == http.StatusOK && err != nil:
		return nil, fmt.Errorf("get ref: %w", webhook.ErrNotFound) // only partial matches
	case err != nil || (resp != nil && resp.Response != nil && resp.StatusCode != http.StatusOK):
		return nil, notFound("get ref", resp, err)
	case r.Object == nil:
		return nil, fmt.Errorf("get ref: %w", webhook.ErrNotFound)
	}
	return []string{r.Object.SHA}, nil
}

// CommitExists reports whether fullName has the commit sha.
func (g *Gitea) CommitExists(ctx context.Context, fullName, sha string) (bool, error) {
	c, err := g.client(ctx)
	if err != nil {
		return false, err
	}
	owner, name, _ := strings.Cut(fullName, "/")
	_, resp, err := c.GetSingleCommit(owner, name, sha)
	switch err := notFound("get commit", resp, err); {
	case errors.Is(err, webhook.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// RecentCommits returns the ids of the last n commits of a reference's history, newest
// first (n at most statusPageSize: one page).
func (g *Gitea) RecentCommits(ctx context.Context, fullName, ref string, n int) ([]string, error) {
	c, err := g.client(ctx)
	if err != nil {
		return nil, err
	}
	owner, name, _ := strings.Cut(fullName, "/")
	list, resp, err := c.ListRepoCommits(owner, name, sdk.ListCommitOptions{
		ListOptions: sdk.ListOptions{Page: 1, PageSize: min(n, statusPageSize)}, SHA: ref,
	})
	if err := notFound("list commits", resp, err); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(list))
	for _, c := range list {
		if c.CommitMeta != nil {
			out = append(out, c.SHA)
		}
	}
	return out, nil
}
