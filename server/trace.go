package server

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/openova-io/flux-webhook/internal/tracing"
)

// traced makes each request a server span (with tracing off, one that records nothing),
// continuing the caller's W3C traceparent when it sends one: a push's trace starts here.
// It wraps observe, so the span sees the answer observe writes, and observe's log lines
// carry the trace's id. The span names the route, never the path (a confused sender may put
// a token there), and the delivery id.
func (s *Server) traced(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		ctx, span := tracing.StartServer(r.Context(), r.Header, r.Method+" "+route,
			semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRoute(route), semconv.ClientAddress(c.RealIP()))
		defer span.End()
		c.SetRequest(r.WithContext(ctx))
		err := next(c)
		st := requestOf(c)
		code := c.Response().Status
		span.SetAttributes(tracing.DeliveryKey.String(st.delivery), semconv.HTTPResponseStatusCode(code))
		if st.principal.Kind != "" {
			span.SetAttributes(tracing.PrincipalKey.String(st.principal.String()))
		}
		if code >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, http.StatusText(code))
		}
		return err
	}
}
