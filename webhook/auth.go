package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ErrUnauthorized: no credentials, or none that verify. Callers answer both the same way.
var ErrUnauthorized = errors.New("unauthorized")

// Headers a sender authenticates with.
const (
	HeaderGiteaSignature = "X-Gitea-Signature"   // hex HMAC-SHA256 of the raw body
	HeaderHubSignature   = "X-Hub-Signature-256" // "sha256=" + hex HMAC-SHA256
)

// Tokens is a shared secret that can rotate: after Set with a new value, the previous one
// stays valid for the grace period so that senders caught mid-rotation still get through.
// With no token set, nothing authenticates.
type Tokens struct {
	// Grace is how long a replaced token stays valid.
	Grace time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu            sync.RWMutex
	current       []byte
	previous      []byte
	previousUntil time.Time
}

func (t *Tokens) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Set makes token the current value. Surrounding whitespace is dropped (a Secret written
// by hand often ends with a newline). An empty value means no token at all: every request
// is refused, the previous token included, until a token is set again.
func (t *Tokens) Set(token string) {
	v := []byte(strings.TrimSpace(token))
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(v) == 0 {
		t.current, t.previous = nil, nil
		return
	}
	if subtle.ConstantTimeCompare(v, t.current) == 1 {
		return
	}
	if len(t.current) > 0 {
		t.previous, t.previousUntil = t.current, t.now().Add(t.Grace)
	}
	t.current = v
}

// Present reports whether a token is set.
func (t *Tokens) Present() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.current) > 0
}

// valid returns the tokens that authenticate now.
func (t *Tokens) valid() [][]byte {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out [][]byte
	if len(t.current) > 0 {
		out = append(out, t.current)
	}
	if len(t.previous) > 0 && t.now().Before(t.previousUntil) {
		out = append(out, t.previous)
	}
	return out
}

// Authenticate accepts a request that carries any one of: "Authorization: Bearer <token>",
// X-Gitea-Signature, or X-Hub-Signature-256 over body, each checked against every valid
// token in constant time. It returns ErrUnauthorized otherwise.
func (t *Tokens) Authenticate(h http.Header, body []byte) error {
	keys := t.valid()
	if len(keys) == 0 {
		return ErrUnauthorized
	}
	ok := false
	if bearer, found := bearerToken(h); found {
		for _, k := range keys {
			ok = subtle.ConstantTimeCompare([]byte(bearer), k) == 1 || ok
		}
	}
	for _, sig := range []string{h.Get(HeaderGiteaSignature), strings.TrimPrefix(h.Get(HeaderHubSignature), "sha256=")} {
		want, err := hex.DecodeString(sig)
		if sig == "" || err != nil || len(want) != sha256.Size {
			continue
		}
		for _, k := range keys {
			mac := hmac.New(sha256.New, k)
			mac.Write(body)
			ok = hmac.Equal(mac.Sum(nil), want) || ok
		}
	}
	if !ok {
		return ErrUnauthorized
	}
	return nil
}

// bearerToken returns the token of an "Authorization: Bearer" header (scheme matched
// case-insensitively, as RFC 9110 says).
func bearerToken(h http.Header) (string, bool) {
	scheme, tok, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
