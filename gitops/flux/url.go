package flux

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ErrInvalidURL is returned for a repository URL that cannot name a Git repository.
var ErrInvalidURL = errors.New("invalid repository url")

// maxURLLength bounds what NormalizeURL parses: Git hosts, Kubernetes and Gitea all reject
// far shorter URLs, and the value comes from an untrusted payload.
const maxURLLength = 2048

// defaultPorts are dropped during normalization, so "https://host:443/o/r" and
// "https://host/o/r" name the same repository.
var defaultPorts = map[string]string{"http": "80", "https": "443", "ssh": "22", "git": "9418", "oci": "443"}

// NormalizeURL reduces a Git repository URL to "host[:port]/path", the form under which
// GitRepositories are indexed and push payloads are looked up. It drops the scheme, user
// info, default ports, a trailing ".git" and "/", and lower-cases everything: Gitea resolves
// owner and repository names case-insensitively. It accepts the forms Flux accepts
// (http, https, ssh, git; oci for a registry) and the scp-like "git@host:owner/repo.git".
func NormalizeURL(raw string) (string, error) {
	if raw == "" || len(raw) > maxURLLength {
		return "", ErrInvalidURL
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", ErrInvalidURL
	}
	var host, port, path string
	if scpLike(raw) {
		at := strings.LastIndex(raw[:strings.Index(raw, ":")], "@")
		hostPath := raw[at+1:]
		i := strings.Index(hostPath, ":")
		host, path = hostPath[:i], hostPath[i+1:]
	} else {
		u, err := url.Parse(raw)
		if err != nil {
			return "", ErrInvalidURL
		}
		scheme := strings.ToLower(u.Scheme)
		if _, ok := defaultPorts[scheme]; !ok {
			return "", ErrInvalidURL
		}
		if u.Opaque != "" || u.RawQuery != "" || u.Fragment != "" {
			return "", ErrInvalidURL
		}
		host, port, path = u.Hostname(), u.Port(), u.Path
		if port == defaultPorts[scheme] {
			port = ""
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if !validHost(host) {
		return "", ErrInvalidURL
	}
	path = strings.ToLower(strings.Trim(path, "/"))
	path = strings.TrimSuffix(path, ".git")
	path = strings.TrimRight(path, "/")
	if path == "" {
		return "", ErrInvalidURL
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "" || seg == "." || seg == ".." || !validSegment(seg) {
			return "", ErrInvalidURL
		}
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6 literal without a port
	}
	return host + "/" + path, nil
}

// validSegment reports whether a decoded path segment is one a repository's path may hold:
// Gitea's owner and repository names are [A-Za-z0-9_.-] (lower-cased by now); '~' and '+'
// appear on other hosts. Anything else (spaces, '@', control characters, '%', '?', '#',
// non-ASCII) never names a repository a push comes from. (A loop, not a regexp: it runs for
// every URL of every push.)
func validSegment(seg string) bool {
	if seg == "" {
		return false
	}
	for i := range len(seg) {
		if !lowerAlnum(seg[i]) && !strings.ContainsRune("._~+-", rune(seg[i])) {
			return false
		}
	}
	return true
}

// dnsName reports whether h is a DNS name (or IPv4 address), lower-case: labels of letters,
// digits and '-', neither starting nor ending with '-'.
func dnsName(h string) bool {
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := range len(label) {
			if !lowerAlnum(label[i]) && label[i] != '-' {
				return false
			}
		}
	}
	return true
}

func lowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// validHost accepts a DNS name, an IPv4 address or an IPv6 literal (without brackets).
func validHost(h string) bool {
	if strings.Contains(h, ":") {
		ip := net.ParseIP(h)
		return ip != nil && ip.To4() == nil
	}
	return dnsName(h)
}

// scpLike reports whether raw is Git's scp-like syntax "[user@]host:path": no scheme
// separator, and a colon before any slash.
func scpLike(raw string) bool {
	if strings.Contains(raw, "://") {
		return false
	}
	colon := strings.Index(raw, ":")
	slash := strings.Index(raw, "/")
	return colon > 0 && (slash < 0 || colon < slash)
}

// Alias says that repositories under one URL prefix are also reachable under another, e.g.
// Gitea's external URL and its in-cluster Service: a push reporting the first matches
// GitRepositories that fetch through the second.
type Alias struct {
	From, To string // normalized "host[:port][/path]" prefixes
}

// ParseAlias parses "FROM=TO", two Git base URLs (scheme, host, optional port and path).
func ParseAlias(s string) (Alias, error) {
	from, to, ok := strings.Cut(s, "=")
	if !ok {
		return Alias{}, fmt.Errorf("%w: alias %q: want FROM=TO", ErrInvalidURL, s)
	}
	var a Alias
	for i, u := range []string{from, to} {
		n, err := normalizeBase(u)
		if err != nil {
			return Alias{}, fmt.Errorf("%w: alias %q: %q is not a base URL", ErrInvalidURL, s, u)
		}
		if i == 0 {
			a.From = n
		} else {
			a.To = n
		}
	}
	return a, nil
}

// Expand returns the keys a normalized repository key also goes by under the aliases.
func Expand(key string, aliases []Alias) []string {
	out := []string{key}
	for _, a := range aliases {
		if rest, ok := strings.CutPrefix(key, a.From+"/"); ok {
			out = append(out, a.To+"/"+rest)
		}
	}
	return out
}

// normalizeBase normalizes a base URL (scheme, host, optional port and path) the way
// NormalizeURL normalizes a repository URL: "host[:port][/path]".
func normalizeBase(u string) (string, error) {
	n, err := NormalizeURL(strings.TrimSuffix(u, "/") + "/x")
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(n, "/x"), nil
}

// Repositories maps the URL a Flux object fetches from to the forge repository it names
// ("owner/name"): the repository a status about that object may go to. The request record
// names one too; a status goes out only when both agree, so that neither a record nor an
// object alone decides where flux-webhook writes.
type Repositories struct {
	bases []string // normalized: the forge's own base URL and both sides of every alias
}

// NewRepositories returns the mapping for a forge at forgeURL (e.g. Gitea's base URL) and
// the aliases Flux reaches it by.
func NewRepositories(forgeURL string, aliases []Alias) (*Repositories, error) {
	b, err := normalizeBase(forgeURL)
	if err != nil {
		return nil, fmt.Errorf("%w: forge URL %q", ErrInvalidURL, forgeURL)
	}
	r := &Repositories{bases: []string{b}}
	for _, a := range aliases {
		r.bases = append(r.bases, a.From, a.To)
	}
	return r, nil
}

// Of returns the repository rawURL names, false when it is not a repository of the forge.
func (r *Repositories) Of(rawURL string) (string, bool) {
	n, err := NormalizeURL(rawURL)
	if err != nil {
		return "", false
	}
	for _, b := range r.bases {
		if rest, ok := strings.CutPrefix(n, b+"/"); ok && strings.Count(rest, "/") == 1 {
			return rest, true
		}
	}
	return "", false
}
