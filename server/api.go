package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/webhook"
)

// errBadQuery: a query parameter or an API body is malformed.
var errBadQuery = errors.New("bad request")

// handleReconcile handles POST /api/v1/reconcile, already authenticated: a platform team's
// region-wide reconcile.
func (s *Server) handleReconcile(c echo.Context) error {
	body, err := s.readBody(c, maxAPIBodyBytes)
	if err != nil {
		return err
	}
	sel, err := decodeSelector(c.Request().Header.Get(echo.HeaderContentType), body)
	if err != nil {
		return err
	}
	st, err := s.Platform.Reconcile(c.Request().Context(), sel)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, st)
}

// decodeSelector reads a platform reconcile's selector: one JSON object of known fields
// (a misspelt field would widen the selection silently). The domain validates its values.
func decodeSelector(contentType string, body []byte) (gitops.Selector, error) {
	var sel gitops.Selector
	if contentType != "" && !isJSON(contentType) {
		return sel, fmt.Errorf("%w %q: want application/json", webhook.ErrUnsupportedMediaType, sanitize(contentType))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sel); err != nil {
		return gitops.Selector{}, fmt.Errorf("%w: selector: %s", errBadQuery, selectorError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return gitops.Selector{}, fmt.Errorf("%w: trailing data after the selector", errBadQuery)
	}
	return sel, nil
}

// selectorError describes a selector decoding error without echoing more of the body than
// a field name.
func selectorError(err error) string {
	var typ *json.UnmarshalTypeError
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &typ):
		return fmt.Sprintf("%s: wrong type %s", sanitize(typ.Field), typ.Value)
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + sanitize(strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return "invalid JSON"
}

// handleReconcileStatus handles GET /api/v1/reconcile/<id>, already authenticated.
func (s *Server) handleReconcileStatus(c echo.Context) error {
	st, err := s.Platform.Status(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func isJSON(ct string) bool {
	return ct == echo.MIMEApplicationJSON || len(ct) > 16 && ct[:16] == echo.MIMEApplicationJSON && ct[16] == ';'
}
