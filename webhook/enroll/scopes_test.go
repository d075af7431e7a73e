package enroll

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

func TestParseScopes(t *testing.T) {
	tests := []struct {
		name    string
		data    map[string]string
		want    []string
		refused []string
	}{
		{"empty", nil, nil, nil},
		{"separators and comments", map[string]string{
			"organizations": "acme, Platform\n# a comment\nteam-a # trailing\r\n",
			"repositories":  "acme/app\tbob/tool,,",
		}, []string{"org acme", "org platform", "org team-a", "repo acme/app", "repo bob/tool"}, nil},
		{"malformed", map[string]string{
			"organizations": "a/b ../x ok",
			"repositories":  "no-slash acme/../x acme/app/extra " + strings.Repeat("x", 120) + "/y",
		}, []string{"org ok"}, []string{"organizations: a/b", "organizations: ../x", "repositories: no-slash", "repositories: acme/../x",
			"repositories: acme/app/extra", "repositories: " + strings.Repeat("x", 100) + "…"}},
		{"other keys ignored", map[string]string{"users": "bob"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scopes, refused := ParseScopes(tt.data)
			var got []string
			for _, s := range scopes {
				got = append(got, s.String())
			}
			if !slices.Equal(got, tt.want) || !slices.Equal(refused, tt.refused) {
				t.Fatalf("ParseScopes = %q, refused %q; want %q, %q", got, refused, tt.want, tt.refused)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 5 * time.Second, 2: 10 * time.Second, 3: 20 * time.Second, 7: backoffMax, 50: backoffMax} {
		for range 20 {
			if d := backoff(n); d < want*8/10 || d > want*12/10 {
				t.Fatalf("backoff(%d) = %s, want %s ±20%%", n, d, want)
			}
		}
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{"FLUX_WEBHOOK_TOKEN": true, "_x": true, "x1": true, "1x": false, "A-B": false, "": false,
		"GITEA_TOKEN": false, "github_x": false, "A B": false} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
	}
}

// The readiness detail names failing scopes (at most maxListedFailures, then a count) and a
// rotation in progress.
func TestReleaserDetail(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	next := now.Add(40 * time.Second)
	rec := &Record{KeyGeneration: "aaaaaaaaaaaa", Rotation: &Rotation{From: "bbbbbbbbbbbb", To: "aaaaaaaaaaaa", Pending: 7}}
	rec.Scopes = append(rec.Scopes, ScopeRecord{Scope: "org acme", KeyGeneration: "aaaaaaaaaaaa"})
	for i := range 7 {
		rec.Scopes = append(rec.Scopes, ScopeRecord{Scope: "repo acme/r" + string(rune('0'+i)), KeyGeneration: "bbbbbbbbbbbb",
			Error: "put secret: gitea answered 503", NextAttempt: &next})
	}
	released := map[credentials.Purpose]string{}
	r := &Releaser{Keys: releaseFunc(func(p credentials.Purpose, fp string) { released[p] = fp }), Now: func() time.Time { return now }}
	if d := r.Detail(); !strings.Contains(d, "no record") {
		t.Fatalf("before any record: %q", d)
	}
	r.Observe(rec)
	d := r.Detail()
	for _, want := range []string{"8 scopes, 1 hold key generation aaaaaaaaaaaa", "rotation from bbbbbbbbbbbb: secrets still holding the old key's token: 7", "7 failing: repo acme/r0 (put secret: gitea answered 503; retry in 40s)", "and 2 more"} {
		if !strings.Contains(d, want) {
			t.Errorf("detail %q lacks %q", d, want)
		}
	}
	if strings.Contains(d, "acme/r5") || len(released) != 0 {
		t.Errorf("detail lists more than %d failures, or something was released: %q %v", maxListedFailures, d, released)
	}
	rec.Settled = Settled{HookKey: "aaaaaaaaaaaa", WebhookKey: "cccccccccccc"}
	r.Observe(rec)
	if released[credentials.HookKey] != "aaaaaaaaaaaa" || released[credentials.WebhookKey] != "cccccccccccc" {
		t.Fatalf("released %v", released)
	}
}

type releaseFunc func(p credentials.Purpose, fp string)

func (f releaseFunc) Release(p credentials.Purpose, fp string) { f(p, fp) }

func TestSameHook(t *testing.T) {
	want := Settings{URL: "https://fw.example"}.wantHook()
	same := want
	same.Events = []string{"package", "push"}
	same.ID = 7
	change := func(f func(h *Hook)) Hook { h := want; f(&h); return h }
	for _, tc := range []struct {
		name string
		h    Hook
		ok   bool
	}{
		{"as created", want, true},
		{"events in another order", same, true},
		{"no branch filter", change(func(h *Hook) { h.BranchFilter = "" }), true},
		{"another URL", change(func(h *Hook) { h.URL += "x" }), false},
		{"form", change(func(h *Hook) { h.ContentType = "form" }), false},
		{"inactive", change(func(h *Hook) { h.Active = false }), false},
		{"push only", change(func(h *Hook) { h.Events = []string{"push"} }), false},
		{"with an authorization header", change(func(h *Hook) { h.Authorization = "Bearer x" }), false},
		{"another branch filter", change(func(h *Hook) { h.BranchFilter = "main" }), false},
	} {
		if sameHook(tc.h, want) != tc.ok {
			t.Errorf("%s: sameHook = %v", tc.name, !tc.ok)
		}
	}
}
