package server

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/openova-io/flux-webhook/gitops"
)

// errNoPush: a /hook request carries no push: nothing to decode and no target in its path.
// Its message says what to send.
var errNoPush = errors.New("send POST /hook/<owner>/<repo>[/<branch or tag>] with no body " +
	"(flux-webhook asks Gitea where it is), or POST /hook with the push event as the body " +
	"(Content-Type: application/json)")

// hookPrefix is the route of the short form: /hook/<owner>/<repo>[/<ref>].
const hookPrefix = "/hook/"

// decode turns a /hook request into the push it claims, or says why it is ignored:
//   - POST /hook/<owner>/<repo>[/<ref>][?sha=] with no body (the short form): the push a
//     push event of the reference's commit would claim, as the intake resolves it with
//     Gitea (after checking the principal may speak for that repository);
//   - a body (POST /hook, or the path of a target): the push event or package event it is;
//     a path or sha naming a target must agree with it.
//
// A body that is only white space counts as none.
func (s *Server) decode(c echo.Context, body []byte) (gitops.Push, string, error) {
	r := c.Request()
	st := requestOf(c)
	t, err := s.Forge.Target(targetPath(r), c.QueryParams())
	if err != nil {
		return gitops.Push{}, "", err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if t.Repository == "" {
			return gitops.Push{}, "", fmt.Errorf("empty body: %w", errNoPush)
		}
		push, err := s.Intake.Resolve(r.Context(), st.principal, st.delivery, t)
		return push, "", err
	}
	if r.Header.Get(echo.HeaderContentType) == "" {
		return gitops.Push{}, "", fmt.Errorf("a body without Content-Type: %w", errNoPush)
	}
	push, ignored, err := s.Forge.Decode(r.Header, body, st.delivery)
	if err != nil || ignored != "" {
		return push, ignored, err
	}
	return push, "", t.Agrees(push)
}

// targetPath returns the path after /hook/ exactly as the sender wrote it, percent-escapes
// undecoded ("" for /hook and /hook/): net/http's decoded URL.Path has lost the difference
// between "/" and "%2F", and URL.EscapedPath may re-encode it. Never logged: a confused sender
// may have put a token there.
func targetPath(r *http.Request) string {
	raw := r.RequestURI
	if raw == "" { // a request made in process, not received
		raw = r.URL.EscapedPath()
	}
	raw, _, _ = strings.Cut(raw, "?")
	if !strings.HasPrefix(raw, "/") {
		// The absolute form, scheme://authority/path (RFC 9112 3.2.2).
		if _, rest, ok := strings.Cut(raw, "://"); ok {
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				raw = rest[i:]
			}
		}
	}
	if raw == "/hook" {
		return ""
	}
	suffix, ok := strings.CutPrefix(raw, hookPrefix)
	if !ok {
		return raw // routed to /hook/* under another spelling: ParseTarget refuses it
	}
	return suffix
}
