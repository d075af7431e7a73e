package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"code.gitea.io/sdk/gitea"
)

// Gitea is a Gitea server on 127.0.0.1 with sqlite, offline, without SSH, with Actions
// enabled and webhooks allowed to any host (loopback included).
type Gitea struct {
	URL           string // http://127.0.0.1:PORT, no trailing slash
	Token         string // API token of AdminUser, scope "all"
	AdminUser     string
	AdminPassword string
	Version       string // server version, e.g. 1.26.0
	Dir           string // state (app.ini, sqlite, repositories), logs, work trees

	bin  string
	ini  string
	env  []string
	mu   sync.Mutex
	web  *proc // nil after Kill or Stop
	done bool  // Stop was called
}

// StartGitea creates a Gitea instance in dir (app.ini, sqlite database, an admin user and
// its token) and starts `gitea web` on a free loopback port. It costs 1-2 s (the
// migration dominates) and ~170 MiB. Logs: dir/setup.log (CLI steps), dir/gitea.log.
func StartGitea(ctx context.Context, dir string) (*Gitea, error) {
	g, err := startGitea(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("start gitea: %w", err)
	}
	return g, nil
}

func startGitea(ctx context.Context, dir string) (*Gitea, error) {
	bin, static, err := Paths().RequireGitea()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("dir is empty")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"custom/conf", "data", "repos", "work"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	g := &Gitea{
		URL:           "http://127.0.0.1:" + strconv.Itoa(port),
		AdminUser:     "gitea-admin",
		AdminPassword: "pw-" + randomHex(12),
		Dir:           dir,
		bin:           bin,
		ini:           filepath.Join(dir, "custom", "conf", "app.ini"),
		env:           []string{"GITEA_WORK_DIR=" + dir, "GITEA_CUSTOM=" + filepath.Join(dir, "custom")},
	}
	root := os.Getuid() == 0
	if root {
		g.env = append(g.env, "GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT=true")
	}
	if err := os.WriteFile(g.ini, []byte(appIni(dir, static, port, root)), 0o600); err != nil {
		return nil, err
	}

	// Schema and admin user before the server starts: no sqlite contention.
	setupLog := filepath.Join(dir, "setup.log")
	if _, err := g.cli(ctx, "gitea migrate", setupLog, "migrate"); err != nil {
		return nil, err
	}
	if _, err := g.cli(ctx, "gitea admin user create", setupLog, "admin", "user", "create", "--admin",
		"--username", g.AdminUser, "--password", g.AdminPassword, "--email", g.AdminUser+"@example.invalid",
		"--must-change-password=false"); err != nil {
		return nil, err
	}
	out, err := g.cli(ctx, "gitea admin user generate-access-token", setupLog, "admin", "user", "generate-access-token",
		"--username", g.AdminUser, "--token-name", "testenv-admin", "--scopes", "all", "--raw")
	if err != nil {
		return nil, err
	}
	// The CLI logs to stdout too: the token is the one line of 40 hex digits.
	tok := regexp.MustCompile(`(?m)^[0-9a-f]{40}$`).FindAll(out, -1)
	if len(tok) == 0 {
		return nil, fmt.Errorf("gitea admin user generate-access-token printed no token; see %s", setupLog)
	}
	g.Token = string(tok[len(tok)-1])

	if err := g.startWeb(ctx); err != nil {
		return nil, err
	}
	return g, nil
}

// appIni is a minimal headless configuration, as in a test: sqlite, no mail, no SSH, no
// LFS, offline, loopback only, short graceful shutdown.
func appIni(dir, static string, port int, root bool) string {
	runUser := "root"
	if u, err := user.Current(); err == nil {
		runUser = u.Username
	}
	rootLine := ""
	if root {
		rootLine = "I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true"
	}
	return fmt.Sprintf(`APP_NAME = flux-webhook-testenv
RUN_MODE = prod
RUN_USER = %[1]s
WORK_PATH = %[2]s
%[3]s

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = %[4]d
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:%[4]d/
LOCAL_ROOT_URL = http://127.0.0.1:%[4]d/
STATIC_ROOT_PATH = %[5]s
APP_DATA_PATH = %[2]s/data
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
GRACEFUL_HAMMER_TIME = 3s

[database]
DB_TYPE = sqlite3
PATH = %[2]s/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = %[2]s/repos
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = %[6]s
INTERNAL_TOKEN = %[7]s
PASSWORD_HASH_ALGO = pbkdf2
MIN_PASSWORD_LENGTH = 6
PASSWORD_COMPLEXITY = off

[oauth2]
JWT_SECRET = %[8]s

[service]
DISABLE_REGISTRATION = true
ENABLE_NOTIFY_MAIL = false
DEFAULT_KEEP_EMAIL_PRIVATE = true

[mailer]
ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[webhook]
ALLOWED_HOST_LIST = *
SKIP_TLS_VERIFY = true

[actions]
ENABLED = true

[cron.update_checker]
ENABLED = false

[log]
MODE = console
LEVEL = Info
`, runUser, dir, rootLine, port, static, randomHex(32), randomHex(48), jwtSecret())
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// jwtSecret is what `gitea generate secret JWT_SECRET` prints: 32 random bytes, base64url.
func jwtSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// cli runs one gitea CLI command against this instance's configuration.
func (g *Gitea) cli(ctx context.Context, what, logPath string, args ...string) ([]byte, error) {
	args = append([]string{"--config", g.ini, "--work-path", g.Dir, "--custom-path", filepath.Join(g.Dir, "custom")}, args...)
	return runLogged(ctx, what, logPath, g.Dir, g.env, g.bin, args...)
}

// startWeb starts `gitea web` and waits for /api/healthz and the version.
func (g *Gitea) startWeb(ctx context.Context) error {
	p, err := startProc("gitea", filepath.Join(g.Dir, "gitea.log"), g.Dir, g.env, g.bin,
		"--config", g.ini, "--work-path", g.Dir, "--custom-path", filepath.Join(g.Dir, "custom"), "web")
	if err != nil {
		return err
	}
	err = p.waitFor(ctx, "gitea /api/healthz", func(ctx context.Context) error {
		if err := getOK(ctx, g.URL+"/api/healthz"); err != nil {
			return err
		}
		v, err := serverVersion(ctx, g.URL)
		g.Version = v
		return err
	})
	if err != nil {
		p.stop()
		return err
	}
	g.web = p
	return nil
}

func serverVersion(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/api/v1/version", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct{ Version string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", err
	}
	return v.Version, nil
}

// NewGitea starts a Gitea in t.TempDir() for the test (see StartGitea) and stops it in
// t.Cleanup.
func NewGitea(t testing.TB) *Gitea {
	t.Helper()
	g, err := StartGitea(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, g.Dir, "gitea.log")
		}
		g.Stop()
	})
	return g
}

// Client returns a Gitea SDK client authenticated as the admin, whose requests use ctx.
func (g *Gitea) Client(ctx context.Context) (*gitea.Client, error) {
	c, err := gitea.NewClient(g.URL, gitea.SetToken(g.Token), gitea.SetContext(ctx), gitea.SetGiteaVersion(g.Version))
	if err != nil {
		return nil, fmt.Errorf("gitea client: %w", err)
	}
	return c, nil
}

// CreateToken creates another API token of the admin user with the given scopes (for
// example "write:repository"; none means "all") and returns it.
func (g *Gitea) CreateToken(ctx context.Context, name string, scopes ...string) (string, error) {
	// Creating tokens needs basic auth, not a token.
	c, err := gitea.NewClient(g.URL, gitea.SetBasicAuth(g.AdminUser, g.AdminPassword), gitea.SetContext(ctx), gitea.SetGiteaVersion(g.Version))
	if err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	opt := gitea.CreateAccessTokenOption{Name: name, Scopes: []gitea.AccessTokenScope{gitea.AccessTokenScopeAll}}
	if len(scopes) > 0 {
		opt.Scopes = opt.Scopes[:0]
		for _, s := range scopes {
			opt.Scopes = append(opt.Scopes, gitea.AccessTokenScope(s))
		}
	}
	tok, _, err := c.CreateAccessToken(opt)
	if err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	return tok.Token, nil
}

// CreateUser creates a user who is not an admin and returns an API token of theirs with all
// scopes: someone else on the same Gitea.
func (g *Gitea) CreateUser(ctx context.Context, name string) (string, error) {
	admin, err := g.Client(ctx)
	if err != nil {
		return "", err
	}
	password := randomHex(16)
	mustChange := false
	if _, _, err := admin.AdminCreateUser(gitea.CreateUserOption{Username: name, Email: name + "@example.invalid",
		Password: password, MustChangePassword: &mustChange}); err != nil {
		return "", fmt.Errorf("create user %s: %w", name, err)
	}
	c, err := gitea.NewClient(g.URL, gitea.SetBasicAuth(name, password), gitea.SetContext(ctx), gitea.SetGiteaVersion(g.Version))
	if err != nil {
		return "", err
	}
	tok, _, err := c.CreateAccessToken(gitea.CreateAccessTokenOption{Name: "test", Scopes: []gitea.AccessTokenScope{gitea.AccessTokenScopeAll}})
	if err != nil {
		return "", fmt.Errorf("create token of %s: %w", name, err)
	}
	return tok.Token, nil
}

// Kill ends the server abruptly (SIGKILL), as a crash; the port and state stay for Restart.
func (g *Gitea) Kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.web != nil {
		g.web.kill()
		g.web = nil
	}
}

// Restart stops the server if it runs (SIGTERM) and starts it again on the same port with
// the same state, waiting until it is healthy (~0.5 s).
func (g *Gitea) Restart(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return errors.New("restart gitea: stopped")
	}
	if g.web != nil {
		g.web.stop()
		g.web = nil
	}
	if err := g.startWeb(ctx); err != nil {
		return fmt.Errorf("restart gitea: %w", err)
	}
	return nil
}

// Stop stops the server for good (SIGTERM, SIGKILL after 5 s). Dir is left in place.
func (g *Gitea) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	if g.web != nil {
		g.web.stop()
		g.web = nil
	}
}
