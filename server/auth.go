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
//     from the small pool of signed reads, at most a few per client address, and only
//     when that address is not over its budget of failed authentications; a signature over
//     an empty body authenticates nothing (it is one constant per key, replayable to any
//     /hook/<owner>/<repo>), so the short form needs a Bearer token;
//   - anything else is refused at once.
func (s *Server) authHook(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header
		st := requestOf(c)
		if auth := h.Get(echo.HeaderAuthorization); auth != "" {
			tok, ok := credentials.BearerToken(auth)
			if !ok {
				return s.authFailed(c, credentials.ErrUnauthorized)
			}
			p, err := s.Keys.HookBearer(tok)
			if err != nil {
				return s.authFailed(c, err)
			}
			st.principal = p
			return next(c)
		}
		if !s.Forge.Signed(h) {
			return s.authFailed(c, credentials.ErrUnauthorized)
		}
		if err := s.authFailures.check(c.RealIP(), time.Now()); err != nil {
			return err
		}
		done, err := s.signedReads.acquire(c.Request().Context(), clientKey(c.RealIP()), s.lim.inFlightWait)
		if err != nil {
			return err
		}
		// The body of a request nobody vouches for yet gets a short deadline.
		_ = http.NewResponseController(c.Response().Writer).SetReadDeadline(time.Now().Add(s.lim.signedReadTimeout))
		body, err := s.readBody(c, maxBodyBytes)
		done()
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return s.authFailed(c, credentials.ErrUnauthorized)
		}
		p, err := s.Forge.Verify(h, body, s.Keys.Values(credentials.WebhookKey))
		if err != nil {
			return s.authFailed(c, err)
		}
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
			return s.authFailed(c, credentials.ErrUnauthorized)
		}
		if err := s.Keys.Platform(tok); err != nil {
			return s.authFailed(c, err)
		}
		return next(c)
	}
}

// authFailed counts a failed authentication against the client's address: over its budget,
// the answer is 429 instead of 401. A request that authenticates is never limited.
func (s *Server) authFailed(c echo.Context, err error) error {
	if !errors.Is(err, credentials.ErrUnauthorized) {
		return err
	}
	if d, limited := s.authFailures.fail(c.RealIP(), time.Now()); limited {
		return &authLimitedError{RetryAfter: d}
	}
	return err
}

// signedReads bounds the requests read before they are authenticated (those carrying a
// webhook signature): maxSignedReads at once per replica, maxSignedReadsPerClient per
// client address, so strangers trickling bodies hold neither the in-flight slots nor more
// than their share of this pool.
type signedReads struct {
	pool      *slots
	perClient int
	mu        sync.Mutex
	byClient  map[netip.Prefix]int
}

func newSignedReads(max, perClient int) *signedReads {
	return &signedReads{pool: newSlots(max, httpSignedReads), perClient: perClient, byClient: map[netip.Prefix]int{}}
}

// acquire takes a place for one read from client: at once errOverloaded when the client
// holds its share, else waiting up to wait for a place in the pool. done gives it back.
func (r *signedReads) acquire(ctx context.Context, client netip.Prefix, wait time.Duration) (done func(), err error) {
	r.mu.Lock()
	if r.byClient[client] >= r.perClient {
		r.mu.Unlock()
		return nil, errOverloaded
	}
	r.byClient[client]++
	r.mu.Unlock()
	leave := func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.byClient[client]--; r.byClient[client] == 0 {
			delete(r.byClient, client)
		}
	}
	release, err := r.pool.acquire(ctx, wait)
	if err != nil {
		leave()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { release(); leave() }) }, nil
}
