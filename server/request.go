package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

// request is what the server knows of one request, beyond the HTTP request itself. It is
// made by observe and carried in the request's context, typed.
type request struct {
	// delivery identifies the request in logs, answers and records: the sender's
	// delivery id (Forge.Delivery) when it gave a usable one (senderDelivery), else a new
	// UUID.
	delivery       string
	senderDelivery bool
	// principal is who the request authenticated as.
	principal credentials.Principal
	// body is the request body once read (a signed request's is read to verify it).
	body     []byte
	bodyRead bool
	// releases give back what the request holds: its in-flight slot, its body bytes.
	releases []func()
	// unauthenticated is set while a signed body is read before its signature is checked:
	// what it reserves of the bodies' budget comes out of the share such reads may hold
	// (shareBytes of it, given back by releaseShare) too.
	unauthenticated bool
	shareBytes      int64
	releaseShare    func()
}

// vouched gives back the request's part of the unauthenticated reads' share: its signature
// verified, its body counts as any authenticated body does.
func (r *request) vouched() {
	if r.releaseShare != nil {
		r.releaseShare()
		r.releaseShare = nil
	}
}

type requestKey struct{}

// requestOf returns the request's state; observe made it.
func requestOf(c echo.Context) *request {
	r, _ := c.Request().Context().Value(requestKey{}).(*request)
	if r == nil { // only a handler mounted without observe (none is)
		r = &request{}
	}
	return r
}

// release gives back everything the request holds, early for a waiting stream.
func (r *request) release() {
	r.vouched()
	for _, f := range r.releases {
		f()
	}
	r.releases = nil
}

// observe makes the request's state, attaches a logger with its delivery id to its context,
// then logs and counts the answer.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		r := c.Request()
		st := &request{}
		if s.Forge != nil {
			st.delivery = s.Forge.Delivery(r.Header)
		}
		st.senderDelivery = validDelivery(st.delivery)
		if !st.senderDelivery {
			st.delivery = uuid.NewString()
		}
		defer st.release()
		logger := s.Log.WithValues("delivery", st.delivery)
		ctx := context.WithValue(log.IntoContext(r.Context(), logger), requestKey{}, st)
		c.SetRequest(r.WithContext(ctx))
		err := next(c)
		failedStream := errors.Is(err, errStreamFailed)
		if err != nil && !failedStream {
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
			"status", code, "duration", time.Since(start).String(), "remote", c.RealIP(), "principal", principalName(st),
			"streamFailed", failedStream)
		if failedStream {
			// Counted and logged: now abort the connection, so the stream lacks its
			// terminating chunk (net/http recovers this panic and logs nothing).
			panic(http.ErrAbortHandler)
		}
		return nil
	}
}

func principalName(st *request) string {
	if st.principal.Kind == "" {
		return ""
	}
	return st.principal.String()
}

// validDelivery accepts the delivery ids senders use (Gitea's are UUIDs): short, printable,
// no spaces, so they are safe in logs, Events and records.
func validDelivery(d string) bool {
	if d == "" || len(d) > maxDeliveryLength {
		return false
	}
	for _, r := range d {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return true
}
