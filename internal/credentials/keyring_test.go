package credentials

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// 32 bytes and more, each different.
const (
	keyA = "key-a-0123456789abcdef0123456789ab"
	keyB = "key-b-0123456789abcdef0123456789ab"
	keyC = "key-c-0123456789abcdef0123456789ab"
)

func TestKeyringRefusesWeakAndReusedValues(t *testing.T) {
	k := &Keyring{}
	if err := k.Set(HookKey, keyA+"\n"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		p     Purpose
		value string
		want  error
	}{
		{"31 bytes", WebhookKey, strings.Repeat("x", MinSecretBytes-1), ErrWeak},
		{"31 bytes after trimming", WebhookKey, " " + strings.Repeat("x", MinSecretBytes-1) + "\n", ErrWeak},
		{"the hook key again", WebhookKey, keyA, ErrReused},
		{"the hook key with whitespace", PlatformToken, "  " + keyA + "\t", ErrReused},
		{"the hook key as the Gitea token", GiteaToken, keyA, ErrReused},
		{"32 bytes of another value", WebhookKey, keyB, nil},
		{"the same value for the same purpose", HookKey, keyA, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := k.Set(tt.p, tt.value)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Set = %v, want %v", err, tt.want)
			}
			if tt.want != nil {
				if !errors.Is(k.Problem(tt.p), tt.want) || k.Current(tt.p) != nil || k.Match(tt.p, []byte(strings.TrimSpace(tt.value))) {
					t.Fatalf("refused value usable: problem %v", k.Problem(tt.p))
				}
			}
		})
	}
	// A rotation's extra value may not be another purpose's either.
	if err := k.Set(RecordKey, keyC, keyB); !errors.Is(err, ErrReused) {
		t.Fatalf("previous record key equal to the webhook key: %v", err)
	}
	if err := k.Set(RecordKey, keyC, strings.Repeat("p", 40)); err != nil || len(k.Values(RecordKey)) != 2 {
		t.Fatalf("record key with its previous: %v, %d values", err, len(k.Values(RecordKey)))
	}
	if err := k.Problem(SharedToken); !errors.Is(err, ErrMissing) {
		t.Fatalf("unset purpose: %v", err)
	}
}

func TestKeyringRotation(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	k := &Keyring{Grace: 5 * time.Minute, Now: func() time.Time { return now }}
	valid := func(v string) bool { return k.Match(SharedToken, []byte(v)) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(k.Set(SharedToken, keyA))
	must(k.Set(SharedToken, keyB))
	if !valid(keyB) || !valid(keyA) {
		t.Fatal("new or previous value refused right after a rotation")
	}
	now = now.Add(4 * time.Minute)
	must(k.Set(SharedToken, keyB)) // a resync with the same value does not restart the grace period
	now = now.Add(2 * time.Minute)
	if valid(keyA) {
		t.Fatal("previous value accepted after the grace period")
	}
	// A weak new value is refused; the one it would have replaced keeps its grace only.
	if err := k.Set(SharedToken, "short"); !errors.Is(err, ErrWeak) {
		t.Fatalf("weak rotation: %v", err)
	}
	if valid("short") || !valid(keyB) {
		t.Fatal("after a refused rotation: the weak value is valid, or the old one lost its grace")
	}
	now = now.Add(6 * time.Minute)
	if valid(keyB) {
		t.Fatal("old value valid past its grace after a refused rotation")
	}
	must(k.Set(SharedToken, keyC))
	must(k.Set(SharedToken, ""))
	if valid(keyC) || len(k.Values(SharedToken)) != 0 {
		t.Fatal("an emptied Secret leaves a value valid")
	}
	if valid("") {
		t.Fatal("the empty value matches")
	}
}

func TestScopedTokens(t *testing.T) {
	k := &Keyring{}
	if err := k.Set(HookKey, keyA); err != nil {
		t.Fatal(err)
	}
	repo, _ := RepositoryScope("Acme/App")
	org, _ := OrganizationScope("ACME")
	repoTok, orgTok := DeriveToken([]byte(keyA), repo), DeriveToken([]byte(keyA), org)
	if repoTok != "fwh1.repo.acme/app."+repoTok[len("fwh1.repo.acme/app."):] || !strings.HasPrefix(orgTok, "fwh1.org.acme.") {
		t.Fatalf("tokens %q %q", repoTok, orgTok)
	}
	tests := []struct {
		name   string
		token  string
		ok     bool
		covers []string
		not    []string
	}{
		{"repository token", repoTok, true, []string{"acme/app", "ACME/App"}, []string{"acme/app2", "acme/ap", "other/app", "acme"}},
		{"organization token", orgTok, true, []string{"acme/app", "Acme/other"}, []string{"acme2/app", "other/acme", "acme"}},
		{"another key", DeriveToken([]byte(keyB), repo), false, nil, nil},
		{"scope swapped", strings.Replace(repoTok, "acme/app", "acme/ap2", 1), false, nil, nil},
		{"kind swapped", "fwh1.org.acme/app." + repoTok[len("fwh1.repo.acme/app."):], false, nil, nil},
		{"upper-cased scope", strings.Replace(repoTok, "acme/app", "ACME/app", 1), false, nil, nil},
		{"mac cut short", repoTok[:len(repoTok)-1], false, nil, nil},
		{"mac with padding", repoTok + "=", false, nil, nil},
		{"other version", strings.Replace(repoTok, "fwh1.", "fwh2.", 1), false, nil, nil},
		{"path traversal scope", DeriveToken([]byte(keyA), Scope{ScopeRepository, "../x"}), false, nil, nil},
		{"empty", "", false, nil, nil},
		{"the hook key itself", keyA, false, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := k.HookBearer(tt.token)
			if (err == nil) != tt.ok {
				t.Fatalf("HookBearer = %+v, %v", p, err)
			}
			for _, r := range tt.covers {
				if !p.MaySpeakFor(r) {
					t.Errorf("%s may not speak for %s", p, r)
				}
			}
			for _, r := range tt.not {
				if p.MaySpeakFor(r) {
					t.Errorf("%s may speak for %s", p, r)
				}
			}
		})
	}
	// Without a shared token set, no value opens the shared mode.
	if _, err := k.HookBearer(keyA); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("hook key as a bearer: %v", err)
	}
	if err := k.Set(SharedToken, keyC); err != nil {
		t.Fatal(err)
	}
	if p, err := k.HookBearer(keyC); err != nil || p.Kind != Shared || !p.MaySpeakFor("any/repo") {
		t.Fatalf("shared token: %+v %v", p, err)
	}
}

func TestScopesRefuseWhatGiteaRefuses(t *testing.T) {
	for _, s := range []string{"", "acme", "/app", "acme/", "acme/app/x", "acme/..", "a..b/c", "acme/app\n", "acme/ap p",
		strings.Repeat("a", 101) + "/app", "acme/" + strings.Repeat("a", 101), "ac%2fme/app"} {
		if _, err := RepositoryScope(s); err == nil {
			t.Errorf("RepositoryScope(%q) accepted", s)
		}
	}
	for _, s := range []string{"", "acme/app", "..", "ac me", strings.Repeat("a", 101)} {
		if _, err := OrganizationScope(s); err == nil {
			t.Errorf("OrganizationScope(%q) accepted", s)
		}
	}
}

// Any string is at most one principal, and only a token derived under the hook key is a
// scoped one; a token's scope is exactly what it says, and it speaks for nothing outside.
func FuzzHookBearer(f *testing.F) {
	repo, _ := RepositoryScope("acme/app")
	f.Add(DeriveToken([]byte(keyA), repo), "acme/app")
	f.Add("fwh1.repo.acme/app.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "acme/app")
	f.Add("fwh1.org.acme."+strings.Repeat("A", 43), "acme/x")
	f.Add(keyC, "x/y")
	k := &Keyring{}
	if err := k.Set(HookKey, keyA); err != nil {
		f.Fatal(err)
	}
	if err := k.Set(SharedToken, keyC); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token, repository string) {
		p, err := k.HookBearer(token)
		switch {
		case err != nil:
			return
		case p.Kind == Shared:
			if token != keyC {
				t.Fatalf("%q accepted as the shared token", token)
			}
		case p.Kind == Scoped:
			if DeriveToken([]byte(keyA), p.Scope) != token {
				t.Fatalf("%q accepted, but it is not the token of %s", token, p.Scope)
			}
			if p.MaySpeakFor(repository) {
				owner, _, _ := strings.Cut(strings.ToLower(repository), "/")
				if !(p.Scope.Kind == ScopeRepository && strings.EqualFold(repository, p.Scope.Name)) &&
					!(p.Scope.Kind == ScopeOrganization && owner == p.Scope.Name && strings.Contains(repository, "/")) {
					t.Fatalf("%s speaks for %q", p, repository)
				}
			}
		default:
			t.Fatalf("principal %+v", p)
		}
	})
}

// A held rotation keeps the replaced value until Release names the new one, then for Grace;
// never longer than the hold's maximum; a release that comes first, or names another value,
// is handled as each replica may see it.
func TestKeyringHeldRotation(t *testing.T) {
	start := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	now := start
	grace, hold := 5*time.Minute, time.Hour
	newKeyring := func() *Keyring {
		k := &Keyring{Grace: grace, Now: func() time.Time { return now }}
		k.HoldRotation(HookKey, hold)
		if err := k.Set(HookKey, keyA); err != nil {
			t.Fatal(err)
		}
		return k
	}
	valid := func(k *Keyring, v string) bool { return k.Match(HookKey, []byte(v)) }
	fpA, fpB, fpC := Fingerprint([]byte(keyA)), Fingerprint([]byte(keyB)), Fingerprint([]byte(keyC))
	if fpA == fpB || len(fpA) != 12 || strings.Contains(keyA, fpA) {
		t.Fatalf("fingerprints %q %q", fpA, fpB)
	}

	t.Run("released when every copy is written", func(t *testing.T) {
		now = start
		k := newKeyring()
		_ = k.Set(HookKey, keyB)
		now = start.Add(30 * time.Minute) // far past Grace: still held
		if !valid(k, keyA) || !k.Rotation(HookKey).Held {
			t.Fatal("held value refused before its release")
		}
		k.Release(HookKey, fpA) // names the old value: not this rotation's end
		if !k.Rotation(HookKey).Held {
			t.Fatal("a release naming the old value ended the hold")
		}
		k.Release(HookKey, fpB)
		if r := k.Rotation(HookKey); r.Held || r.Previous != fpA || r.Current != fpB || !r.Until.Equal(now.Add(grace)) {
			t.Fatalf("after the release: %+v", r)
		}
		now = now.Add(grace - time.Second)
		if !valid(k, keyA) {
			t.Fatal("replaced value refused within Grace after the release")
		}
		now = now.Add(2 * time.Second)
		if valid(k, keyA) || !valid(k, keyB) {
			t.Fatal("replaced value valid past Grace after the release, or the current one refused")
		}
	})
	t.Run("never longer than the hold", func(t *testing.T) {
		now = start
		k := newKeyring()
		_ = k.Set(HookKey, keyB)
		now = start.Add(hold - time.Second)
		if !valid(k, keyA) {
			t.Fatal("held value refused within the hold")
		}
		now = start.Add(hold + time.Second)
		if valid(k, keyA) {
			t.Fatal("held value valid past the hold's maximum")
		}
	})
	t.Run("release before the change", func(t *testing.T) {
		now = start
		k := newKeyring()
		k.Release(HookKey, fpB) // the leader's record arrived before this replica's Secret
		_ = k.Set(HookKey, keyB)
		now = start.Add(grace + time.Second)
		if valid(k, keyA) || k.Rotation(HookKey).Held {
			t.Fatal("a change already released waited for another release")
		}
	})
	t.Run("a second change before the first is released", func(t *testing.T) {
		now = start
		k := newKeyring()
		_ = k.Set(HookKey, keyB)
		_ = k.Set(HookKey, keyC) // keyA is dropped: one previous value at a time
		if valid(k, keyA) || !valid(k, keyB) {
			t.Fatal("want only the last replaced value valid")
		}
		k.Release(HookKey, fpB) // names the middle value: changes nothing
		now = start.Add(10 * time.Minute)
		if !valid(k, keyB) {
			t.Fatal("a stale release ended the hold")
		}
		k.Release(HookKey, fpC)
		now = now.Add(grace + time.Second)
		if valid(k, keyB) {
			t.Fatal("hold not released")
		}
	})
	t.Run("a refused value is not held", func(t *testing.T) {
		now = start
		k := newKeyring()
		_ = k.Set(HookKey, "short")
		now = start.Add(grace + time.Second)
		if valid(k, keyA) {
			t.Fatal("the value a refused one would have replaced kept valid past Grace")
		}
	})
	t.Run("other purposes keep Grace", func(t *testing.T) {
		now = start
		k := newKeyring()
		_ = k.Set(WebhookKey, keyB)
		_ = k.Set(WebhookKey, keyC)
		now = start.Add(grace + time.Second)
		if k.Match(WebhookKey, []byte(keyB)) {
			t.Fatal("an unheld purpose kept its replaced value past Grace")
		}
	})
}
