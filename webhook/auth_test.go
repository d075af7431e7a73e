package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"testing"
	"time"
)

func sign(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func TestAuthenticate(t *testing.T) {
	body := []byte(`{"ref":"refs/heads/main"}`)
	tokens := &Tokens{}
	tokens.Set("s3cret\n")
	tests := []struct {
		name    string
		headers map[string]string
		ok      bool
	}{
		{"bearer", map[string]string{"Authorization": "Bearer s3cret"}, true},
		{"bearer scheme is case-insensitive", map[string]string{"Authorization": "bearer s3cret"}, true},
		{"gitea signature", map[string]string{HeaderGiteaSignature: sign("s3cret", body)}, true},
		{"hub signature", map[string]string{HeaderHubSignature: "sha256=" + sign("s3cret", body)}, true},
		{"bearer and a stale signature", map[string]string{"Authorization": "Bearer s3cret", HeaderGiteaSignature: sign("old", body)}, true},
		{"no credentials", nil, false},
		{"wrong bearer", map[string]string{"Authorization": "Bearer nope"}, false},
		{"token scheme is not bearer", map[string]string{"Authorization": "token s3cret"}, false},
		{"basic auth", map[string]string{"Authorization": "Basic czNjcmV0Og=="}, false},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, false},
		{"whitespace bearer", map[string]string{"Authorization": "Bearer    "}, false},
		{"bearer with a prefix of the token", map[string]string{"Authorization": "Bearer s3cre"}, false},
		{"signature of another body", map[string]string{HeaderGiteaSignature: sign("s3cret", []byte("other"))}, false},
		{"signature with another key", map[string]string{HeaderGiteaSignature: sign("other", body)}, false},
		{"signature not hex", map[string]string{HeaderGiteaSignature: "zz"}, false},
		{"hub signature without prefix is still checked", map[string]string{HeaderHubSignature: sign("s3cret", body)}, true},
		{"hub signature with another algorithm", map[string]string{HeaderHubSignature: "sha1=" + sign("s3cret", body)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.headers {
				h.Set(k, v)
			}
			err := tokens.Authenticate(h, body)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("got %v, want ErrUnauthorized", err)
			}
		})
	}
}

func TestAuthenticateWithoutToken(t *testing.T) {
	for _, tok := range []string{"", "  \n"} {
		tokens := &Tokens{}
		tokens.Set(tok)
		h := http.Header{"Authorization": {"Bearer "}}
		if err := tokens.Authenticate(h, nil); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("token %q: empty credentials accepted: %v", tok, err)
		}
		// HMAC with an empty key is computable by anyone: it must not pass either.
		h = http.Header{HeaderGiteaSignature: {sign("", []byte("x"))}}
		if err := tokens.Authenticate(h, []byte("x")); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("token %q: empty-key signature accepted: %v", tok, err)
		}
		if tokens.Present() {
			t.Fatalf("token %q reported present", tok)
		}
	}
}

func TestRotationGrace(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tokens := &Tokens{Grace: 5 * time.Minute, Now: func() time.Time { return now }}
	bearer := func(tok string) error {
		return tokens.Authenticate(http.Header{"Authorization": {"Bearer " + tok}}, nil)
	}
	tokens.Set("old")
	tokens.Set("new")
	if err := bearer("new"); err != nil {
		t.Fatalf("new token refused: %v", err)
	}
	now = now.Add(4 * time.Minute)
	if err := bearer("old"); err != nil {
		t.Fatalf("old token refused within grace: %v", err)
	}
	tokens.Set("new") // a resync with the same value does not restart the grace period
	now = now.Add(2 * time.Minute)
	if err := bearer("old"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("old token accepted after grace: %v", err)
	}
	tokens.Set("newest")
	if err := bearer("new"); err != nil {
		t.Fatalf("previous token refused right after rotation: %v", err)
	}
	if err := bearer("old"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("token two rotations old accepted: %v", err)
	}
	tokens.Set("")
	if err := bearer("newest"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("token removed, yet its last value accepted: %v", err)
	}
	if err := bearer("new"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("token removed, yet the previous value accepted: %v", err)
	}
}
