package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/sync/semaphore"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

// Keys is what authenticates requests.
type Keys interface {
	// HookBearer verifies a /hook Bearer token.
	HookBearer(token string) (credentials.Principal, error)
	// Platform verifies a platform API Bearer token.
	Platform(token string) error
	// Values returns the values of a purpose valid now (the webhook key).
	Values(p credentials.Purpose) [][]byte
}

// authHook authenticates a /hook request before it takes any of the replica's room:
//   - a Bearer token is verified from the header alone, before the body is read;
//   - a webhook signature covers the body, so a signed request is read first, but only
//     from the pool of signed reads, a few at a time per client (one at a time from a
//     client over its budget of failed signatures), reserving from the budget of bodies
//     what it has read rather than what it announces; a correct signature always passes. A
//     signature over an empty body authenticates nothing (it is one constant per key,
//     replayable to any /hook/<owner>/<repo>), so the short form needs a Bearer token;
//   - anything else is refused at once.
func (s *Server) authHook(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header
		st := requestOf(c)
		if auth := h.Get(echo.HeaderAuthorization); auth != "" {
			tok, ok := credentials.BearerToken(auth)
			if !ok {
				return s.authFailed(c, bearerCredential, credentials.ErrUnauthorized)
			}
			p, err := s.Keys.HookBearer(tok)
			if err != nil {
				return s.authFailed(c, bearerCredential, err)
			}
			st.principal = p
			return next(c)
		}
		if !s.Forge.Signed(h) {
			return s.authFailed(c, bearerCredential, credentials.ErrUnauthorized)
		}
		limited := s.authFailures.over(signatureCredential, c.RealIP(), time.Now())
		done, err := s.signedReads.acquire(c.Request().Context(), clientKey(c.RealIP()), limited, s.lim.inFlightWait)
		if err != nil {
			return err
		}
		// The body of a request nobody vouches for yet gets a short deadline, and reserves
		// only what it has read, from the share of the bodies' budget unauthenticated
		// reads may hold.
		_ = http.NewResponseController(c.Response().Writer).SetReadDeadline(time.Now().Add(s.lim.signedReadTimeout))
		st.unauthenticated = true
		body, err := s.readBody(c, maxBodyBytes)
		st.unauthenticated = false
		done()
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return s.authFailed(c, signatureCredential, credentials.ErrUnauthorized)
		}
		p, err := s.Forge.Verify(h, body, s.Keys.Values(credentials.WebhookKey))
		if err != nil {
			return s.authFailed(c, signatureCredential, err)
		}
		st.vouched() // its bytes leave the unauthenticated reads' share
		st.principal = p
		return next(c)
	}
}

// authPlatform authenticates a platform API request: a Bearer token only, verified before
// the body is read (a signature over an empty GET body would be a replayable constant).
func (s *Server) authPlatform(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		tok, ok := credentials.BearerToken(c.Request().Header.Get(echo.HeaderAuthorization))
		if !ok {
			return s.authFailed(c, bearerCredential, credentials.ErrUnauthorized)
		}
		if err := s.Keys.Platform(tok); err != nil {
			return s.authFailed(c, bearerCredential, err)
		}
		return next(c)
	}
}

// authFailed counts a failed authentication with a credential of kind against the client:
// over that budget, the answer is 429 instead of 401. A request that authenticates is never
// limited.
func (s *Server) authFailed(c echo.Context, kind credential, err error) error {
	if !errors.Is(err, credentials.ErrUnauthorized) {
		return err
	}
	if d, limited := s.authFailures.fail(kind, c.RealIP(), time.Now()); limited {
		return &authLimitedError{RetryAfter: d}
	}
	return err
}

// signedReads bounds the requests read before they are authenticated (those carrying a
// webhook signature): maxSignedReads at once per replica, maxSignedReadsPerClient per
// client, so strangers trickling bodies hold neither the in-flight slots nor more than their
// share of this pool. A client over its budget of failed signatures reads one at a time: its
// correct signatures still pass, its guesses cost one body at a time.
type signedReads struct {
	pool      *slots
	perClient int64
	mu        sync.Mutex
	byClient  map[netip.Prefix]*clientReads
}

// clientReads are one client's places: a semaphore of perClient, and how many requests use
// or wait for it (the entry goes when none does).
type clientReads struct {
	places *semaphore.Weighted
	users  int
}

func newSignedReads(max, perClient int) *signedReads {
	return &signedReads{pool: newSlots(max, httpSignedReads), perClient: int64(perClient), byClient: map[netip.Prefix]*clientReads{}}
}

// acquire takes a place for one read from client: a plain client gets errOverloaded at once
// when it holds its share; a limited one takes the client's every place, waiting up to wait
// for them; then either waits up to wait for a place in the pool. done gives it back.
func (r *signedReads) acquire(ctx context.Context, client netip.Prefix, limited bool, wait time.Duration) (done func(), err error) {
	r.mu.Lock()
	cr := r.byClient[client]
	if cr == nil {
		cr = &clientReads{places: semaphore.NewWeighted(r.perClient)}
		r.byClient[client] = cr
	}
	cr.users++
	r.mu.Unlock()
	leave := func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if cr.users--; cr.users == 0 {
			delete(r.byClient, client)
		}
	}
	n := int64(1)
	if limited {
		n = r.perClient
		wctx, cancel := context.WithTimeout(ctx, wait)
		err = cr.places.Acquire(wctx, n)
		cancel()
	} else if !cr.places.TryAcquire(n) {
		err = errOverloaded
	}
	if err != nil {
		leave()
		return nil, errOverloaded
	}
	release, err := r.pool.acquire(ctx, wait)
	if err != nil {
		cr.places.Release(n)
		leave()
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			release()
			cr.places.Release(n)
			leave()
		})
	}, nil
}
