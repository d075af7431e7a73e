package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// RepositoriesAnnotation on a registration Secret grants its cluster the repositories it
// follows besides the public ones: a comma-separated list of "owner/name", "owner/*" (every
// repository of the owner, and its registry's packages) or "*" (every repository). Absent,
// the cluster has Secrets.DefaultGrant; present and empty, public repositories only.
const RepositoriesAnnotation = "flux-webhook.openova.io/repositories"

// ClusterPlaceholder in a default grant stands for the name of the cluster it is given to
// ("{cluster}/*": a cluster registered under an organization's name follows its
// repositories). The annotation takes none: it names what it grants.
const ClusterPlaceholder = "{cluster}"

// Bounds of a grant: far above a platform's hand-kept lists (a vcluster is granted its
// organization, a platform cluster "*"), small enough that a Secret's writer cannot make
// every replica hold or scan much per push.
const (
	// maxGrantBytes bounds the annotation's value (Kubernetes allows 256 KiB of annotations).
	maxGrantBytes = 16 << 10
	// maxGrantEntries bounds its entries: a push is checked against them per cluster.
	maxGrantEntries = 256
	// maxGrantName bounds an owner's or a repository's name: Gitea allows 100 characters.
	maxGrantName = 100
)

// ErrInvalidGrant: a grant is not a list of owner/name, owner/* or *.
var ErrInvalidGrant = errors.New("invalid repository grant")

// Grant is the set of repositories a registered cluster follows besides public ones, in
// lower case (Gitea's names are case-insensitive). The zero Grant grants none.
type Grant struct {
	all    bool
	owners []string // every repository of these owners
	repos  []string // these "owner/name"
}

// ParseGrant parses a grant: entries separated by commas, each "owner/name", "owner/*" or
// "*", optionally surrounded by spaces; owners and names as Gitea allows them (letters,
// digits, '-', '_', '.'; not "." or ".."). An empty (or blank) value grants none; an empty
// entry, anything else or more than the bounds is an error, never a partial grant.
func ParseGrant(value string) (Grant, error) {
	var g Grant
	if len(value) > maxGrantBytes {
		return Grant{}, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidGrant, len(value), maxGrantBytes)
	}
	if strings.Trim(value, " \t") == "" {
		return g, nil
	}
	entries := strings.Split(value, ",")
	if len(entries) > maxGrantEntries {
		return Grant{}, fmt.Errorf("%w: %d entries, more than %d", ErrInvalidGrant, len(entries), maxGrantEntries)
	}
	for i, e := range entries {
		e = strings.Trim(e, " \t")
		owner, name, ok := strings.Cut(e, "/")
		switch {
		case e == "*":
			g.all = true
		case !ok || !grantName(owner) || name != "*" && !grantName(name):
			return Grant{}, fmt.Errorf("%w: entry %d is not owner/name, owner/* or *", ErrInvalidGrant, i+1)
		case name == "*":
			g.owners = append(g.owners, strings.ToLower(owner))
		default:
			g.repos = append(g.repos, strings.ToLower(owner+"/"+name))
		}
	}
	slices.Sort(g.owners)
	slices.Sort(g.repos)
	g.owners, g.repos = slices.Compact(g.owners), slices.Compact(g.repos)
	return g, nil
}

// grantName reports whether s is an owner's or a repository's name as Gitea allows them.
func grantName(s string) bool {
	if s == "" || len(s) > maxGrantName || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Covers reports whether the grant covers repository ("owner/name", any case).
func (g Grant) Covers(repository string) bool {
	if g.all {
		return true
	}
	repository = strings.ToLower(repository)
	owner, _, ok := strings.Cut(repository, "/")
	if !ok {
		return false
	}
	_, found := slices.BinarySearch(g.owners, owner)
	if !found {
		_, found = slices.BinarySearch(g.repos, repository)
	}
	return found
}

// String returns the grant in canonical form (sorted, lower case), "" for none.
func (g Grant) String() string {
	if g.all {
		return "*"
	}
	out := make([]string, 0, len(g.owners)+len(g.repos))
	for _, o := range g.owners {
		out = append(out, o+"/*")
	}
	return strings.Join(append(out, g.repos...), ",")
}

// DefaultGrant returns the grant of a cluster whose Secret has no RepositoriesAnnotation:
// template (a grant, ClusterPlaceholder standing for the cluster's name) for cluster.
func DefaultGrant(template, cluster string) (Grant, error) {
	return ParseGrant(strings.ReplaceAll(template, ClusterPlaceholder, cluster))
}

// CheckDefaultGrant checks a default grant's template, as given to Secrets.DefaultGrant.
func CheckDefaultGrant(template string) error {
	_, err := DefaultGrant(template, "cluster")
	return err
}

// SetGrant sets what a registered cluster follows besides public repositories; it takes
// effect at the next push.
func (c *Cluster) SetGrant(g Grant) { c.grant.Store(&g) }

// Follows reports whether a push of repository is requested and reported in the cluster:
// every push in the local cluster (which has no grant); in a registered one, a push of a
// public repository or of one its grant covers.
func (c *Cluster) Follows(repository string, public bool) bool {
	g := c.grant.Load()
	return g == nil || public || g.Covers(repository)
}

// GrantString returns the cluster's grant in canonical form, "*" for the local cluster.
func (c *Cluster) GrantString() string {
	if g := c.grant.Load(); g != nil {
		return g.String()
	}
	return "*"
}
