// Package enroll puts what a Gitea Actions workflow needs to tell flux-webhook about pushes
// into the forge itself, and keeps it there: for each enrolled scope (an organization, or a
// single repository) the Actions secret holding the scope's token (derived from the hook
// key) and the Actions variable holding the URL workflows post to, at organization level
// for an organization, at repository level for a repository; optionally an organization
// webhook signed with the webhook key. The leader's Controller keeps every scope written
// (on a resync interval, with backoff for a scope that cannot be written), rewrites every
// secret when the hook key changes, and records what it wrote (never a token) in a
// ConfigMap; every replica's Releaser reads that record and releases the replaced key once
// every enrolled secret holds the new token, so a rotation costs no push.
//
// The forge sits behind Forge (webhook/gitea implements it with Gitea's SDK).
package enroll

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

// Defaults of the names workflows read (`${{ secrets.FLUX_WEBHOOK_TOKEN }}`,
// `${{ vars.FLUX_WEBHOOK_URL }}`), as the README's workflows use them.
const (
	DefaultSecretName   = "FLUX_WEBHOOK_TOKEN"
	DefaultVariableName = "FLUX_WEBHOOK_URL"
)

// ErrNotFound: the forge has no such organization or repository (or does not show it to
// the enrollment token). Nothing there can hold a token, so such a scope never holds a
// rotation back.
var ErrNotFound = errors.New("not found at the forge")

// ErrForeign: a repository that enrollment found by its Flux sources already has the URL
// variable, naming another flux-webhook; it is left alone.
var ErrForeign = errors.New("the URL variable names another flux-webhook")

// Hook is an organization webhook as enrollment keeps it.
type Hook struct {
	ID           int64
	URL          string
	ContentType  string
	Events       []string
	BranchFilter string
	Active       bool
	// Authorization is the header Gitea sends with each delivery (a webhook enrollment
	// keeps sends none: the signature authenticates it).
	Authorization string
}

// Forge is where enrollment writes. Every method is one API call.
type Forge interface {
	// PutSecret creates or replaces the Actions secret name of the scope: an organization's
	// for an organization scope, a repository's for a repository scope.
	PutSecret(ctx context.Context, s credentials.Scope, name, value string) error
	// HasSecret reports whether the scope has the Actions secret name (a value cannot be
	// read back).
	HasSecret(ctx context.Context, s credentials.Scope, name string) (bool, error)
	// Variable returns the scope's Actions variable name; ok is false when it has none.
	Variable(ctx context.Context, s credentials.Scope, name string) (value string, ok bool, err error)
	// PutVariable creates (exists false) or updates the scope's Actions variable.
	PutVariable(ctx context.Context, s credentials.Scope, name, value string, exists bool) error
	// OrgHooks lists an organization's webhooks.
	OrgHooks(ctx context.Context, org string) ([]Hook, error)
	// CreateOrgHook creates an organization webhook signed with secret, returning its id.
	CreateOrgHook(ctx context.Context, org string, h Hook, secret string) (int64, error)
	// EditOrgHook sets an organization webhook's settings (h.ID); Gitea's API cannot change
	// a webhook's secret, so a new webhook key means a new webhook.
	EditOrgHook(ctx context.Context, org string, h Hook) error
	// DeleteOrgHook deletes an organization webhook.
	DeleteOrgHook(ctx context.Context, org string, id int64) error
}

// Keys gives the current hook and webhook keys.
type Keys interface {
	Current(p credentials.Purpose) []byte
}

// Settings are what enrollment writes, the same for every scope.
type Settings struct {
	// SecretName and VariableName are the Actions secret and variable names.
	SecretName, VariableName string
	// URL is the variable's value: flux-webhook's URL as workflows reach it, no trailing
	// slash ("${{ vars.FLUX_WEBHOOK_URL }}/hook/...").
	URL string
	// Webhook, when set, keeps an organization webhook pointing at URL+"/hook", signed with
	// the webhook key, on every organization scope.
	Webhook bool
}

// actionsName is Gitea's rule for Actions secret and variable names.
var actionsName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CheckName says why name cannot be an Actions secret or variable name, nil when it can.
func CheckName(name string) error {
	up := strings.ToUpper(name)
	switch {
	case !actionsName.MatchString(name):
		return fmt.Errorf("%q: want letters, digits and '_', not starting with a digit", name)
	case strings.HasPrefix(up, "GITHUB_") || strings.HasPrefix(up, "GITEA_"):
		return fmt.Errorf("%q: names starting with GITHUB_ or GITEA_ are reserved by Gitea", name)
	}
	return nil
}

// HookEvents are the events of the organization webhook: pushes, and package events for
// Flux's gitless path (README "OCI artifacts from Gitea's registry").
var HookEvents = []string{"push", "package"}

// wantHook is the organization webhook enrollment keeps.
func (s Settings) wantHook() Hook {
	return Hook{URL: s.URL + "/hook", ContentType: "json", Events: HookEvents, BranchFilter: "*", Active: true}
}

// sameHook reports whether h is configured as want (the secret cannot be read back).
func sameHook(h, want Hook) bool {
	if h.URL != want.URL || h.ContentType != want.ContentType || !h.Active || h.Authorization != "" ||
		(h.BranchFilter != want.BranchFilter && h.BranchFilter != "") || len(h.Events) != len(want.Events) {
		return false
	}
	for _, e := range want.Events {
		found := false
		for _, g := range h.Events {
			found = found || g == e
		}
		if !found {
			return false
		}
	}
	return true
}

// Action is what one step of an enrollment did.
type Action string

// The actions of a step.
const (
	Written   Action = "written"   // a secret written, or a webhook edited
	Created   Action = "created"   // a variable or webhook created
	Updated   Action = "updated"   // a variable corrected
	Unchanged Action = "unchanged" // found as wanted
	Skipped   Action = "skipped"   // not asked for
)

// Result is what enrolling one scope did and found; never a secret.
type Result struct {
	Scope credentials.Scope
	// Secret: Written, or Unchanged when the secret was found and holds this key's token
	// already (as recorded).
	Secret Action
	// Variable: Created, Updated, Unchanged, or Written (unread).
	Variable Action
	// Hook: Created (also when replaced for a new webhook key), Updated (corrected),
	// Unchanged, or Skipped; HookID its id.
	Hook   Action
	HookID int64
	// KeyGeneration is the fingerprint of the hook key the secret's token derives from;
	// HookKeyGeneration that of the webhook key the webhook is signed with.
	KeyGeneration, HookKeyGeneration string
	// Calls is how many forge calls it took.
	Calls int
}

// Level names where a scope's secret and variable live.
func Level(s credentials.Scope) string {
	if s.Kind == credentials.ScopeOrganization {
		return "organization"
	}
	return "repository"
}

// Enroller writes one scope at a time.
type Enroller struct {
	Forge    Forge
	Keys     Keys
	Settings Settings
}

// Plan says what Apply does beyond the secret.
type Plan struct {
	// WriteSecret writes the secret; CheckSecret, without it, looks for the secret (and
	// writes it when missing).
	WriteSecret, CheckSecret bool
	// CheckVariable reads and corrects the variable; WriteVariable, without it, writes it
	// unread (created, or updated where it exists): a scope's first enrollment, where a
	// read would only find it missing.
	CheckVariable, WriteVariable bool
	// Guard leaves a repository whose variable names another URL alone (ErrForeign),
	// unless that URL is Owned (enrollment wrote it before).
	Guard bool
	Owned string
	// Hook keeps the organization webhook; HookID is the one written before (0: none
	// known), HookKey the webhook key's fingerprint it was signed with.
	Hook    bool
	HookID  int64
	HookKey string
}

// ErrNoKey: the hook key (or, for a webhook, the webhook key) has no usable value.
var ErrNoKey = errors.New("no usable key")

// Apply enrolls the scope s as plan says.
func (e *Enroller) Apply(ctx context.Context, s credentials.Scope, plan Plan) (Result, error) {
	r := Result{Scope: s, Secret: Unchanged, Variable: Skipped, Hook: Skipped}
	key := e.Keys.Current(credentials.HookKey)
	if key == nil {
		return r, fmt.Errorf("%w: hook key", ErrNoKey)
	}
	r.KeyGeneration = credentials.Fingerprint(key)
	call := func(op string) { r.Calls++; giteaCalls.WithLabelValues(op).Inc() }
	var (
		value  string
		exists bool
		err    error
	)
	if plan.CheckVariable || plan.Guard {
		call("get-variable")
		if value, exists, err = e.Forge.Variable(ctx, s, e.Settings.VariableName); err != nil {
			return r, fmt.Errorf("read variable %s: %w", e.Settings.VariableName, err)
		}
		value = strings.TrimSpace(value)
		if plan.Guard && exists && value != e.Settings.URL && value != plan.Owned {
			return r, fmt.Errorf("%w (%s is %q)", ErrForeign, e.Settings.VariableName, value)
		}
	}
	write := plan.WriteSecret
	if !write && plan.CheckSecret {
		call("list-secrets")
		has, err := e.Forge.HasSecret(ctx, s, e.Settings.SecretName)
		if err != nil {
			return r, fmt.Errorf("list secrets: %w", err)
		}
		write = !has
	}
	if write {
		call("put-secret")
		if err := e.Forge.PutSecret(ctx, s, e.Settings.SecretName, credentials.DeriveToken(key, s)); err != nil {
			writes.WithLabelValues("secret", "error").Inc()
			return r, fmt.Errorf("write secret %s: %w", e.Settings.SecretName, err)
		}
		writes.WithLabelValues("secret", "ok").Inc()
		r.Secret = Written
	}
	if plan.WriteVariable && !plan.CheckVariable && !plan.Guard {
		call("put-variable")
		if err := e.Forge.PutVariable(ctx, s, e.Settings.VariableName, e.Settings.URL, false); err != nil {
			writes.WithLabelValues("variable", "error").Inc()
			return r, fmt.Errorf("write variable %s: %w", e.Settings.VariableName, err)
		}
		writes.WithLabelValues("variable", "ok").Inc()
		r.Variable = Written
	} else if plan.CheckVariable || plan.WriteVariable {
		r.Variable = Unchanged
		if !exists || value != e.Settings.URL {
			call("put-variable")
			if err := e.Forge.PutVariable(ctx, s, e.Settings.VariableName, e.Settings.URL, exists); err != nil {
				writes.WithLabelValues("variable", "error").Inc()
				return r, fmt.Errorf("write variable %s: %w", e.Settings.VariableName, err)
			}
			writes.WithLabelValues("variable", "ok").Inc()
			r.Variable = map[bool]Action{true: Updated, false: Created}[exists]
		}
	}
	if plan.Hook && s.Kind == credentials.ScopeOrganization {
		if err := e.hook(ctx, s.Name, plan, &r, call); err != nil {
			return r, err
		}
	}
	return r, nil
}

// hook keeps the organization webhook: created when missing, corrected when changed, and
// replaced (created anew, then the old one deleted: never a moment without one) when the
// webhook key changed since it was created, as Gitea cannot change a webhook's secret.
func (e *Enroller) hook(ctx context.Context, org string, plan Plan, r *Result, call func(string)) error {
	key := e.Keys.Current(credentials.WebhookKey)
	if key == nil {
		return fmt.Errorf("%w: webhook key", ErrNoKey)
	}
	r.HookKeyGeneration = credentials.Fingerprint(key)
	want := e.Settings.wantHook()
	call("list-hooks")
	hooks, err := e.Forge.OrgHooks(ctx, org)
	if err != nil {
		return fmt.Errorf("list webhooks: %w", err)
	}
	// Ours: the one created before (whatever was changed on it), else one with our URL.
	var found *Hook
	for i, h := range hooks {
		if (plan.HookID != 0 && h.ID == plan.HookID) || (found == nil && h.URL == want.URL) {
			found = &hooks[i]
		}
	}
	if found != nil && plan.HookKey == r.HookKeyGeneration {
		if sameHook(*found, want) {
			r.Hook, r.HookID = Unchanged, found.ID
			return nil
		}
		want.ID = found.ID
		call("edit-hook")
		if err := e.Forge.EditOrgHook(ctx, org, want); err != nil {
			writes.WithLabelValues("webhook", "error").Inc()
			return fmt.Errorf("edit webhook %d: %w", found.ID, err)
		}
		writes.WithLabelValues("webhook", "ok").Inc()
		r.Hook, r.HookID = Updated, found.ID
		return nil
	}
	call("create-hook")
	id, err := e.Forge.CreateOrgHook(ctx, org, want, string(key))
	if err != nil {
		writes.WithLabelValues("webhook", "error").Inc()
		return fmt.Errorf("create webhook: %w", err)
	}
	writes.WithLabelValues("webhook", "ok").Inc()
	r.Hook, r.HookID = Created, id
	if found != nil {
		// Signed with another webhook key: replaced by the one just created.
		call("delete-hook")
		if err := e.Forge.DeleteOrgHook(ctx, org, found.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete webhook %d signed with the replaced webhook key: %w", found.ID, err)
		}
	}
	return nil
}
