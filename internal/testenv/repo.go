package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"code.gitea.io/sdk/gitea"
)

// Repo is a repository on a Gitea plus a local work tree to commit and push from.
type Repo struct {
	Owner    string
	Name     string
	FullName string // owner/name
	CloneURL string // as Gitea reports it: http://127.0.0.1:PORT/owner/name.git, no credentials
	Dir      string // the local work tree

	g *Gitea
}

// CreateRepo creates an empty private repository of the admin user (default branch main,
// not initialised) and a local work tree for it in Gitea's Dir/work/<name>.
func (g *Gitea) CreateRepo(ctx context.Context, name string) (*Repo, error) {
	c, err := g.Client(ctx)
	if err != nil {
		return nil, fmt.Errorf("create repo: %w", err)
	}
	gr, _, err := c.CreateRepo(gitea.CreateRepoOption{Name: name, Private: true, DefaultBranch: "main"})
	if err != nil {
		return nil, fmt.Errorf("create repo %s: %w", name, err)
	}
	r := &Repo{
		Owner:    gr.Owner.UserName,
		Name:     gr.Name,
		FullName: gr.FullName,
		CloneURL: gr.CloneURL,
		Dir:      filepath.Join(g.Dir, "work", gr.Name),
		g:        g,
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create repo %s: %w", name, err)
	}
	if _, err := r.git(ctx, "init", "-q", "-b", "main"); err != nil {
		return nil, fmt.Errorf("create repo %s: %w", name, err)
	}
	return r, nil
}

// WriteFile writes content to path (slash-separated, relative to the work tree), creating
// directories as needed.
func (r *Repo) WriteFile(path, content string) error {
	p := filepath.Join(r.Dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Remove deletes path (a file or a directory) from the work tree.
func (r *Repo) Remove(path string) error {
	if err := os.RemoveAll(filepath.Join(r.Dir, filepath.FromSlash(path))); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Commit stages every change in the work tree and commits it (an empty commit when nothing
// changed), returning the new commit's SHA.
func (r *Repo) Commit(ctx context.Context, msg string) (string, error) {
	if _, err := r.git(ctx, "add", "-A"); err != nil {
		return "", err
	}
	if _, err := r.git(ctx, "commit", "-q", "--allow-empty", "-m", msg); err != nil {
		return "", err
	}
	return r.Head(ctx)
}

// Head returns the SHA of the checked-out commit.
func (r *Repo) Head(ctx context.Context) (string, error) {
	out, err := r.git(ctx, "rev-parse", "HEAD")
	return strings.TrimSpace(out), err
}

// Branch creates the branch name at the checked-out commit (or resets it there) and checks
// it out.
func (r *Repo) Branch(ctx context.Context, name string) error {
	_, err := r.git(ctx, "checkout", "-q", "-B", name)
	return err
}

// Checkout checks out an existing local branch, tag or commit.
func (r *Repo) Checkout(ctx context.Context, ref string) error {
	_, err := r.git(ctx, "checkout", "-q", ref)
	return err
}

// Tag creates the lightweight tag name at the checked-out commit.
func (r *Repo) Tag(ctx context.Context, name string) error {
	_, err := r.git(ctx, "tag", name)
	return err
}

// AnnotatedTag creates the annotated tag name at the checked-out commit and returns the
// tag object's id.
func (r *Repo) AnnotatedTag(ctx context.Context, name, message string) (string, error) {
	if _, err := r.git(ctx, "tag", "-a", "-m", message, name); err != nil {
		return "", err
	}
	out, err := r.git(ctx, "rev-parse", "refs/tags/"+name)
	return strings.TrimSpace(out), err
}

// PushTag pushes the tag name.
func (r *Repo) PushTag(ctx context.Context, name string) error {
	return r.Push(ctx, "refs/tags/"+name)
}

// Push pushes the refspecs (default: the checked-out branch) to Gitea over HTTP as the
// admin user; add a leading + to force. After a push into an empty repository it waits
// until Gitea no longer reports it empty (about 2 s), because until then some API calls fail.
func (r *Repo) Push(ctx context.Context, refspec ...string) error {
	if len(refspec) == 0 {
		out, err := r.git(ctx, "symbolic-ref", "--short", "HEAD")
		if err != nil {
			return err
		}
		refspec = []string{strings.TrimSpace(out)}
	}
	u, err := url.Parse(r.CloneURL)
	if err != nil {
		return fmt.Errorf("git push: %w", err)
	}
	u.User = url.UserPassword(r.g.AdminUser, r.g.Token)
	if _, err := r.git(ctx, append([]string{"push", "-q", u.String()}, refspec...)...); err != nil {
		return err
	}
	return r.waitNotEmpty(ctx)
}

// git runs git in the work tree, isolated from the user's and the system's configuration.
// Errors carry git's output with the token and password redacted, never the command line.
func (r *Repo) git(ctx context.Context, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = r.Dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull, "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=testenv", "GIT_AUTHOR_EMAIL=testenv@example.invalid",
		"GIT_COMMITTER_NAME=testenv", "GIT_COMMITTER_EMAIL=testenv@example.invalid",
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s in %s: %w: %s", args[0], r.FullName, err, r.redact(strings.TrimSpace(out.String())))
	}
	return out.String(), nil
}

func (r *Repo) redact(s string) string {
	for _, secret := range []string{r.g.Token, r.g.AdminPassword} {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "***")
		}
	}
	return s
}

// waitNotEmpty polls the repository until Gitea reports it non-empty.
func (r *Repo) waitNotEmpty(ctx context.Context) error {
	c, err := r.g.Client(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c.SetContext(ctx)
	for {
		gr, _, err := c.GetRepo(r.Owner, r.Name)
		if err == nil && !gr.Empty {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to be non-empty after push: %w (last error: %v)", r.FullName, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Info returns the repository as Gitea reports it.
func (r *Repo) Info(ctx context.Context) (*gitea.Repository, error) {
	c, err := r.g.Client(ctx)
	if err != nil {
		return nil, err
	}
	gr, _, err := c.GetRepo(r.Owner, r.Name)
	if err != nil {
		return nil, fmt.Errorf("get repo %s: %w", r.FullName, err)
	}
	return gr, nil
}

// AddCollaborator gives user write access to the repository.
func (r *Repo) AddCollaborator(ctx context.Context, user string) error {
	c, err := r.g.Client(ctx)
	if err != nil {
		return err
	}
	owner, name, _ := strings.Cut(r.FullName, "/")
	write := gitea.AccessModeWrite
	if _, err := c.AddCollaborator(owner, name, user, gitea.AddCollaboratorOption{Permission: &write}); err != nil {
		return fmt.Errorf("add collaborator %s: %w", user, err)
	}
	return nil
}

// AddWebhook adds a native Gitea webhook (JSON payload) that posts the events (default
// "push") to targetURL, signed with secret, with a fixed Authorization header when
// authorizationHeader is not empty. Gitea delivers asynchronously with a 5 s timeout.
func (r *Repo) AddWebhook(ctx context.Context, targetURL, secret, authorizationHeader string, events ...string) (*gitea.Hook, error) {
	return r.AddHook(ctx, Hook{URL: targetURL, Secret: secret, Authorization: authorizationHeader, Events: events})
}

// Hook configures a native Gitea repository webhook.
type Hook struct {
	URL           string
	Secret        string   // HMAC key of X-Gitea-Signature / X-Hub-Signature-256
	Authorization string   // sent verbatim as the Authorization header
	ContentType   string   // "json" (default) or "form"
	Events        []string // default: push
}

// AddHook adds a native webhook to the repository.
func (r *Repo) AddHook(ctx context.Context, h Hook) (*gitea.Hook, error) {
	if len(h.Events) == 0 {
		h.Events = []string{"push"}
	}
	if h.ContentType == "" {
		h.ContentType = "json"
	}
	c, err := r.g.Client(ctx)
	if err != nil {
		return nil, err
	}
	hook, _, err := c.CreateRepoHook(r.Owner, r.Name, gitea.CreateHookOption{
		Type:                gitea.HookTypeGitea,
		Config:              map[string]string{"url": h.URL, "content_type": h.ContentType, "secret": h.Secret},
		Events:              h.Events,
		Active:              true,
		AuthorizationHeader: h.Authorization,
	})
	if err != nil {
		return nil, fmt.Errorf("add webhook to %s: %w", r.FullName, err)
	}
	return hook, nil
}

// SetActionSecret creates or updates the Actions secret name, which workflows read as
// ${{ secrets.NAME }}.
func (r *Repo) SetActionSecret(ctx context.Context, name, value string) error {
	c, err := r.g.Client(ctx)
	if err != nil {
		return err
	}
	if _, err := c.CreateRepoActionSecret(r.Owner, r.Name, name, gitea.CreateOrUpdateSecretOption{Data: value}); err != nil {
		return fmt.Errorf("set actions secret %s on %s: %w", name, r.FullName, err)
	}
	return nil
}

// CreatePullRequest opens a pull request from branch head into base; head must be pushed.
func (r *Repo) CreatePullRequest(ctx context.Context, head, base, title string) (*gitea.PullRequest, error) {
	c, err := r.g.Client(ctx)
	if err != nil {
		return nil, err
	}
	pr, _, err := c.CreatePullRequest(r.Owner, r.Name, gitea.CreatePullRequestOption{Head: head, Base: base, Title: title})
	if err != nil {
		return nil, fmt.Errorf("create pull request %s→%s on %s: %w", head, base, r.FullName, err)
	}
	return pr, nil
}

// MergePullRequest merges the pull request index with a merge style of Gitea's (merge,
// rebase, rebase-merge, squash), retrying while Gitea still checks whether it can be merged.
// The merge moves the base branch as a push does: Gitea's push webhooks fire.
func (r *Repo) MergePullRequest(ctx context.Context, index int64, style gitea.MergeStyle) error {
	c, err := r.g.Client(ctx)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ok, resp, err := c.MergePullRequest(r.Owner, r.Name, index, gitea.MergePullRequestOption{Style: style,
			Title: fmt.Sprintf("Merge pull request #%d (%s)", index, style)})
		if err == nil && ok {
			return nil
		}
		// 405 while Gitea has not yet found the pull request mergeable.
		if time.Now().After(deadline) || resp != nil && resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusConflict {
			return fmt.Errorf("merge pull request %d of %s (%s): %v", index, r.FullName, style, errOr(err, resp))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func errOr(err error, resp *gitea.Response) any {
	if err != nil {
		return err
	}
	if resp != nil {
		return resp.Status
	}
	return "not merged"
}

// BranchHead returns the commit a branch points at, as Gitea has it.
func (r *Repo) BranchHead(ctx context.Context, branch string) (string, error) {
	c, err := r.g.Client(ctx)
	if err != nil {
		return "", err
	}
	b, _, err := c.GetRepoBranch(r.Owner, r.Name, branch)
	if err != nil {
		return "", fmt.Errorf("branch %s of %s: %w", branch, r.FullName, err)
	}
	if b.Commit == nil {
		return "", fmt.Errorf("branch %s of %s: no commit", branch, r.FullName)
	}
	return b.Commit.ID, nil
}

// CombinedStatus returns the combined commit status of sha (state "" when it has none).
func (r *Repo) CombinedStatus(ctx context.Context, sha string) (*gitea.CombinedStatus, error) {
	c, err := r.g.Client(ctx)
	if err != nil {
		return nil, err
	}
	cs, _, err := c.GetCombinedStatus(r.Owner, r.Name, sha)
	if err != nil {
		return nil, fmt.Errorf("combined status of %s@%s: %w", r.FullName, sha, err)
	}
	return cs, nil
}

// Statuses returns every commit status posted for sha, newest first.
func (r *Repo) Statuses(ctx context.Context, sha string) ([]*gitea.Status, error) {
	c, err := r.g.Client(ctx)
	if err != nil {
		return nil, err
	}
	var all []*gitea.Status
	for page := 1; ; page++ {
		st, _, err := c.ListStatuses(r.Owner, r.Name, sha, gitea.ListStatusesOption{ListOptions: gitea.ListOptions{Page: page, PageSize: 50}})
		if err != nil {
			return nil, fmt.Errorf("statuses of %s@%s: %w", r.FullName, sha, err)
		}
		all = append(all, st...)
		if len(st) < 50 {
			return all, nil
		}
	}
}

// IssueComments returns the comments of the issue or pull request index, oldest first.
func (r *Repo) IssueComments(ctx context.Context, index int64) ([]*gitea.Comment, error) {
	c, err := r.g.Client(ctx)
	if err != nil {
		return nil, err
	}
	cs, _, err := c.ListIssueComments(r.Owner, r.Name, index, gitea.ListIssueCommentOptions{})
	if err != nil {
		return nil, fmt.Errorf("comments of %s#%d: %w", r.FullName, index, err)
	}
	return cs, nil
}

// SetActionVariable sets a repository Actions variable, read by workflows as
// ${{ vars.NAME }}.
func (r *Repo) SetActionVariable(ctx context.Context, name, value string) error {
	c, err := r.g.Client(ctx)
	if err != nil {
		return err
	}
	if _, err := c.CreateRepoActionVariable(r.Owner, r.Name, name, value); err != nil {
		return fmt.Errorf("set actions variable %s on %s: %w", name, r.FullName, err)
	}
	return nil
}
