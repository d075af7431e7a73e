package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/singleflight"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

// Errors of a delivery and of a push's claim, mapped to status codes by the server.
var (
	// ErrBadPayload: the body is not a usable push.
	ErrBadPayload = errors.New("malformed payload")
	// ErrUnsupportedMediaType: the body is of a content type the sender does not send.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
	// ErrContradicted: Gitea says otherwise about the pushed repository, reference or
	// commit. Nothing is requested.
	ErrContradicted = errors.New("gitea contradicts the push")
	// ErrForgeUnavailable: Gitea could not be asked; a retry may succeed.
	ErrForgeUnavailable = errors.New("gitea unavailable")
)

// ErrNotFound: the forge does not know the repository, reference or commit (or does not
// show it to flux-webhook).
var ErrNotFound = errors.New("not found at the forge")

// Repository is what the forge says of a repository.
type Repository struct {
	// FullName is "owner/name" as the forge spells it.
	FullName string
	// URLs are its clone, SSH and web URLs, as the forge's own API reports them.
	URLs []string
	// DefaultBranch is the branch a push naming no reference means.
	DefaultBranch string
	// Public says anyone may read it: the forge says it is neither private nor internal,
	// and its owner is visible to all.
	Public bool
}

// Forge answers what a push claims, from the forge's own API.
type Forge interface {
	Repository(ctx context.Context, fullName string) (*Repository, error)
	// RefCommits returns the objects a full reference points at (ErrNotFound if none).
	RefCommits(ctx context.Context, fullName, ref string) ([]string, error)
	CommitExists(ctx context.Context, fullName, sha string) (bool, error)
	// RecentCommits returns the last n commits of a reference's history, newest first.
	RecentCommits(ctx context.Context, fullName, ref string, n int) ([]string, error)
	// Artifact reads a tag of the forge's registry (ErrNotFound if none); pkg is
	// "owner/name".
	Artifact(ctx context.Context, pkg, tag string) (*Artifact, error)
}

// Requester accepts a verified push: records it, for its reconciles to be requested.
type Requester interface {
	Accept(ctx context.Context, push gitops.Push) (gitops.Result, error)
}

// Limits of claim verification.
const (
	// claimTimeout bounds the Gitea calls that verify one push (at most three, usually
	// none: answers are cached), so that the whole request stays well inside Gitea's 5 s
	// delivery timeout.
	claimTimeout = 2 * time.Second
	// repositoryTTL is how long what Gitea said of a repository is reused: its URLs change
	// only when it is renamed or transferred.
	repositoryTTL = time.Minute
	// verifiedTTL is how long a verified push stays verified: the window in which its
	// repeats (the Actions step and the native webhook of one push, retries, redeliveries)
	// are absorbed anyway.
	verifiedTTL = 5 * time.Minute
	// claimCacheEntries bounds each cache (a few hundred bytes an entry, a few KiB for a
	// reference's recent commits).
	claimCacheEntries = 4096
	// refTTL is how long a look at a reference serves the deliveries that find the commit
	// in it: a burst of pushes and their repeats cost one call. A delivery that does not
	// find its commit looks again.
	refTTL = 2 * time.Second
	// staleDepth is how far back in a reference's history a pushed commit may be when its
	// push is verified after the reference moved on (a delivery late behind the next push):
	// one page of Gitea's commit list. Older is no push flux-webhook believes.
	staleDepth = 50
)

// Intake decides whether a push may be acted on, then hands it to the requester: the
// sender's credential speaks for the pushed repository, the payload agrees with itself, and
// Gitea confirms the repository's URLs and that the reference is at the pushed commit, or
// was (the commit is in the reference's recent history: a later push moved it on before this
// delivery was verified). Such a stale push is handed over with Head set: it is recorded as
// superseded by Head, and not requested.
type Intake struct {
	// Forge, when set, is asked to confirm every claim; nil trusts a consistent payload
	// (only with --verify-claims=false).
	Forge     Forge
	Requester Requester
	// Repositories maps the source an OCI artifact records to the forge's repository;
	// nil: none is believed (its results go to the stream and the logs only).
	Repositories *flux.Repositories
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	once     sync.Once
	repos    *lru.Cache // lower-case full name → cachedRepo
	verified *lru.Cache // claimKey → verifiedClaim
	mu       sync.Mutex
	refs     map[string]refLook // lower-case full name and reference → the last look
	flight   singleflight.Group
}

type cachedRepo struct {
	info *Repository
	at   time.Time
}

type claimKey struct{ repository, ref, sha string }

// Accepted is what became of a push.
type Accepted struct {
	// Push is the push as verified: the repository as Gitea spells it, with Gitea's URLs.
	Push gitops.Push
	// Ignored, when set, says why nothing was requested.
	Ignored string
	Result  gitops.Result
}

func (in *Intake) init() {
	in.once.Do(func() {
		in.repos, in.verified = lru.New(claimCacheEntries), lru.New(claimCacheEntries)
		in.refs = map[string]refLook{}
	})
}

func (in *Intake) now() time.Time {
	if in.Now != nil {
		return in.Now()
	}
	return time.Now()
}

// Accept verifies the push p claims on behalf of principal and requests its reconciles.
func (in *Intake) Accept(ctx context.Context, principal credentials.Principal, p gitops.Push) (Accepted, error) {
	in.init()
	p.Public = false // the forge's answer alone says so (verify)
	if p.OCI != nil {
		return in.acceptOCI(ctx, principal, p)
	}
	if !principal.MaySpeakFor(p.Repository) {
		return Accepted{}, fmt.Errorf("%w: a %s may not push for %s", credentials.ErrForbidden, principal, p.Repository)
	}
	if err := consistent(p); err != nil {
		return Accepted{}, err
	}
	if in.Forge != nil {
		vctx, cancel := context.WithTimeout(ctx, claimTimeout)
		ignored, err := in.verify(vctx, &p)
		cancel()
		if err != nil || ignored != "" {
			return Accepted{Push: p, Ignored: ignored}, err
		}
	}
	res, err := in.Requester.Accept(ctx, p)
	return Accepted{Push: p, Result: res}, err
}

// consistent checks that every URL of the payload names the repository full_name names:
// a payload naming one repository and pointing at another is no push at all.
func consistent(p gitops.Push) error {
	want := "/" + strings.ToLower(p.Repository)
	for _, u := range p.URLs {
		k, err := flux.NormalizeURL(u)
		if err != nil {
			continue // never matched against anything
		}
		_, path, _ := strings.Cut(k, "/")
		if !strings.HasSuffix("/"+path, want) {
			return fmt.Errorf("%w: repository URL %q does not name %s", ErrBadPayload, Clip(u, 100), p.Repository)
		}
	}
	return nil
}

// verify asks the forge about p's claim. On success p holds the repository as the forge
// spells it and the forge's URLs, and Head when the reference has moved on since the push.
// A push of a reference that no longer exists is not an error: ignored says so.
func (in *Intake) verify(ctx context.Context, p *gitops.Push) (ignored string, err error) {
	logger := log.FromContext(ctx)
	info, err := in.repository(ctx, p.Repository)
	if err != nil {
		return "", err
	}
	var theirs []string
	for _, u := range info.URLs {
		if k, err := flux.NormalizeURL(u); err == nil {
			theirs = append(theirs, k)
		}
	}
	for _, u := range p.URLs {
		if k, err := flux.NormalizeURL(u); err == nil && !slices.Contains(theirs, k) {
			return "", fmt.Errorf("%w: %s is not at %q", ErrContradicted, info.FullName, Clip(u, 100))
		}
	}
	p.Repository, p.URLs, p.Public = info.FullName, info.URLs, info.Public
	key := claimKey{strings.ToLower(p.Repository), p.Ref, p.SHA}
	if v, ok := in.verified.Get(key); ok && in.now().Sub(v.(verifiedClaim).at) < verifiedTTL {
		p.Head = v.(verifiedClaim).head
		return "", nil
	}
	// Where the reference is: from a look at most refTTL old when it shows the commit (a
	// burst of deliveries shares one call), else looked at again, since it may have moved
	// to the commit since.
	st, err := in.refState(ctx, p.Repository, p.Ref, refTTL)
	if err == nil && !slices.Contains(st.commits, p.SHA) {
		st, err = in.refState(ctx, p.Repository, p.Ref, 0)
	}
	switch {
	case err != nil:
		return "", unavailable(err)
	case slices.Contains(st.commits, p.SHA):
		in.verified.Add(key, verifiedClaim{at: in.now()})
		return "", nil
	case !st.missing:
		// The reference is elsewhere: was it at the pushed commit before a later push?
		recent, err := in.recentCommits(ctx, p.Repository, p.Ref, refTTL)
		if err == nil && !slices.Contains(recent, p.SHA) {
			recent, err = in.recentCommits(ctx, p.Repository, p.Ref, 0)
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return "", unavailable(err)
		}
		if slices.Contains(recent, p.SHA) {
			head := st.commits[len(st.commits)-1] // a tag's commit, after its tag object
			logger.Info("push superseded before it arrived: recorded, not requested", "head", head)
			p.Head = head
			in.verified.Add(key, verifiedClaim{at: in.now(), head: head})
			return "", nil
		}
	}
	exists, err := in.Forge.CommitExists(ctx, p.Repository, p.SHA)
	switch {
	case err != nil:
		return "", unavailable(err)
	case !exists:
		return "", fmt.Errorf("%w: %s has no commit %s", ErrContradicted, p.Repository, p.SHA)
	case st.missing:
		logger.Info("push ignored: its reference no longer exists")
		return fmt.Sprintf("%s no longer exists in %s", p.Ref, p.Repository), nil
	}
	return "", fmt.Errorf("%w: %s is not among the last %d commits of %s in %s", ErrContradicted, p.SHA, staleDepth, p.Ref, p.Repository)
}

// refLook is what the forge said of a reference, and when.
type refLook struct {
	commits []string // what it points at
	missing bool     // it does not exist
	recent  []string // its last staleDepth commits, when asked
	at      time.Time
}

// refState returns where a reference points, from a look at most maxAge old (0: a new
// look). Concurrent looks at one reference share one call.
func (in *Intake) refState(ctx context.Context, repository, ref string, maxAge time.Duration) (refLook, error) {
	key := strings.ToLower(repository) + "\x00" + ref
	if l, ok := in.cachedRef(key, maxAge, false); ok {
		return l, nil
	}
	v, err, _ := in.flight.Do("ref\x00"+key, func() (any, error) {
		commits, err := in.Forge.RefCommits(ctx, repository, ref)
		l := refLook{commits: commits, at: in.now()}
		switch {
		case errors.Is(err, ErrNotFound):
			l.missing = true
		case err != nil:
			return refLook{}, err
		}
		in.storeRef(key, l)
		return l, nil
	})
	return v.(refLook), err
}

// recentCommits returns a reference's last staleDepth commits, from a look at most maxAge
// old (0: a new look); concurrent looks share one call.
func (in *Intake) recentCommits(ctx context.Context, repository, ref string, maxAge time.Duration) ([]string, error) {
	key := strings.ToLower(repository) + "\x00" + ref
	if l, ok := in.cachedRef(key, maxAge, true); ok {
		return l.recent, nil
	}
	v, err, _ := in.flight.Do("recent\x00"+key, func() (any, error) {
		recent, err := in.Forge.RecentCommits(ctx, repository, ref, staleDepth)
		if err != nil {
			return []string(nil), err
		}
		in.mu.Lock()
		l := in.refs[key]
		l.recent, l.at = recent, in.now()
		in.refs[key] = l
		in.mu.Unlock()
		return recent, nil
	})
	return v.([]string), err
}

func (in *Intake) cachedRef(key string, maxAge time.Duration, recent bool) (refLook, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	l, ok := in.refs[key]
	if !ok || maxAge == 0 || in.now().Sub(l.at) > maxAge || (recent && l.recent == nil) {
		return refLook{}, false
	}
	return l, true
}

func (in *Intake) storeRef(key string, l refLook) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.refs) >= claimCacheEntries {
		clear(in.refs) // a burst over thousands of references: start over
	}
	l.recent = nil
	in.refs[key] = l
}

// verifiedClaim is a push Gitea confirmed: head is set when the reference had moved on.
type verifiedClaim struct {
	at   time.Time
	head string
}

// repository returns what the forge says of a repository a push names: ErrContradicted
// when it has none by that name.
func (in *Intake) repository(ctx context.Context, fullName string) (*Repository, error) {
	info, err := in.forgeRepository(ctx, fullName)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%w: no repository %s", ErrContradicted, fullName)
	case err != nil:
		return nil, err
	case !strings.EqualFold(info.FullName, fullName):
		// A renamed repository answers under its new name (Gitea redirects the old one):
		// the push names the old one. The new name is not said: a token of the old name
		// may be held by whoever was no longer meant to know where it went.
		return nil, fmt.Errorf("%w: %s", ErrContradicted, RenamedAway(fullName))
	}
	return info, nil
}

// RenamedAway says that Gitea has no repository fullName under that name any more, without
// the name it now has.
func RenamedAway(fullName string) string {
	return fmt.Sprintf("gitea has no repository %s under that name (a renamed or transferred repository answers only under its new name: a token is made for one name)", fullName)
}

// forgeRepository returns what the forge says of a repository (ErrNotFound: nothing),
// cached for repositoryTTL; concurrent looks share one call.
func (in *Intake) forgeRepository(ctx context.Context, fullName string) (*Repository, error) {
	key := strings.ToLower(fullName)
	if v, ok := in.repos.Get(key); ok && in.now().Sub(v.(cachedRepo).at) < repositoryTTL {
		return v.(cachedRepo).info, nil
	}
	v, err, _ := in.flight.Do("repo\x00"+key, func() (any, error) { return in.Forge.Repository(ctx, fullName) })
	info, _ := v.(*Repository)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, err
	case err != nil:
		return nil, unavailable(err)
	}
	in.repos.Add(key, cachedRepo{info, in.now()})
	return info, nil
}

// unavailable wraps a failure to ask the forge.
func unavailable(err error) error { return fmt.Errorf("%w: %w", ErrForgeUnavailable, err) }

// Clip shortens s to at most n characters, marking the cut.
func Clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
