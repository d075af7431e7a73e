// Package server is flux-webhook's HTTP surface: POST /hook, and on an address of its own the
// platform API. Requests are authenticated before they take any of the replica's room;
// handlers decode, call one domain function and encode; one error handler maps the domain's
// sentinel errors to status codes. It knows HTTP only: what a push means, and whether it is
// true, is the domain's.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook"
)

var (
	_ manager.LeaderElectionRunnable = (*Server)(nil)
	_ manager.Runnable               = (*Server)(nil)

	// errBodyTimeout: the body did not arrive within readTimeout.
	errBodyTimeout = errors.New("request body not received in time")

	httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_webhook_http_requests_total",
		Help: "HTTP requests served, by route and status code.",
	}, []string{"route", "code"})
	httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flux_webhook_http_request_duration_seconds",
		Help:    "Time to answer HTTP requests, by route.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
)

func init() { metrics.Registry.MustRegister(httpRequests, httpDuration) }

// Forge is the sender of deliveries, as /hook reads a request: how it names a delivery,
// which requests carry its webhook signature and how that is verified, and how a delivery
// decodes into the push it claims.
type Forge interface {
	// Delivery returns the delivery id the sender gave, "" when none.
	Delivery(h http.Header) string
	// Signed reports whether a request carries a webhook signature.
	Signed(h http.Header) bool
	// Verify checks a signed request's signature over its body, with the webhook keys.
	Verify(h http.Header, body []byte, keys [][]byte) (credentials.Principal, error)
	// Decode turns a delivery into the push it claims, or says why it is ignored.
	Decode(h http.Header, body []byte, delivery string) (push gitops.Push, ignored string, err error)
	// Target reads what a request names in its path after /hook/ (as sent, escapes
	// undecoded; "" for none) and its query: the short form's repository, reference and
	// commit.
	Target(rawPath string, query url.Values) (webhook.Target, error)
}

// Intake is the domain call behind /hook: verify a push's claim and request its reconciles.
// Resolve first turns the short form's target into the push it stands for.
type Intake interface {
	Accept(ctx context.Context, p credentials.Principal, push gitops.Push) (webhook.Accepted, error)
	Resolve(ctx context.Context, p credentials.Principal, delivery string, t webhook.Target) (gitops.Push, error)
}

// Awaiter streams the targets' final answers, for /hook?wait=true.
type Awaiter interface {
	Await(ctx context.Context, push gitops.Push, res gitops.Result, timeout time.Duration) <-chan api.TargetResult
}

// Platform is the domain behind /api/v1/reconcile.
type Platform interface {
	Reconcile(ctx context.Context, sel api.Selector) (*api.JobStatus, error)
	Status(ctx context.Context, id string) (*api.JobStatus, error)
}

// Server serves /hook and, on its own address, the platform API. It is a controller-runtime
// Runnable that serves on every replica and stops with the manager.
type Server struct {
	// Addr is the listen address of /hook, e.g. ":8080"; Listener, when set, is used
	// instead (tests).
	Addr     string
	Listener net.Listener
	// PlatformAddr (or PlatformListener) is where the platform API is served, apart from
	// /hook so that a NetworkPolicy can admit each from its own senders. Only with Platform.
	PlatformAddr     string
	PlatformListener net.Listener
	// TrustedProxies are the addresses of the proxies in front (an ingress controller, a
	// Gateway's Envoy): a request from one of them is the client's that X-Forwarded-For
	// names, as those proxies write it (clientAddress). Empty: the TCP peer is the client.
	TrustedProxies []netip.Prefix
	// Keys authenticates requests; Forge reads the deliveries of /hook.
	Keys    Keys
	Forge   Forge
	Intake  Intake
	Awaiter Awaiter
	// Platform serves /api/v1/reconcile; without it the platform API is not served.
	Platform Platform
	Log      logr.Logger

	once     sync.Once
	hook     *echo.Echo
	platform *echo.Echo
	// stopping is closed when the server starts shutting down: waiting streams end then.
	stopping     chan struct{}
	stoppingOnce sync.Once
	lim          limits // zero: the constants of limits.go; tests shorten them
	// inFlight and waiting count requests being handled and open waiting streams; bodyBytes
	// is the budget of their bodies; signedReads the requests read before authentication.
	inFlight, waiting *slots
	bodyBytes         *semaphore.Weighted
	signedReads       *signedReads
	// signedBodyBytes is the share of bodyBytes the requests read before they are
	// authenticated may hold together.
	signedBodyBytes *semaphore.Weighted
	// authFailures counts failed authentications per client address.
	authFailures *authLimiter
	// deliveries keeps the answers of recent deliveries, to answer a repeat the same way.
	deliveries *lru[deliveryID, answer]
}

// NeedLeaderElection is false: every replica serves /hook.
func (s *Server) NeedLeaderElection() bool { return false }

// init builds the routers and guards once.
func (s *Server) init() {
	s.once.Do(func() {
		s.lim = s.lim.withDefaults()
		s.stopping = make(chan struct{})
		s.inFlight = newSlots(s.lim.maxInFlight, httpInFlight)
		s.waiting = newSlots(s.lim.maxWaiting, httpWaiting)
		s.bodyBytes = semaphore.NewWeighted(s.lim.maxBodyBytesInFlight)
		s.signedReads = newSignedReads(s.lim.maxSignedReads, s.lim.maxSignedReadsPerClient)
		s.signedBodyBytes = semaphore.NewWeighted(s.lim.maxSignedBodyBytes)
		s.authFailures = newAuthLimiter(s.lim)
		s.deliveries = newLRU[deliveryID, answer](s.lim.deliveryCacheBytes, s.lim.deliveryWindow, nil)
		s.hook = s.newEcho()
		// Authentication comes before any of the replica's room is taken (limitInFlight).
		s.hook.POST("/hook", s.handleHook, s.authHook, s.limitInFlight)
		s.hook.POST("/hook/*", s.handleHook, s.authHook, s.limitInFlight)
		if s.Platform != nil {
			s.platform = s.newEcho()
			g := s.platform.Group("/api/v1", s.authPlatform, s.limitInFlight)
			g.POST("/reconcile", s.handleReconcile)
			g.GET("/reconcile/:id", s.handleReconcileStatus)
		}
	})
}

func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// The peer address identifies a client, or what a trusted proxy says of the client it
	// received the request from: X-Forwarded-For and X-Real-IP are otherwise set by whoever
	// sends them (GO-2026-6872, GO-2026-6875).
	e.IPExtractor = clientAddress(s.TrustedProxies)
	e.HTTPErrorHandler = s.handleError
	e.Use(s.observe)
	return e
}

// HookHandler returns the handler of /hook.
func (s *Server) HookHandler() http.Handler {
	s.init()
	return s.hook
}

// PlatformHandler returns the handler of the platform API, nil without Platform.
func (s *Server) PlatformHandler() http.Handler {
	s.init()
	if s.platform == nil {
		return nil
	}
	return s.platform
}

// Start serves until ctx ends, then gives in-flight requests shutdownTimeout to finish.
func (s *Server) Start(ctx context.Context) error {
	s.init()
	type served struct {
		name string
		srv  *http.Server
		ln   net.Listener
	}
	var all []served
	listen := func(name, addr string, ln net.Listener, h http.Handler) error {
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", addr); err != nil {
				return fmt.Errorf("listen %s: %w", addr, err)
			}
		}
		all = append(all, served{name, s.httpServer(h), ln})
		return nil
	}
	if err := listen("hook", s.Addr, s.Listener, s.hook); err != nil {
		return err
	}
	if s.platform != nil {
		if err := listen("platform API", s.PlatformAddr, s.PlatformListener, s.platform); err != nil {
			all[0].ln.Close()
			return err
		}
	}
	done := make(chan error, len(all))
	for _, a := range all {
		s.Log.Info("serving", "what", a.name, "addr", a.ln.Addr().String())
		go func() { done <- fmt.Errorf("serve %s: %w", a.ln.Addr(), a.srv.Serve(a.ln)) }()
	}
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
	}
	s.Log.Info("shutting down http servers")
	s.stoppingOnce.Do(func() { close(s.stopping) })
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	for _, a := range all {
		if serr := a.srv.Shutdown(sctx); serr != nil && err == nil {
			err = fmt.Errorf("shut down %s: %w", a.ln.Addr(), serr)
		}
	}
	return err
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.lim.readHeaderTimeout,
		ReadTimeout:       s.lim.readTimeout,
		WriteTimeout:      s.lim.writeTimeout,
		IdleTimeout:       s.lim.idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// bodyTooLargeError: the body is over limit bytes.
type bodyTooLargeError struct{ limit int64 }

func (e *bodyTooLargeError) Error() string {
	if e.limit >= 1<<20 {
		return fmt.Sprintf("request body over %d MiB", e.limit>>20)
	}
	return fmt.Sprintf("request body over %d KiB", e.limit>>10)
}

// readBody reads the whole body, up to limit bytes (413 beyond), reserving it from the
// budget of bodies in flight (503 when the budget stays full). An authenticated request
// reserves its Content-Length (limit for a body of unknown length) before reading, into a
// buffer of exactly that size; one read before it is authenticated reserves only what it has
// read, as its buffer grows (readGrowing). A body that does not arrive within readTimeout is
// answered 408.
func (s *Server) readBody(c echo.Context, limit int64) ([]byte, error) {
	st := requestOf(c)
	if st.bodyRead {
		return st.body, nil
	}
	r := c.Request()
	if r.ContentLength > limit {
		return nil, &bodyTooLargeError{limit}
	}
	rd := http.MaxBytesReader(c.Response(), r.Body, limit)
	var body []byte
	var err error
	switch {
	case st.unauthenticated:
		body, err = s.readGrowing(c, rd, r.ContentLength, limit)
	default:
		reserve := r.ContentLength
		if reserve < 0 {
			reserve = limit
		}
		if err := s.reserveBody(c, reserve); err != nil {
			return nil, err
		}
		if r.ContentLength >= 0 {
			body = make([]byte, r.ContentLength)
			_, err = io.ReadFull(rd, body)
		} else {
			body, err = io.ReadAll(rd)
		}
	}
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.Is(err, errOverloaded):
		return nil, err
	case errors.As(err, &tooLarge):
		return nil, &bodyTooLargeError{limit}
	case errors.As(err, &netErr) && netErr.Timeout():
		// The connection's write deadline has passed too: give the answer a moment.
		_ = http.NewResponseController(c.Response().Writer).SetWriteDeadline(time.Now().Add(timeoutAnswerGrace))
		return nil, errBodyTimeout
	case err != nil:
		return nil, fmt.Errorf("%w: reading body: %s", webhook.ErrBadPayload, readError(err))
	}
	st.body, st.bodyRead = body, true
	return body, nil
}

// readGrowing reads a body of announced length (-1: unknown) into a buffer that grows as
// bytes arrive, reserving each growth before making it: signedReadStep at first, then
// doubling, never past what was announced. What a request holds of the budget is its
// buffer, at most twice what it sent and signedReadStep at least, whatever length it
// announces: a sender trickling a body holds next to nothing.
func (s *Server) readGrowing(c echo.Context, rd io.Reader, announced, limit int64) ([]byte, error) {
	want := limit
	if announced >= 0 {
		want = announced
	}
	var body []byte
	for {
		if int64(len(body)) == want {
			if announced >= 0 {
				return body, nil
			}
			// The limit reached with no length announced: one more byte is one too many.
			var probe [1]byte
			n, err := io.ReadFull(rd, probe[:])
			switch {
			case n > 0:
				return nil, &http.MaxBytesError{Limit: limit}
			case errors.Is(err, io.EOF):
				return body, nil
			default:
				return nil, err
			}
		}
		if len(body) == cap(body) {
			next := min(max(2*int64(cap(body)), signedReadStep), want)
			if err := s.reserveBody(c, next-int64(cap(body))); err != nil {
				return nil, err
			}
			grown := make([]byte, len(body), next)
			copy(grown, body)
			body = grown
		}
		n, err := rd.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		switch {
		case errors.Is(err, io.EOF) && announced >= 0 && int64(len(body)) < announced:
			return nil, io.ErrUnexpectedEOF
		case errors.Is(err, io.EOF):
			return body, nil
		case err != nil:
			return nil, err
		}
	}
}

// readError names a body read failure without its details.
func readError(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "body shorter than its Content-Length"
	}
	return "connection error"
}
