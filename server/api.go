package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/webhook"
)

// errBadQuery: a query parameter or an API body is malformed.
var errBadQuery = errors.New("bad request")

// reconcile handles POST /api/v1/reconcile: a platform team's region-wide reconcile.
func (s *Server) reconcile(c echo.Context) error {
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, maxAPIBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case err != nil:
		return fmt.Errorf("%w: reading body: %v", webhook.ErrBadPayload, err)
	}
	if err := s.PlatformAuth.Authenticate(c.Request().Header, body); err != nil {
		return err
	}
	if ct := c.Request().Header.Get(echo.HeaderContentType); ct != "" && !isJSON(ct) {
		return fmt.Errorf("%w %q: want application/json", webhook.ErrUnsupportedMediaType, ct)
	}
	var sel gitops.Selector
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields() // a misspelt field would widen the selection silently
	if err := dec.Decode(&sel); err != nil {
		return fmt.Errorf("%w: selector: %v", errBadQuery, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the selector", errBadQuery)
	}
	st, err := s.Platform.Reconcile(c.Request().Context(), sel)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, st)
}

// reconcileStatus handles GET /api/v1/reconcile/<id>.
func (s *Server) reconcileStatus(c echo.Context) error {
	if err := s.PlatformAuth.Authenticate(c.Request().Header, nil); err != nil {
		return err
	}
	st, err := s.Platform.Status(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func isJSON(ct string) bool {
	return ct == echo.MIMEApplicationJSON || len(ct) > 16 && ct[:16] == echo.MIMEApplicationJSON && ct[16] == ';'
}
