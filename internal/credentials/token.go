package credentials

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// A scoped token is what a Gitea Actions workflow presents as its Bearer token on /hook:
//
//	fwh1.repo.<owner>/<name>.<mac>   speaks for one repository
//	fwh1.org.<owner>.<mac>           speaks for every repository of one owner
//
// where <mac> is the unpadded base64url HMAC-SHA256, under the hook key, of the token's
// version, kind and lower-cased scope. The scope is readable (an operator can tell which
// token a secret holds) and verified before the request body is read; that the pushed
// repository is inside it is checked once the body is decoded. Holding one token gives no
// way to compute another: that needs the hook key, which only flux-webhook holds.
const tokenPrefix = "fwh1."

// macLength is the length of a token's encoded MAC: 32 bytes of base64url without padding.
var macLength = base64.RawURLEncoding.EncodedLen(sha256.Size)

// ScopeKind says what a scoped token speaks for.
type ScopeKind string

const (
	// ScopeRepository: one repository, "owner/name".
	ScopeRepository ScopeKind = "repo"
	// ScopeOrganization: every repository of one owner (organization or user), "owner".
	ScopeOrganization ScopeKind = "org"
)

// Scope is what a scoped token speaks for.
type Scope struct {
	Kind ScopeKind
	// Name is the lower-cased "owner/name" (ScopeRepository) or "owner" (ScopeOrganization):
	// Gitea resolves both case-insensitively.
	Name string
}

func (s Scope) String() string { return string(s.Kind) + " " + s.Name }

// ErrBadScope: not a repository's "owner/name" or an owner's name.
var ErrBadScope = errors.New("invalid scope")

// maxNameLength: Gitea allows 100 characters per owner and per repository name.
const maxNameLength = 100

// namePattern is Gitea's owner and repository name alphabet.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// validName reports whether s is a name Gitea accepts for an owner or a repository.
func validName(s string) bool {
	return len(s) <= maxNameLength && namePattern.MatchString(s) && s != "." && s != ".." &&
		!strings.Contains(s, "..")
}

// RepositoryScope returns the scope of one repository, "owner/name".
func RepositoryScope(fullName string) (Scope, error) {
	owner, name, ok := strings.Cut(fullName, "/")
	if !ok || !validName(owner) || !validName(name) {
		return Scope{}, fmt.Errorf("%w: %q is not owner/name", ErrBadScope, fullName)
	}
	return Scope{ScopeRepository, strings.ToLower(fullName)}, nil
}

// OrganizationScope returns the scope of every repository of one owner.
func OrganizationScope(owner string) (Scope, error) {
	if !validName(owner) {
		return Scope{}, fmt.Errorf("%w: %q is not an owner's name", ErrBadScope, owner)
	}
	return Scope{ScopeOrganization, strings.ToLower(owner)}, nil
}

// Covers reports whether the scope includes the repository fullName ("owner/name",
// compared case-insensitively, as Gitea does).
func (s Scope) Covers(fullName string) bool {
	fullName = strings.ToLower(fullName)
	switch s.Kind {
	case ScopeRepository:
		return fullName == s.Name
	case ScopeOrganization:
		owner, _, ok := strings.Cut(fullName, "/")
		return ok && owner == s.Name
	}
	return false
}

// mac computes a scoped token's MAC under key.
func mac(key []byte, s Scope) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("flux-webhook hook token v1\x00" + string(s.Kind) + "\x00" + s.Name))
	return m.Sum(nil)
}

// DeriveToken returns the token of scope s under the hook key.
func DeriveToken(hookKey []byte, s Scope) string {
	return tokenPrefix + string(s.Kind) + "." + s.Name + "." + base64.RawURLEncoding.EncodeToString(mac(hookKey, s))
}

// parseToken splits a scoped token into its scope and MAC; ok is false for anything that
// is not one.
func parseToken(tok string) (Scope, []byte, bool) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return Scope{}, nil, false
	}
	kind, rest, ok := strings.Cut(rest, ".")
	i := strings.LastIndexByte(rest, '.')
	if !ok || i < 0 || len(rest)-i-1 != macLength {
		return Scope{}, nil, false
	}
	sum, err := base64.RawURLEncoding.DecodeString(rest[i+1:])
	if err != nil {
		return Scope{}, nil, false
	}
	var s Scope
	switch ScopeKind(kind) {
	case ScopeRepository:
		s, err = RepositoryScope(rest[:i])
	case ScopeOrganization:
		s, err = OrganizationScope(rest[:i])
	default:
		return Scope{}, nil, false
	}
	// The scope is written lower-case: a token is exactly what DeriveToken printed.
	if err != nil || s.Name != rest[:i] {
		return Scope{}, nil, false
	}
	return s, sum, true
}
