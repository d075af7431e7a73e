package gitea

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/openova-io/flux-webhook/webhook"
)

// The short form of a delivery, what the platform's documentation tells workflows to send:
// POST /hook/<owner>/<repo>[/<ref>][?sha=<commit>] with no body. The path names the
// repository and reference as strictly as a push event's full_name and ref.

// maxTargetPath bounds the path after /hook/ as sent: a repository's full name and a
// reference at their longest, every byte percent-escaped.
const maxTargetPath = 3 * (maxNameLength + 1 + webhook.MaxRefLength)

// tokenPrefix begins flux-webhook's scoped tokens (fwh1.repo.<owner>/<name>.<mac>,
// fwh1.org.<owner>.<mac>): a path segment beginning with it holds one, put there by a
// confused sender, and is refused before anything of it can reach an answer or a log.
const tokenPrefix = "fwh1."

// Target reads what a request names instead of a push event: the path after /hook/ as sent
// (rawPath, percent-escapes undecoded; "" for /hook itself) and the query's sha, which pins
// the commit (40 or 64 lower-case hex digits, given once).
func (Events) Target(rawPath string, query url.Values) (webhook.Target, error) {
	var t webhook.Target
	if rawPath != "" {
		var err error
		if t, err = ParseTarget(rawPath); err != nil {
			return webhook.Target{}, err
		}
	}
	switch shas := query["sha"]; {
	case len(shas) > 1:
		return webhook.Target{}, fmt.Errorf("%w: sha given more than once", webhook.ErrBadTarget)
	case len(shas) == 1 && (!shaPattern.MatchString(shas[0]) || zeroSHA.MatchString(shas[0])):
		return webhook.Target{}, fmt.Errorf("%w: sha is not a commit id: want 40 or 64 lower-case hex digits", webhook.ErrBadTarget)
	case len(shas) == 1:
		t.SHA = shas[0]
	}
	return t, nil
}

// ParseTarget reads the path after /hook/ as sent (percent-escapes undecoded):
// <owner>/<repo>[/<ref>], the reference a branch or tag name or a full "refs/..." one (which
// may hold slashes). Each segment is percent-decoded once, after the path is split at its
// slashes. It is as strict as a push event's full_name and ref (Gitea's names, Git's
// check-ref-format, the same length bounds), and refuses whatever another reader of the path
// could take differently: empty, "." and ".." segments, spaces, control characters and
// backslashes, invalid escapes, and escapes of '/', '.', '%', '\', a space or a control
// character (an escaped slash would make one segment two once decoded, an escaped dot a
// traversal, an escaped '%' a second decoding).
func ParseTarget(raw string) (webhook.Target, error) {
	bad := func(why string) (webhook.Target, error) {
		return webhook.Target{}, fmt.Errorf("%w: %s: want /hook/<owner>/<repo>[/<branch, tag or refs/...>]", webhook.ErrBadTarget, why)
	}
	if len(raw) > maxTargetPath {
		return bad(fmt.Sprintf("path over %d bytes", maxTargetPath))
	}
	segs := strings.Split(raw, "/")
	dec := make([]string, len(segs))
	for i, s := range segs {
		switch s {
		case "":
			return bad("an empty path segment")
		case ".", "..":
			return bad("a dot segment")
		}
		d, err := unescapeSegment(s)
		if err != nil {
			return bad(err.Error())
		}
		if len(d) >= len(tokenPrefix) && strings.EqualFold(d[:len(tokenPrefix)], tokenPrefix) {
			return bad("the path holds a flux-webhook token: send it only as Authorization: Bearer, and rotate it (paths are logged by proxies)")
		}
		dec[i] = d
	}
	if len(dec) < 2 {
		return bad("no repository")
	}
	full := dec[0] + "/" + dec[1]
	if !validFullName(full) {
		return bad("no repository owner/name")
	}
	ref := strings.Join(dec[2:], "/")
	switch {
	case ref == "":
	case strings.HasPrefix(ref, "refs/"):
		if !webhook.ValidRef(ref) {
			return bad("the reference is not a full Git reference")
		}
	case !webhook.ValidRefName(ref):
		return bad("the reference is not a branch or tag name")
	}
	return webhook.Target{Repository: full, Ref: ref}, nil
}

// unescapeSegment percent-decodes one path segment, refusing what could change its meaning
// to another reader (see ParseTarget).
func unescapeSegment(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c <= ' ' || c == 0x7f || c == '\\':
			return "", errors.New("a space, control character or backslash")
		case c != '%':
			b.WriteByte(c)
		case i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]):
			return "", errors.New("an invalid percent-escape")
		default:
			d := unhex(s[i+1])<<4 | unhex(s[i+2])
			if d <= ' ' || d == 0x7f || strings.IndexByte(`/.%\`, d) >= 0 {
				return "", errors.New(`a percent-escaped '/', '.', '%', '\', space or control character`)
			}
			b.WriteByte(d)
			i += 2
		}
	}
	return b.String(), nil
}
