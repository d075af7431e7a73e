// Package server is flux-webhook's HTTP surface: POST /hook. Handlers decode, authenticate,
// call a domain function and encode; one error handler maps the domain's sentinel errors
// to status codes.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/gitops"
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

// Requester is the domain call behind /hook.
type Requester interface {
	Request(ctx context.Context, push gitops.Push) (gitops.Result, error)
	// Await streams the targets' final answers, for /hook?wait=true.
	Await(ctx context.Context, push gitops.Push, res gitops.Result, timeout time.Duration) <-chan gitops.TargetResult
}

// Platform is the domain behind /api/v1/reconcile.
type Platform interface {
	Reconcile(ctx context.Context, sel gitops.Selector) (*gitops.JobStatus, error)
	Status(ctx context.Context, id string) (*gitops.JobStatus, error)
}

// Authenticator checks a request's credentials against its raw body.
type Authenticator interface {
	Authenticate(h http.Header, body []byte) error
}

// Server serves /hook. It is a controller-runtime Runnable that serves on every replica
// and stops with the manager.
type Server struct {
	// Addr is the listen address, e.g. ":8080".
	Addr string
	// Listener, when set, is used instead of listening on Addr (tests).
	Listener  net.Listener
	Auth      Authenticator
	Requester Requester
	// PlatformAuth and Platform serve /api/v1/reconcile; without them it is not served.
	// The platform token is not the hook token: one does not open the other.
	PlatformAuth Authenticator
	Platform     Platform
	Log          logr.Logger

	e *echo.Echo
	// stopping is closed when the server starts shutting down: waiting streams end then.
	stopping     chan struct{}
	stoppingOnce sync.Once
	lim          limits // zero: the constants of limits.go; tests shorten them
	// inFlight and waiting count requests being handled and open waiting streams; bodyBytes
	// is the budget of their bodies.
	inFlight, waiting *slots
	bodyBytes         *semaphore.Weighted
	// authFailures counts failed authentications per client address.
	authFailures *authLimiter
	// deliveries keeps the answers of recent deliveries, to answer a repeat the same way.
	deliveries *lru[deliveryID, answer]
}

// NeedLeaderElection is false: every replica serves /hook.
func (s *Server) NeedLeaderElection() bool { return false }

// Handler returns the HTTP handler (built once).
func (s *Server) Handler() http.Handler {
	if s.e != nil {
		return s.e
	}
	s.lim = s.lim.withDefaults()
	s.stopping = make(chan struct{})
	s.inFlight = newSlots(s.lim.maxInFlight, httpInFlight)
	s.waiting = newSlots(s.lim.maxWaiting, httpWaiting)
	s.bodyBytes = semaphore.NewWeighted(s.lim.maxBodyBytesInFlight)
	s.authFailures = newAuthLimiter(s.lim)
	s.deliveries = newLRU[deliveryID, answer](s.lim.deliveryCacheBytes, s.lim.deliveryWindow, nil)
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	// Only the peer address identifies a client: X-Forwarded-For and X-Real-IP are set by
	// whoever sends them (GO-2026-6872, GO-2026-6875).
	e.IPExtractor = echo.ExtractIPDirect()
	e.HTTPErrorHandler = s.handleError
	e.Use(s.observe, s.limitInFlight)
	e.POST("/hook", s.hook)
	e.POST("/hook/*", s.hook)
	if s.Platform != nil {
		e.POST("/api/v1/reconcile", s.reconcile)
		e.GET("/api/v1/reconcile/:id", s.reconcileStatus)
	}
	s.e = e
	return e
}

// Start serves until ctx ends, then gives in-flight requests shutdownTimeout to finish.
func (s *Server) Start(ctx context.Context) error {
	srv := &http.Server{
		Addr:              s.Addr,
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.lim.readHeaderTimeout,
		ReadTimeout:       s.lim.readTimeout,
		WriteTimeout:      s.lim.writeTimeout,
		IdleTimeout:       s.lim.idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	ln := s.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.Addr); err != nil {
			return fmt.Errorf("listen %s: %w", s.Addr, err)
		}
	}
	s.Log.Info("serving hooks", "addr", ln.Addr().String())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve %s: %w", s.Addr, err)
	case <-ctx.Done():
	}
	s.Log.Info("shutting down hook server")
	s.stoppingOnce.Do(func() { close(s.stopping) })
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down %s: %w", s.Addr, err)
	}
	return nil
}

// observe attaches a logger with the request's values to its context, then logs and counts
// the answer.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		r := c.Request()
		delivery := r.Header.Get("X-Gitea-Delivery")
		given := validDelivery(delivery)
		if !given {
			delivery = uuid.NewString()
		}
		c.Set(deliveryKey, delivery)
		c.Set(senderDeliveryKey, given)
		logger := s.Log.WithValues("delivery", delivery)
		c.SetRequest(r.WithContext(log.IntoContext(r.Context(), logger)))
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		code := c.Response().Status
		httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		httpDuration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		// The route, not the path: /hook/<anything> is where a confused sender would put a
		// token (Flux's own receiver has secrets in its paths), and logs are read by many.
		log.FromContext(c.Request().Context()).Info("request", "method", r.Method, "route", route,
			"status", code, "duration", time.Since(start).String(), "remote", c.RealIP())
		return nil
	}
}

const (
	deliveryKey = "delivery"
	// senderDeliveryKey is true when the delivery id is the sender's, not one made here.
	senderDeliveryKey = "sender-delivery"
)

// validDelivery accepts the delivery ids senders use (Gitea's are UUIDs): short, printable,
// no spaces, so they are safe in logs and Events.
func validDelivery(d string) bool {
	if d == "" || len(d) > 128 {
		return false
	}
	for _, r := range d {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return true
}

// bodyTooLargeError: the body is over limit bytes.
type bodyTooLargeError struct{ limit int64 }

func (e *bodyTooLargeError) Error() string {
	if e.limit >= 1<<20 {
		return fmt.Sprintf("request body over %d MiB", e.limit>>20)
	}
	return fmt.Sprintf("request body over %d KiB", e.limit>>10)
}

// readBody reads the whole body, up to limit bytes (413 beyond). It first reserves, from
// the budget of bodies in flight, the body's Content-Length, or limit for a body of unknown
// length (503 when the budget stays full). A body announced by Content-Length is read into a
// buffer of exactly that size; one that does not arrive within readTimeout is answered 408.
func (s *Server) readBody(c echo.Context, limit int64) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > limit {
		return nil, &bodyTooLargeError{limit}
	}
	reserve := r.ContentLength
	if reserve < 0 {
		reserve = limit
	}
	if err := s.reserveBody(c, reserve); err != nil {
		return nil, err
	}
	rd := http.MaxBytesReader(c.Response(), r.Body, limit)
	var body []byte
	var err error
	if r.ContentLength >= 0 {
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(rd, body)
	} else {
		body, err = io.ReadAll(rd)
	}
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooLarge):
		return nil, &bodyTooLargeError{limit}
	case errors.As(err, &netErr) && netErr.Timeout():
		// The connection's write deadline has passed too: give the answer a moment.
		_ = http.NewResponseController(c.Response().Writer).SetWriteDeadline(time.Now().Add(timeoutAnswerGrace))
		return nil, errBodyTimeout
	case err != nil:
		return nil, fmt.Errorf("%w: reading body: %s", webhook.ErrBadPayload, readError(err))
	}
	return body, nil
}

// readError names a body read failure without its details.
func readError(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "body shorter than its Content-Length"
	}
	return "connection error"
}
