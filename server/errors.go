package server

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/jobs"
	requests "github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook"
)

// handleError is the one place errors become status codes. Client mistakes get a 4xx with
// a message that never echoes credentials; anything unexpected is logged and answered 500
// without detail.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	var limited *jobs.RateLimitedError
	var authLimited *authLimitedError
	var tooLarge *bodyTooLargeError
	switch {
	case errors.Is(err, credentials.ErrUnauthorized):
		code, msg = http.StatusUnauthorized, "unauthorized"
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="flux-webhook"`)
	case errors.Is(err, credentials.ErrForbidden), errors.Is(err, webhook.ErrContradicted):
		code, msg = http.StatusForbidden, err.Error()
	case errors.Is(err, webhook.ErrForgeUnavailable):
		code, msg = http.StatusServiceUnavailable, "gitea unavailable to verify the push, retry later"
		c.Response().Header().Set("Retry-After", retryAfterSeconds)
	case errors.As(err, &authLimited):
		code, msg = http.StatusTooManyRequests, authLimited.Error()
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(authLimited.RetryAfter.Seconds()))))
	case errors.As(err, &tooLarge):
		code, msg = http.StatusRequestEntityTooLarge, tooLarge.Error()
	case errors.Is(err, errBodyTimeout):
		code, msg = http.StatusRequestTimeout, fmt.Sprintf("%s: the whole request must arrive within %s", err, s.lim.readTimeout)
	case errors.Is(err, errOverloaded):
		code, msg = http.StatusServiceUnavailable, err.Error()
		c.Response().Header().Set("Retry-After", overloadRetryAfter)
	case errors.Is(err, webhook.ErrUnsupportedMediaType):
		code, msg = http.StatusUnsupportedMediaType, err.Error()
	case errors.Is(err, webhook.ErrBadPayload), errors.Is(err, webhook.ErrBadTarget), errors.Is(err, errNoPush):
		code, msg = http.StatusBadRequest, err.Error()
	case errors.Is(err, webhook.ErrNoForge):
		code, msg = http.StatusBadRequest, "this flux-webhook asks no Gitea (no --gitea-url, or --verify-claims=false), "+
			"so it cannot tell where a reference is: POST /hook with the push event as the body (Content-Type: application/json)"
	case errors.Is(err, webhook.ErrTargetNotFound):
		code, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, errBadQuery), errors.Is(err, jobs.ErrBadSelector), errors.Is(err, jobs.ErrEmptySelector):
		code, msg = http.StatusBadRequest, err.Error()
	case errors.Is(err, jobs.ErrJobNotFound):
		code, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, requests.ErrTooManyTargets), errors.Is(err, jobs.ErrTooManyTargets):
		code, msg = http.StatusUnprocessableEntity, err.Error()
	case errors.As(err, &limited):
		code, msg = http.StatusTooManyRequests, err.Error()
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(limited.RetryAfter.Seconds()))))
	case errors.Is(err, cluster.ErrUnavailable):
		code, msg = http.StatusServiceUnavailable, "kubernetes api unavailable, retry later"
		c.Response().Header().Set("Retry-After", retryAfterSeconds)
	case errors.As(err, &he):
		code = he.Code
		msg = http.StatusText(code)
		if m, ok := he.Message.(string); ok {
			msg = m
		}
	}
	if !requestOf(c).bodyRead && c.Request().ContentLength != 0 {
		// Answered without reading the body (not authenticated, or refused on its headers):
		// close the connection rather than read a body net/http would otherwise drain
		// first, however slowly its sender trickles it.
		c.Response().Header().Set(echo.HeaderConnection, "close")
	}
	logger := log.FromContext(c.Request().Context())
	if code >= 500 && !errors.Is(err, errOverloaded) {
		logger.Error(err, "request failed", "status", code)
	} else if code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		logger.Info("request refused", "status", code, "reason", msg)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(code)
		return
	}
	_ = c.JSON(code, api.ErrorResponse{Error: msg})
}

// sanitize keeps a value from a request fit for a JSON answer and a log line: at most 64
// bytes of printable ASCII.
func sanitize(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, s)
}
