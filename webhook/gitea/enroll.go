package gitea

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	sdk "code.gitea.io/sdk/gitea"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook/enroll"
)

var _ enroll.Forge = (*Enrollment)(nil)

// Enrollment writes Actions secrets and variables and organization webhooks through Gitea's
// SDK, with the enrollment token (credentials.EnrollToken): a Gitea user who owns each
// enrolled organization (repository Actions secrets need the owner's access too), its token
// with scopes write:organization (organization secrets, variables and webhooks) and
// write:repository (repository secrets and variables). flux-webhook's own Gitea token,
// which posts statuses, needs neither.
type Enrollment struct {
	// URL is Gitea's base URL.
	URL string
	// HTTP is the client for every call; its timeout bounds each one.
	HTTP *http.Client
	// Keys holds the enrollment token.
	Keys interface {
		Current(p credentials.Purpose) []byte
	}
}

// client returns an SDK client bound to ctx (no call is made).
func (g *Enrollment) client(ctx context.Context) (*sdk.Client, error) {
	tok := g.Keys.Current(credentials.EnrollToken)
	if tok == nil {
		return nil, fmt.Errorf("%w: the enrollment token Secret has none", ErrNoToken)
	}
	return sdk.NewClient(g.URL, sdk.SetToken(string(tok)), sdk.SetHTTPClient(g.HTTP),
		sdk.SetContext(ctx), sdk.SetGiteaVersion(""))
}

// enrollError maps Gitea's 404 to enroll.ErrNotFound (no such organization or repository,
// or not one the token's user may administer), and says which scope a 403 is about.
func enrollError(op string, s string, resp *sdk.Response, err error) error {
	if resp != nil && resp.Response != nil {
		switch resp.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%s: gitea answered 404 for %s: %w", op, s, enroll.ErrNotFound)
		case http.StatusForbidden:
			return fmt.Errorf("%w for %s (the enrollment token's user must own it; the token needs scopes write:organization and write:repository)",
				&StatusError{Op: op, Code: resp.StatusCode}, s)
		}
	}
	return apiError(op, resp, err)
}

// where names a scope for errors: "organization acme", "repository acme/app".
func where(s credentials.Scope) string { return enroll.Level(s) + " " + s.Name }

// PutSecret creates or replaces the Actions secret name of s.
func (g *Enrollment) PutSecret(ctx context.Context, s credentials.Scope, name, value string) error {
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	opt := sdk.CreateOrUpdateSecretOption{Data: value, Description: "flux-webhook's /hook token for this " + enroll.Level(s) + " (written by flux-webhook's enrollment)"}
	var resp *sdk.Response
	if s.Kind == credentials.ScopeOrganization {
		resp, err = c.CreateOrgActionSecret(s.Name, name, opt)
	} else {
		owner, repo, _ := strings.Cut(s.Name, "/")
		resp, err = c.CreateRepoActionSecret(owner, repo, name, opt)
	}
	return enrollError("put secret", where(s), resp, err)
}

// HasSecret reports whether s has the Actions secret name (Gitea stores names upper-case).
func (g *Enrollment) HasSecret(ctx context.Context, s credentials.Scope, name string) (bool, error) {
	c, err := g.client(ctx)
	if err != nil {
		return false, err
	}
	owner, repo, _ := strings.Cut(s.Name, "/")
	for page := 1; ; page++ {
		lo := sdk.ListOptions{Page: page, PageSize: statusPageSize}
		var (
			list []*sdk.Secret
			resp *sdk.Response
		)
		if s.Kind == credentials.ScopeOrganization {
			list, resp, err = c.ListOrgActionSecret(s.Name, sdk.ListOrgActionSecretOption{ListOptions: lo})
		} else {
			list, resp, err = c.ListRepoActionSecret(owner, repo, sdk.ListRepoActionSecretOption{ListOptions: lo})
		}
		if err := enrollError("list secrets", where(s), resp, err); err != nil {
			return false, err
		}
		for _, sec := range list {
			if strings.EqualFold(sec.Name, name) {
				return true, nil
			}
		}
		if len(list) < statusPageSize {
			return false, nil
		}
	}
}

// Variable returns s's Actions variable name; ok is false when it has none.
func (g *Enrollment) Variable(ctx context.Context, s credentials.Scope, name string) (string, bool, error) {
	c, err := g.client(ctx)
	if err != nil {
		return "", false, err
	}
	var (
		value string
		resp  *sdk.Response
	)
	if s.Kind == credentials.ScopeOrganization {
		var v *sdk.ActionVariable
		if v, resp, err = c.GetOrgActionVariable(s.Name, name); v != nil {
			value = v.Data
		}
	} else {
		owner, repo, _ := strings.Cut(s.Name, "/")
		var v *sdk.RepoActionVariable
		if v, resp, err = c.GetRepoActionVariable(owner, repo, name); v != nil {
			value = v.Value
		}
	}
	// 404: no such variable (or no such scope: writing the secret says which).
	if resp != nil && resp.Response != nil && resp.StatusCode == http.StatusNotFound {
		return "", false, nil
	}
	if err := enrollError("get variable", where(s), resp, err); err != nil {
		return "", false, err
	}
	return value, true, nil
}

// PutVariable creates (exists false) or updates s's Actions variable name. A variable that
// appeared meanwhile (409) is updated instead.
func (g *Enrollment) PutVariable(ctx context.Context, s credentials.Scope, name, value string, exists bool) error {
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	owner, repo, _ := strings.Cut(s.Name, "/")
	var resp *sdk.Response
	if !exists {
		if s.Kind == credentials.ScopeOrganization {
			resp, err = c.CreateOrgActionVariable(s.Name, name, sdk.CreateActionVariableOption{Value: value})
		} else {
			resp, err = c.CreateRepoActionVariable(owner, repo, name, value)
		}
		if resp == nil || resp.Response == nil || resp.StatusCode != http.StatusConflict {
			return enrollError("create variable", where(s), resp, err)
		}
	}
	if s.Kind == credentials.ScopeOrganization {
		resp, err = c.UpdateOrgActionVariable(s.Name, name, sdk.UpdateActionVariableOption{Name: name, Value: value})
	} else {
		resp, err = c.UpdateRepoActionVariable(owner, repo, name, value)
	}
	return enrollError("update variable", where(s), resp, err)
}

// OrgHooks lists an organization's webhooks.
func (g *Enrollment) OrgHooks(ctx context.Context, org string) ([]enroll.Hook, error) {
	c, err := g.client(ctx)
	if err != nil {
		return nil, err
	}
	var out []enroll.Hook
	for page := 1; ; page++ {
		list, resp, err := c.ListOrgHooks(org, sdk.ListHooksOptions{ListOptions: sdk.ListOptions{Page: page, PageSize: statusPageSize}})
		if err := enrollError("list webhooks", "organization "+org, resp, err); err != nil {
			return nil, err
		}
		for _, h := range list {
			if h.Type != string(sdk.HookTypeGitea) {
				continue
			}
			out = append(out, enroll.Hook{ID: h.ID, URL: h.Config["url"], ContentType: h.Config["content_type"],
				Events: h.Events, BranchFilter: h.BranchFilter, Active: h.Active, Authorization: h.AuthorizationHeader})
		}
		if len(list) < statusPageSize {
			return out, nil
		}
	}
}

// CreateOrgHook creates a Gitea-type organization webhook signed with secret.
func (g *Enrollment) CreateOrgHook(ctx context.Context, org string, h enroll.Hook, secret string) (int64, error) {
	c, err := g.client(ctx)
	if err != nil {
		return 0, err
	}
	hook, resp, err := c.CreateOrgHook(org, sdk.CreateHookOption{
		Type:         sdk.HookTypeGitea,
		Config:       map[string]string{"url": h.URL, "content_type": h.ContentType, "secret": secret},
		Events:       h.Events,
		BranchFilter: h.BranchFilter,
		Active:       h.Active,
	})
	if err := enrollError("create webhook", "organization "+org, resp, err); err != nil {
		return 0, err
	}
	if hook == nil || hook.ID == 0 {
		return 0, errors.New("create webhook: gitea answered no id")
	}
	return hook.ID, nil
}

// EditOrgHook sets the settings of webhook h.ID (not its secret: Gitea's API keeps it).
func (g *Enrollment) EditOrgHook(ctx context.Context, org string, h enroll.Hook) error {
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	active := h.Active
	resp, err := c.EditOrgHook(org, h.ID, sdk.EditHookOption{
		Config:              map[string]string{"url": h.URL, "content_type": h.ContentType},
		Events:              h.Events,
		BranchFilter:        h.BranchFilter,
		Active:              &active,
		AuthorizationHeader: h.Authorization,
	})
	return enrollError("edit webhook", "organization "+org, resp, err)
}

// DeleteOrgHook deletes webhook id.
func (g *Enrollment) DeleteOrgHook(ctx context.Context, org string, id int64) error {
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	resp, err := c.DeleteOrgHook(org, id)
	return enrollError("delete webhook", "organization "+org, resp, err)
}
