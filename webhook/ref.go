package webhook

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxRefLength bounds a Git reference flux-webhook believes, from a push event, a path or an
// artifact's revision: Git itself has no hard limit, Gitea's database column is 255.
const MaxRefLength = 255

// ValidRef reports whether ref is a full reference Git accepts (git check-ref-format's
// rules) of at most MaxRefLength bytes, and is fit for a log line and a commit status: no
// control or invisible formatting characters (bidirectional overrides, zero-width
// characters). Other Unicode is allowed, as Git and Gitea allow it in branch names.
func ValidRef(ref string) bool {
	if len(ref) > MaxRefLength || !strings.HasPrefix(ref, "refs/") || !utf8.ValidString(ref) ||
		strings.HasSuffix(ref, "/") || strings.HasSuffix(ref, ".") ||
		strings.Contains(ref, "..") || strings.Contains(ref, "@{") {
		return false
	}
	if strings.ContainsFunc(ref, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune(`~^:?*[\`, r) || r == utf8.RuneError ||
			unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || !unicode.IsPrint(r)
	}) {
		return false
	}
	for _, c := range strings.Split(ref, "/") {
		if c == "" || strings.HasPrefix(c, ".") || strings.HasSuffix(c, ".lock") {
			return false
		}
	}
	return true
}

// ValidRefName reports whether name is a reference as Flux revisions and short forms give
// them: a full reference ("refs/heads/main") or a branch or tag name ("main", "v1.2.3"), each
// as ValidRef checks it.
func ValidRefName(name string) bool {
	if strings.HasPrefix(name, "refs/") {
		return ValidRef(name)
	}
	return len(name) <= MaxRefLength && ValidRef("refs/heads/"+name) && ValidRef("refs/tags/"+name)
}
