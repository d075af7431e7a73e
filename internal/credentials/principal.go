package credentials

import (
	"errors"
	"strings"
)

// ErrUnauthorized: no credentials, or none that verify. Callers answer both the same way.
var ErrUnauthorized = errors.New("unauthorized")

// ErrForbidden: the credentials verify, but do not speak for what the request names.
var ErrForbidden = errors.New("forbidden")

// PrincipalKind says how a request authenticated.
type PrincipalKind string

// The ways a /hook request authenticates, from the narrowest.
const (
	// Scoped: a scoped token (DeriveToken); Scope says for what.
	Scoped PrincipalKind = "scoped token"
	// Webhook: the signature of a native Gitea webhook, made with the webhook key Gitea holds.
	Webhook PrincipalKind = "webhook signature"
	// Shared: the compatibility shared token, which speaks for every repository.
	Shared PrincipalKind = "shared token"
)

// Principal is who a /hook request speaks as.
type Principal struct {
	Kind  PrincipalKind
	Scope Scope // for Scoped
}

// MaySpeakFor reports whether the principal may claim a push to fullName ("owner/name").
// Every claim is still checked against Gitea; this only bounds whose claims a holder can
// make at all.
func (p Principal) MaySpeakFor(fullName string) bool {
	switch p.Kind {
	case Scoped:
		return p.Scope.Covers(fullName)
	case Webhook, Shared:
		return true
	}
	return false
}

// String names the principal for logs: the kind, and the scope of a scoped token (never a
// secret).
func (p Principal) String() string {
	if p.Kind == Scoped {
		return string(p.Kind) + " for " + p.Scope.String()
	}
	return string(p.Kind)
}

// HookBearer verifies the Bearer token of a /hook request: a scoped token under the hook
// key, or, only when the operator enabled it, the shared token.
func (k *Keyring) HookBearer(token string) (Principal, error) {
	if s, sum, ok := parseToken(token); ok {
		valid := false
		for _, key := range k.Values(HookKey) {
			valid = hmacEqual(mac(key, s), sum) || valid
		}
		if valid {
			return Principal{Kind: Scoped, Scope: s}, nil
		}
		return Principal{}, ErrUnauthorized
	}
	if k.Match(SharedToken, []byte(token)) {
		return Principal{Kind: Shared}, nil
	}
	return Principal{}, ErrUnauthorized
}

// Platform verifies the Bearer token of a platform API request.
func (k *Keyring) Platform(token string) error {
	if k.Match(PlatformToken, []byte(token)) {
		return nil
	}
	return ErrUnauthorized
}

// BearerToken returns the token of an "Authorization: Bearer" header value (the scheme
// matched case-insensitively, as RFC 9110 says); ok is false for any other scheme.
func BearerToken(authorization string) (string, bool) {
	scheme, tok, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
