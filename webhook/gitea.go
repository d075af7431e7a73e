package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"code.gitea.io/sdk/gitea"

	"github.com/openova-io/flux-webhook/gitops"
)

var (
	_ gitops.StatusPoster   = (*Gitea)(nil)
	_ gitops.StatusLookup   = (*Gitea)(nil)
	_ gitops.ResultNotifier = (*Gitea)(nil)
)

const (
	// maxDescription: Gitea stores descriptions as text, but its UI and GitHub-compatible
	// clients show a line; long Flux messages are cut here.
	maxDescription = 255
	// statusPageSize is the page size used to read a commit's statuses (Gitea caps pages
	// at its MAX_RESPONSE_ITEMS, 50 by default).
	statusPageSize = 50
	// contextPrefix starts every status context flux-webhook posts.
	contextPrefix = "flux/"
)

// ErrNoToken: the Gitea API token Secret has no token yet.
var ErrNoToken = errors.New("no gitea api token")

// Gitea posts commit statuses and pull request comments through Gitea's API.
type Gitea struct {
	// URL is Gitea's base URL, e.g. https://gitea.example.com.
	URL string
	// HTTP is the client for every call; its timeout bounds each one.
	HTTP *http.Client

	mu    sync.RWMutex
	token string

	summaries sync.Mutex // serialises pull request summaries: one comment per commit
}

// SetToken sets the API token (the Secret watcher calls it on rotation).
func (g *Gitea) SetToken(token string) {
	g.mu.Lock()
	g.token = strings.TrimSpace(token)
	g.mu.Unlock()
}

// client returns an SDK client bound to ctx. It is cheap: no call is made (the version
// check is skipped; flux-webhook uses only long-standing endpoints).
func (g *Gitea) client(ctx context.Context) (*gitea.Client, error) {
	g.mu.RLock()
	tok := g.token
	g.mu.RUnlock()
	if tok == "" {
		return nil, ErrNoToken
	}
	return gitea.NewClient(g.URL, gitea.SetToken(tok), gitea.SetHTTPClient(g.HTTP),
		gitea.SetContext(ctx), gitea.SetGiteaVersion(""))
}

// PostStatus creates a commit status.
func (g *Gitea) PostStatus(ctx context.Context, s gitops.CommitStatus) error {
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	owner, repo, _ := strings.Cut(s.Repository, "/")
	_, resp, err := c.CreateStatus(owner, repo, s.SHA, gitea.CreateStatusOption{
		State:       gitea.StatusState(s.State),
		Context:     s.Context,
		Description: truncate(s.Description, maxDescription),
	})
	return apiError("create status", resp, err)
}

// LatestStatus returns the newest status of sha under context, nil if there is none.
func (g *Gitea) LatestStatus(ctx context.Context, repository, sha, context string) (*gitops.Status, error) {
	latest, err := g.latestStatuses(ctx, repository, sha)
	if err != nil {
		return nil, err
	}
	if s, ok := latest[context]; ok {
		return &gitops.Status{State: string(s.State), Description: s.Description}, nil
	}
	return nil, nil
}

// latestStatuses returns the newest status per context of a commit.
func (g *Gitea) latestStatuses(ctx context.Context, repository, sha string) (map[string]*gitea.Status, error) {
	c, err := g.client(ctx)
	if err != nil {
		return nil, err
	}
	owner, repo, _ := strings.Cut(repository, "/")
	latest := map[string]*gitea.Status{}
	for page := 1; ; page++ {
		list, resp, err := c.ListStatuses(owner, repo, sha, gitea.ListStatusesOption{
			ListOptions: gitea.ListOptions{Page: page, PageSize: statusPageSize},
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

// FinalPosted summarises a commit's flux statuses in one comment on the pull request the
// commit belongs to, once none of them is pending any more. Gitea has no API to comment on
// a commit itself; a commit outside any pull request keeps its statuses only.
func (g *Gitea) FinalPosted(ctx context.Context, repository, sha string) error {
	g.summaries.Lock()
	defer g.summaries.Unlock()
	latest, err := g.latestStatuses(ctx, repository, sha)
	if err != nil {
		return err
	}
	var flux []*gitea.Status
	for ctxName, s := range latest {
		if !strings.HasPrefix(ctxName, contextPrefix) {
			continue
		}
		if s.State == gitea.StatusPending {
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
	marker := fmt.Sprintf("<!-- flux-webhook summary %s -->", sha)
	for page := 1; ; page++ {
		comments, resp, err := c.ListIssueComments(owner, repo, pr, gitea.ListIssueCommentOptions{
			ListOptions: gitea.ListOptions{Page: page, PageSize: statusPageSize},
		})
		if err := apiError("list comments", resp, err); err != nil {
			return err
		}
		for _, cm := range comments {
			if strings.Contains(cm.Body, marker) {
				return nil // already summarised
			}
		}
		if len(comments) < statusPageSize {
			break
		}
	}
	_, resp, err := c.CreateIssueComment(owner, repo, pr, gitea.CreateIssueCommentOption{Body: summary(marker, sha, flux)})
	return apiError("create comment", resp, err)
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
		prs, resp, err := c.ListRepoPullRequests(owner, repo, gitea.ListPullRequestsOptions{
			ListOptions: gitea.ListOptions{Page: page, PageSize: statusPageSize},
			State:       gitea.StateOpen,
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
	g.mu.RLock()
	tok := g.token
	g.mu.RUnlock()
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
func summary(marker, sha string, statuses []*gitea.Status) string {
	sort.Slice(statuses, func(i, j int) bool { return statuses[i].Context < statuses[j].Context })
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n**Flux** finished with commit `%s`:\n\n| | Flux object | Result |\n|---|---|---|\n", marker, sha)
	for _, s := range statuses {
		fmt.Fprintf(&b, "| %s | `%s` | %s |\n", stateIcon(string(s.State)), strings.TrimPrefix(s.Context, contextPrefix),
			strings.ReplaceAll(s.Description, "|", "\\|"))
	}
	return b.String()
}

func stateIcon(state string) string {
	switch state {
	case gitops.StateSuccess:
		return "✅"
	case gitops.StateWarning:
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
func apiError(op string, resp *gitea.Response, err error) error {
	if resp != nil && resp.Response != nil && (resp.StatusCode < 200 || resp.StatusCode > 299) {
		return &StatusError{Op: op, Code: resp.StatusCode}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
