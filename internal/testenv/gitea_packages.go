package testenv

// Organisations, owner-level webhooks and the package API of a Gitea, for the OCI tests.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"code.gitea.io/sdk/gitea"
)

// CreateOrg creates an organisation owned by the admin with the given visibility
// (gitea.VisibleTypePublic, Limited or Private). Packages of a private organisation are
// not readable anonymously; those of a public one are.
func (g *Gitea) CreateOrg(ctx context.Context, name string, visibility gitea.VisibleType) error {
	c, err := g.Client(ctx)
	if err != nil {
		return err
	}
	if _, _, err := c.CreateOrg(gitea.CreateOrgOption{Name: name, Visibility: visibility}); err != nil {
		return fmt.Errorf("create org %s: %w", name, err)
	}
	return nil
}

// CreateOrgRepo creates an empty private repository of the organisation org (default
// branch main, not initialised) and a local work tree for it in Gitea's
// Dir/work/<org>/<name>, as CreateRepo does for the admin's repositories.
func (g *Gitea) CreateOrgRepo(ctx context.Context, org, name string) (*Repo, error) {
	c, err := g.Client(ctx)
	if err != nil {
		return nil, fmt.Errorf("create repo: %w", err)
	}
	gr, _, err := c.CreateOrgRepo(org, gitea.CreateRepoOption{Name: name, Private: true, DefaultBranch: "main"})
	if err != nil {
		return nil, fmt.Errorf("create repo %s/%s: %w", org, name, err)
	}
	r := &Repo{
		Owner:    gr.Owner.UserName,
		Name:     gr.Name,
		FullName: gr.FullName,
		CloneURL: gr.CloneURL,
		Dir:      filepath.Join(g.Dir, "work", gr.Owner.UserName, gr.Name),
		g:        g,
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create repo %s: %w", r.FullName, err)
	}
	if _, err := r.git(ctx, "init", "-q", "-b", "main"); err != nil {
		return nil, fmt.Errorf("create repo %s: %w", r.FullName, err)
	}
	return r, nil
}

// AddOrgHook adds a native webhook to the organisation org. An organisation's hooks get
// the events of all its repositories, and its package events (every package of the
// organisation, linked to a repository or not).
func (g *Gitea) AddOrgHook(ctx context.Context, org string, h Hook) (*gitea.Hook, error) {
	if len(h.Events) == 0 {
		h.Events = []string{"push"}
	}
	if h.ContentType == "" {
		h.ContentType = "json"
	}
	c, err := g.Client(ctx)
	if err != nil {
		return nil, err
	}
	hook, _, err := c.CreateOrgHook(org, gitea.CreateHookOption{
		Type:                gitea.HookTypeGitea,
		Config:              map[string]string{"url": h.URL, "content_type": h.ContentType, "secret": h.Secret},
		Events:              h.Events,
		Active:              true,
		AuthorizationHeader: h.Authorization,
	})
	if err != nil {
		return nil, fmt.Errorf("add webhook to org %s: %w", org, err)
	}
	return hook, nil
}

// LinkPackage links the package owner/typ/name (all its versions) to the repository
// owner/repo, through POST /api/v1/packages/{owner}/{type}/{name}/-/link/{repo} (201). The
// repository must belong to the package's owner; a package is linked to one repository
// at most (linking a linked package answers 400). Gitea links no container package by
// itself (only npm packages, from package.json).
func (g *Gitea) LinkPackage(ctx context.Context, owner, typ, name, repo string) error {
	c, err := g.Client(ctx)
	if err != nil {
		return err
	}
	if _, err := c.LinkPackage(owner, typ, name, repo); err != nil {
		return fmt.Errorf("link package %s/%s/%s to %s: %w", owner, typ, name, repo, err)
	}
	return nil
}

// API sends an API request to the Gitea as the admin (its token) and returns the status
// code and body, whatever the status; path starts after /api/v1, e.g. "/packages/o/container/n/latest".
func (g *Gitea) API(ctx context.Context, method, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, g.URL+"/api/v1"+path, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "token "+g.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp.StatusCode, b, nil
}
