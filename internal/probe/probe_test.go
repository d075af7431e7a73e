package probe

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The probes answer as controller-runtime's do, and notes add detail without failing
// readiness.
func TestProbes(t *testing.T) {
	p := &Probes{}
	failing := false
	_ = p.AddReadyz("caches", func(*http.Request) error { return nil })
	_ = p.AddReadyz("secrets", func(*http.Request) error {
		if failing {
			return errors.New("secret ns/x has no \"token\" key")
		}
		return nil
	})
	_ = p.AddHealthz("ping", func(*http.Request) error { return nil })
	p.AddNote("enrollment", func() string { return "2 scopes; 1 failing: repo acme/app (gitea answered 403)\nsecond line" })
	if err := p.AddReadyz("caches", nil); err == nil {
		t.Fatal("a check added twice")
	}
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		path    string
		failing bool
		code    int
		body    string
	}{
		{"/healthz", false, 200, "ok"},
		{"/readyz", false, 200, "ok"},
		{"/readyz?verbose", false, 200, "[+]caches ok\n[+]enrollment ok: 2 scopes; 1 failing: repo acme/app (gitea answered 403) second line\n[+]secrets ok\nhealthz check passed\n"},
		{"/readyz/enrollment", false, 200, "ok: 2 scopes; 1 failing: repo acme/app (gitea answered 403) second line"},
		{"/readyz", true, 500, "[+]caches ok\n[+]enrollment ok: 2 scopes; 1 failing: repo acme/app (gitea answered 403) second line\n[-]secrets failed: reason withheld\nhealthz check failed\n"},
		{"/readyz?exclude=secrets", true, 200, "ok"},
		{"/readyz/secrets", true, 500, "internal server error: secret ns/x has no \"token\" key\n"},
		{"/readyz/nothing", false, 404, "404 page not found\n"},
		{"/healthz/ping", false, 200, "ok"},
	} {
		failing = tc.failing
		code, body := get(tc.path)
		if code != tc.code || body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
		}
	}
	if _, body := get("/healthz?verbose"); !strings.Contains(body, "[+]ping ok") || strings.Contains(body, "enrollment") {
		t.Errorf("liveness shows readiness notes: %q", body)
	}
}
