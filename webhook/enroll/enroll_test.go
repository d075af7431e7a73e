package enroll_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "code.gitea.io/sdk/gitea"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
	"github.com/openova-io/flux-webhook/webhook/enroll"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

const url = "https://flux-webhook.fra1.example.test"

// counting is the real Gitea forge, counting its calls, with failures injected per scope
// name (as an outage of one organization's or repository's API would look).
type counting struct {
	enroll.Forge
	mu    sync.Mutex
	calls int
	fail  map[string]error
}

func (c *counting) before(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return c.fail[name]
}

func (c *counting) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.calls
	c.calls = 0
	return n
}

func (c *counting) failing(name string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail == nil {
		c.fail = map[string]error{}
	}
	if err == nil {
		delete(c.fail, name)
	} else {
		c.fail[name] = err
	}
}

func (c *counting) PutSecret(ctx context.Context, s credentials.Scope, name, value string) error {
	if err := c.before(s.Name); err != nil {
		return err
	}
	return c.Forge.PutSecret(ctx, s, name, value)
}

func (c *counting) HasSecret(ctx context.Context, s credentials.Scope, name string) (bool, error) {
	if err := c.before(s.Name); err != nil {
		return false, err
	}
	return c.Forge.HasSecret(ctx, s, name)
}

func (c *counting) Variable(ctx context.Context, s credentials.Scope, name string) (string, bool, error) {
	if err := c.before(s.Name); err != nil {
		return "", false, err
	}
	return c.Forge.Variable(ctx, s, name)
}

func (c *counting) PutVariable(ctx context.Context, s credentials.Scope, name, value string, exists bool) error {
	if err := c.before(s.Name); err != nil {
		return err
	}
	return c.Forge.PutVariable(ctx, s, name, value, exists)
}

func (c *counting) OrgHooks(ctx context.Context, org string) ([]enroll.Hook, error) {
	if err := c.before(org); err != nil {
		return nil, err
	}
	return c.Forge.OrgHooks(ctx, org)
}

func (c *counting) CreateOrgHook(ctx context.Context, org string, h enroll.Hook, secret string) (int64, error) {
	if err := c.before(org); err != nil {
		return 0, err
	}
	return c.Forge.CreateOrgHook(ctx, org, h, secret)
}

func (c *counting) EditOrgHook(ctx context.Context, org string, h enroll.Hook) error {
	if err := c.before(org); err != nil {
		return err
	}
	return c.Forge.EditOrgHook(ctx, org, h)
}

func (c *counting) DeleteOrgHook(ctx context.Context, org string, id int64) error {
	if err := c.before(org); err != nil {
		return err
	}
	return c.Forge.DeleteOrgHook(ctx, org, id)
}

// clock is the controller's clock, moved by the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// env is a controller against the real Gitea, recording into a namespace of its own, with
// a clock of its own.
type env struct {
	t     *testing.T
	keys  *credentials.Keyring
	forge *counting
	c     *enroll.Controller
	clock *clock
	admin *sdk.Client
	store *enroll.Store
}

func randomKey() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func suffix() string { return randomKey()[:8] }

// newEnv returns a controller enrolling scopes, with an enrollment token of only the
// scopes enrollment documents: write:organization and write:repository.
func newEnv(t *testing.T, settings enroll.Settings, scopes ...credentials.Scope) *env {
	t.Helper()
	ctx := t.Context()
	tok, err := giteaSrv.CreateToken(ctx, "enroll-"+suffix(), "write:organization", "write:repository")
	if err != nil {
		t.Fatal(err)
	}
	keys := &credentials.Keyring{Grace: time.Second}
	keys.HoldRotation(credentials.HookKey, time.Hour)
	for p, v := range map[credentials.Purpose]string{credentials.HookKey: randomKey(), credentials.EnrollToken: tok, credentials.WebhookKey: randomKey()} {
		if err := keys.Set(p, v); err != nil {
			t.Fatal(err)
		}
	}
	ns := "enroll-" + suffix()
	if err := kube.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if settings.SecretName == "" {
		settings.SecretName, settings.VariableName = enroll.DefaultSecretName, enroll.DefaultVariableName
	}
	if settings.URL == "" {
		settings.URL = url
	}
	forge := &counting{Forge: &gitea.Enrollment{URL: giteaSrv.URL, HTTP: &http.Client{Timeout: 10 * time.Second}, Keys: keys}}
	clk := &clock{t: time.Now()}
	store := &enroll.Store{Client: kube.Client, Reader: kube.Client, Namespace: ns}
	e := &env{t: t, keys: keys, forge: forge, clock: clk, store: store,
		c: &enroll.Controller{
			Enroller:       &enroll.Enroller{Forge: forge, Keys: keys, Settings: settings},
			Store:          store,
			Static:         scopes,
			Resync:         10 * time.Minute,
			CallsPerSecond: -1,
			Log:            testr.New(t),
			Now:            clk.now,
		}}
	if e.admin, err = giteaSrv.Client(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// pass runs one pass and returns the record and the forge calls it took.
func (e *env) pass() (*enroll.Record, int) {
	e.t.Helper()
	e.forge.take()
	e.c.Pass(e.t.Context())
	n := e.forge.take()
	rec, err := e.store.Load(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return rec, n
}

func scope(t *testing.T, s string) credentials.Scope {
	t.Helper()
	sc, err := enroll.ParseScope(s)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func find(rec *enroll.Record, s string) *enroll.ScopeRecord {
	for i := range rec.Scopes {
		if rec.Scopes[i].Scope == s {
			return &rec.Scopes[i]
		}
	}
	return nil
}

// secretNames lists the Actions secrets of an organization ("acme") or repository
// ("acme/app"), as the admin sees them.
func (e *env) secretNames(name string) []string {
	e.t.Helper()
	var list []*sdk.Secret
	var err error
	if owner, repo, ok := strings.Cut(name, "/"); ok {
		list, _, err = e.admin.ListRepoActionSecret(owner, repo, sdk.ListRepoActionSecretOption{})
	} else {
		list, _, err = e.admin.ListOrgActionSecret(name, sdk.ListOrgActionSecretOption{})
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, s := range list {
		out = append(out, s.Name)
	}
	return out
}

// variable returns a scope's FLUX_WEBHOOK_URL as the admin sees it, "" when absent.
func (e *env) variable(name string) string {
	e.t.Helper()
	if owner, repo, ok := strings.Cut(name, "/"); ok {
		v, resp, err := e.admin.GetRepoActionVariable(owner, repo, enroll.DefaultVariableName)
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return ""
		}
		if err != nil {
			e.t.Fatal(err)
		}
		return v.Value
	}
	v, resp, err := e.admin.GetOrgActionVariable(name, enroll.DefaultVariableName)
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return v.Data
}

// An organization and a repository are enrolled at their own level with a token of the
// documented scopes only; nothing is called again until the resync, which checks with two
// calls a scope and puts back what was deleted in Gitea.
func TestEnrollOrganizationAndRepository(t *testing.T) {
	integration(t)
	ctx := t.Context()
	org := "acme-" + suffix()
	if err := giteaSrv.CreateOrg(ctx, org, sdk.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	if _, err := giteaSrv.CreateOrgRepo(ctx, org, "app"); err != nil {
		t.Fatal(err)
	}
	solo, err := giteaSrv.CreateRepo(ctx, "solo-"+suffix())
	if err != nil {
		t.Fatal(err)
	}
	orgScope, repoScope := scope(t, "org "+org), scope(t, "repo "+strings.ToLower(solo.FullName))
	e := newEnv(t, enroll.Settings{}, orgScope, repoScope)

	rec, calls := e.pass()
	key := credentials.Fingerprint(e.keys.Current(credentials.HookKey))
	// Each: write the secret, write the variable (unread: it cannot be there yet).
	if calls != 4 {
		t.Errorf("first enrollment of two scopes: %d calls, want 4", calls)
	}
	for _, name := range []string{org, solo.FullName} {
		if names := e.secretNames(name); !slices.Contains(names, enroll.DefaultSecretName) {
			t.Errorf("%s: secrets %v", name, names)
		}
		if v := e.variable(name); v != url {
			t.Errorf("%s: variable %q", name, v)
		}
	}
	if rec.KeyGeneration != key || rec.Settled.HookKey != key || len(rec.Scopes) != 2 {
		t.Fatalf("record %+v", rec)
	}
	for _, s := range rec.Scopes {
		if s.KeyGeneration != key || s.Written == nil || s.Checked == nil || s.Error != "" || s.URL != url || !slices.Equal(s.Sources, []string{enroll.SourceFlag}) {
			t.Errorf("scope record %+v", s)
		}
	}
	if rec.Scopes[0].Level != "organization" || rec.Scopes[1].Level != "repository" {
		t.Errorf("levels %s, %s", rec.Scopes[0].Level, rec.Scopes[1].Level)
	}
	if _, calls := e.pass(); calls != 0 {
		t.Errorf("nothing changed: %d calls", calls)
	}

	// Deleted in Gitea by someone: put back at the resync.
	if _, err := e.admin.DeleteOrgActionSecret(org, enroll.DefaultSecretName); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.DeleteRepoActionVariable(solo.Owner, solo.Name, enroll.DefaultVariableName); err != nil {
		t.Fatal(err)
	}
	e.clock.add(11 * time.Minute)
	rec, calls = e.pass()
	// Two checks each, one write each.
	if calls != 6 {
		t.Errorf("resync with one secret and one variable gone: %d calls, want 6", calls)
	}
	if !slices.Contains(e.secretNames(org), enroll.DefaultSecretName) || e.variable(solo.FullName) != url {
		t.Fatal("not put back at the resync")
	}
	if s := find(rec, orgScope.String()); s == nil || s.Written == nil || !s.Written.Equal(e.clock.now()) {
		t.Fatalf("organization record after its secret was rewritten: %+v", s)
	}
	e.clock.add(11 * time.Minute)
	if _, calls := e.pass(); calls != 4 {
		t.Errorf("resync with everything in place: %d calls, want 4", calls)
	}
}

// A rotation writes every enrolled secret again; the replaced key stays valid on every
// replica until the record says all hold the new one, then for Grace only. A scope that
// cannot be written holds it back and is retried with backoff; one Gitea does not have
// holds nothing back.
func TestRotationWaitsForEverySecret(t *testing.T) {
	integration(t)
	ctx := t.Context()
	org := "rot-" + suffix()
	if err := giteaSrv.CreateOrg(ctx, org, sdk.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	var repos []credentials.Scope
	for _, n := range []string{"one", "two"} {
		r, err := giteaSrv.CreateOrgRepo(ctx, org, n)
		if err != nil {
			t.Fatal(err)
		}
		repos = append(repos, scope(t, "repo "+strings.ToLower(r.FullName)))
	}
	ghost := scope(t, "org ghost-"+suffix())
	e := newEnv(t, enroll.Settings{}, append(repos, scope(t, "org "+org), ghost)...)
	rec, _ := e.pass()
	if g := find(rec, ghost.String()); g == nil || !g.Gone || g.Error == "" || g.Failures != 1 || g.NextAttempt == nil {
		t.Fatalf("an organization Gitea does not have: %+v", g)
	}
	oldKey := string(e.keys.Current(credentials.HookKey))
	oldFP := credentials.Fingerprint([]byte(oldKey))
	if rec.Settled.HookKey != oldFP {
		t.Fatalf("settled %q, want %q: a scope Gitea does not have held it back", rec.Settled.HookKey, oldFP)
	}

	// Another replica: its own keyring, released by the record alone.
	replicaNow := time.Now()
	replica := &credentials.Keyring{Grace: time.Minute, Now: func() time.Time { return replicaNow }}
	replica.HoldRotation(credentials.HookKey, time.Hour)
	_ = replica.Set(credentials.HookKey, oldKey)
	releaser := &enroll.Releaser{Keys: replica, Log: testr.New(t)}
	releaser.Observe(rec)
	oldToken := credentials.DeriveToken([]byte(oldKey), repos[1])
	valid := func(tok string) bool { _, err := replica.HookBearer(tok); return err == nil }

	newKey := randomKey()
	newFP := credentials.Fingerprint([]byte(newKey))
	_ = e.keys.Set(credentials.HookKey, newKey)
	_ = replica.Set(credentials.HookKey, newKey)
	e.forge.failing(repos[1].Name, errors.New("gitea answered 503"))
	e.clock.add(time.Second)
	rec, _ = e.pass()
	if rec.Settled.HookKey != "" || rec.Rotation == nil || rec.Rotation.Pending != 1 || rec.Rotation.From != oldFP || rec.Rotation.To != newFP {
		t.Fatalf("one secret not rewritten: settled %q, rotation %+v", rec.Settled.HookKey, rec.Rotation)
	}
	failing := find(rec, repos[1].String())
	if failing.Error == "" || failing.KeyGeneration != oldFP || failing.NextAttempt == nil {
		t.Fatalf("failing scope %+v", failing)
	}
	for _, s := range []credentials.Scope{repos[0], scope(t, "org "+org)} {
		if r := find(rec, s.String()); r.KeyGeneration != newFP || r.Error != "" {
			t.Fatalf("%s not rewritten: %+v", s, r)
		}
	}
	releaser.Observe(rec)
	replicaNow = replicaNow.Add(30 * time.Minute)
	if !valid(oldToken) {
		t.Fatal("the replaced key refused while a secret still holds its token")
	}
	if d := releaser.Detail(); !strings.Contains(d, repos[1].String()) || !strings.Contains(d, "503") || !strings.Contains(d, "old key's token: 1") {
		t.Fatalf("readiness detail %q does not name the failing scope", d)
	}
	// Not retried before its backoff.
	e.forge.failing(repos[1].Name, nil)
	if _, calls := e.pass(); calls != 0 {
		t.Fatalf("retried before its backoff: %d calls", calls)
	}
	e.clock.add(10 * time.Second)
	rec, calls := e.pass()
	// The retry reads the variable (it failed last time) and writes the secret; the
	// organization Gitea does not have is tried again too (its secret's write, refused).
	if calls != 3 {
		t.Errorf("retries after the backoff: %d calls, want 3", calls)
	}
	if rec.Settled.HookKey != newFP || rec.Rotation.Settled == nil || rec.Rotation.Pending != 0 {
		t.Fatalf("after every secret holds the new token: settled %q, rotation %+v", rec.Settled.HookKey, rec.Rotation)
	}
	releaser.Observe(rec)
	if !valid(oldToken) {
		t.Fatal("the replaced key refused at once after the release: Grace is for jobs that read it just before")
	}
	replicaNow = replicaNow.Add(time.Minute + time.Second)
	if valid(oldToken) || !valid(credentials.DeriveToken([]byte(newKey), repos[1])) {
		t.Fatal("after the release and Grace: the replaced key still valid, or the new one refused")
	}
}

// The organization webhook: created, recreated when deleted, corrected when changed, and
// replaced when the webhook key changes; Gitea's deliveries through it are signed with the
// current webhook key.
func TestWebhookKeptInPlace(t *testing.T) {
	integration(t)
	ctx := t.Context()
	var mu sync.Mutex
	var deliveries []*http.Request
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		deliveries, bodies = append(deliveries, r), append(bodies, b)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	org := "hooks-" + suffix()
	if err := giteaSrv.CreateOrg(ctx, org, sdk.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	repo, err := giteaSrv.CreateOrgRepo(ctx, org, "app")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, enroll.Settings{URL: srv.URL, Webhook: true}, scope(t, "org "+org))
	hooks := func() []*sdk.Hook {
		hs, _, err := e.admin.ListOrgHooks(org, sdk.ListHooksOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return hs
	}
	rec, _ := e.pass()
	hs := hooks()
	if len(hs) != 1 || hs[0].Config["url"] != srv.URL+"/hook" || !hs[0].Active || !sameSet(hs[0].Events, enroll.HookEvents) {
		t.Fatalf("webhooks %+v", hs)
	}
	webhookFP := credentials.Fingerprint(e.keys.Current(credentials.WebhookKey))
	if w := rec.Scopes[0].Webhook; w == nil || w.ID != hs[0].ID || w.KeyGeneration != webhookFP || rec.Settled.WebhookKey != webhookFP {
		t.Fatalf("record %+v, settled %+v", rec.Scopes[0].Webhook, rec.Settled)
	}
	// Gitea signs its deliveries with the webhook key.
	signedPush := func(what string) {
		t.Helper()
		mu.Lock()
		deliveries, bodies = nil, nil
		mu.Unlock()
		if err := repo.WriteFile("f", what); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.Commit(ctx, what); err != nil {
			t.Fatal(err)
		}
		if err := repo.Push(ctx, "HEAD:refs/heads/main"); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 30*time.Second, "a delivery of "+what, func() bool { mu.Lock(); defer mu.Unlock(); return len(deliveries) > 0 })
		mu.Lock()
		defer mu.Unlock()
		if _, err := gitea.VerifySignature(deliveries[0].Header, deliveries[0].Header.Get("Content-Type"), bodies[0],
			[][]byte{e.keys.Current(credentials.WebhookKey)}); err != nil {
			t.Fatalf("delivery of %s not signed with the current webhook key: %v", what, err)
		}
	}
	signedPush("first")

	// Deleted in Gitea: back at the resync.
	if _, err := e.admin.DeleteOrgHook(org, hs[0].ID); err != nil {
		t.Fatal(err)
	}
	e.clock.add(11 * time.Minute)
	rec, _ = e.pass()
	if hs = hooks(); len(hs) != 1 || hs[0].Config["url"] != srv.URL+"/hook" || rec.Scopes[0].Webhook.ID != hs[0].ID {
		t.Fatalf("after deletion: %+v, record %+v", hs, rec.Scopes[0].Webhook)
	}
	// Changed in Gitea (pointed elsewhere, deactivated): corrected in place at the resync.
	inactive := false
	if _, err := e.admin.EditOrgHook(org, hs[0].ID, sdk.EditHookOption{Config: map[string]string{"url": "https://elsewhere.example.test/x", "content_type": "form"},
		Events: []string{"issues"}, Active: &inactive}); err != nil {
		t.Fatal(err)
	}
	e.clock.add(11 * time.Minute)
	e.pass()
	if got := hooks(); len(got) != 1 || got[0].ID != hs[0].ID || got[0].Config["url"] != srv.URL+"/hook" || got[0].Config["content_type"] != "json" ||
		!got[0].Active || !sameSet(got[0].Events, enroll.HookEvents) {
		t.Fatalf("after a change: %+v", got)
	}
	// A new webhook key: a new webhook signed with it, the old one gone.
	if err := e.keys.Set(credentials.WebhookKey, randomKey()); err != nil {
		t.Fatal(err)
	}
	e.clock.add(time.Second)
	rec, _ = e.pass()
	got := hooks()
	newFP := credentials.Fingerprint(e.keys.Current(credentials.WebhookKey))
	if len(got) != 1 || got[0].ID == hs[0].ID || rec.Scopes[0].Webhook.KeyGeneration != newFP || rec.Settled.WebhookKey != newFP {
		t.Fatalf("after a webhook key change: %+v, record %+v", got, rec.Scopes[0].Webhook)
	}
	signedPush("second")
}

// Repositories Flux sources follow are enrolled at repository level, except those of an
// enrolled organization (its secret covers them) and those whose variable names another
// flux-webhook (left alone); a repository that stops being followed is no longer kept.
func TestFollowedRepositories(t *testing.T) {
	integration(t)
	ctx := t.Context()
	org := "fol-" + suffix()
	if err := giteaSrv.CreateOrg(ctx, org, sdk.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range []string{"covered", "fresh", "foreign"} {
		owner := org
		if n != "covered" {
			owner = "gitea-admin"
		}
		var r *testenv.Repo
		var err error
		if owner == org {
			r, err = giteaSrv.CreateOrgRepo(ctx, org, n)
		} else {
			r, err = giteaSrv.CreateRepo(ctx, n+"-"+suffix())
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, strings.ToLower(r.FullName))
	}
	foreignOwner, foreignName, _ := strings.Cut(names[2], "/")
	if _, err := (func() (*sdk.Response, error) {
		c, err := giteaSrv.Client(ctx)
		if err != nil {
			return nil, err
		}
		return c.CreateRepoActionVariable(foreignOwner, foreignName, enroll.DefaultVariableName, "https://flux-webhook.other-region.example.test")
	})(); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, enroll.Settings{}, scope(t, "org "+org))
	followed := &staticFollowed{repos: names}
	e.c.Followed = followed
	rec, _ := e.pass()
	if len(rec.Scopes) != 3 || find(rec, "repo "+names[0]) != nil {
		t.Fatalf("scopes %+v: want the organization, fresh and foreign (covered is the organization's)", rec.Scopes)
	}
	if s := find(rec, "repo "+names[1]); s == nil || s.Error != "" || s.Written == nil || !slices.Equal(s.Sources, []string{enroll.SourceFlux}) {
		t.Fatalf("followed repository: %+v", s)
	}
	foreign := find(rec, "repo "+names[2])
	if foreign == nil || !strings.Contains(foreign.LeftAlone, "another flux-webhook") || foreign.Error != "" || foreign.Written != nil {
		t.Fatalf("a repository another flux-webhook serves: %+v", foreign)
	}
	if e.variable(names[2]) != "https://flux-webhook.other-region.example.test" || slices.Contains(e.secretNames(names[2]), enroll.DefaultSecretName) {
		t.Fatal("the other flux-webhook's repository was written")
	}
	// No longer followed: dropped from the record (its secret stays as it is).
	followed.set(names[:2])
	e.clock.add(20 * time.Second)
	rec, _ = e.pass()
	if len(rec.Scopes) != 2 || find(rec, "repo "+names[2]) != nil {
		t.Fatalf("after the source went: %+v", rec.Scopes)
	}
}

type staticFollowed struct {
	mu    sync.Mutex
	repos []string
}

func (s *staticFollowed) set(r []string) { s.mu.Lock(); s.repos = r; s.mu.Unlock() }
func (s *staticFollowed) Followed(context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.repos), nil
}

// The scopes ConfigMap the platform writes: its scopes are enrolled, its malformed entries
// refused and recorded, and a scope removed from it is no longer kept.
func TestScopesConfigMap(t *testing.T) {
	integration(t)
	ctx := t.Context()
	org := "cm-" + suffix()
	if err := giteaSrv.CreateOrg(ctx, org, sdk.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, enroll.Settings{})
	e.c.ScopesConfigMap = "flux-webhook-enroll"
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: e.store.Namespace, Name: "flux-webhook-enroll"},
		Data: map[string]string{"organizations": org + " # the platform's\n", "repositories": "acme/../etc, Acme/App"}}
	if err := kube.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	rec, _ := e.pass()
	if s := find(rec, "org "+org); s == nil || s.Error != "" || !slices.Equal(s.Sources, []string{enroll.SourceConfigMap}) {
		t.Fatalf("organization of the ConfigMap: %+v", rec.Scopes)
	}
	if s := find(rec, "repo acme/app"); s == nil || !s.Gone {
		t.Fatalf("a repository Gitea does not have: %+v", s)
	}
	if !slices.Equal(rec.Refused, []string{"repositories: acme/../etc"}) {
		t.Fatalf("refused %v", rec.Refused)
	}
	cm.Data = map[string]string{"organizations": org}
	if err := kube.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	e.clock.add(20 * time.Second)
	if rec, _ = e.pass(); len(rec.Scopes) != 1 || len(rec.Refused) != 0 {
		t.Fatalf("after the ConfigMap changed: %+v, refused %v", rec.Scopes, rec.Refused)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
