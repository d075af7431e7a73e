package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/openova-io/flux-webhook/api"
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
func decodeSelector(contentType string, body []byte) (api.Selector, error) {
	var sel api.Selector
	if contentType != "" && !isJSON(contentType) {
		return sel, fmt.Errorf("%w %q: want application/json", webhook.ErrUnsupportedMediaType, sanitize(contentType))
	}
	if field, ok := unknownField(body); ok {
		return api.Selector{}, fmt.Errorf("%w: selector: unknown field %s", errBadQuery, sanitize(field))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sel); err != nil {
		return api.Selector{}, fmt.Errorf("%w: selector: %s", errBadQuery, selectorError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return api.Selector{}, fmt.Errorf("%w: trailing data after the selector", errBadQuery)
	}
	return sel, nil
}

// selectorFields are the JSON names of a selector's fields.
var selectorFields = func() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[api.Selector]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		out[name] = true
	}
	return out
}()

// unknownField returns the first member of a JSON object no selector field is named (as
// encoding/json matches names: case-insensitively), when body is one.
func unknownField(body []byte) (string, bool) {
	var members map[string]json.RawMessage
	if json.Unmarshal(body, &members) != nil {
		return "", false
	}
	names := slices.Sorted(maps.Keys(members))
	for _, name := range names {
		if !selectorFields[name] && !slices.ContainsFunc(slices.Collect(maps.Keys(selectorFields)), func(f string) bool { return strings.EqualFold(f, name) }) {
			return name, true
		}
	}
	return "", false
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
