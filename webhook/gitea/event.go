// Package gitea is the forge flux-webhook serves, Gitea: its deliveries in (push events
// decoded, webhook signatures verified: the server's Forge) and its API out (commit
// statuses and pull-request summaries: the reporter's poster, and the answers that verify a
// push's claims: the intake's Forge).
package gitea

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook"
)

// Limits of what a push event may carry; far above anything Gitea produces.
const (
	// maxNameLength: Gitea allows 100 characters per owner and per repository name.
	maxNameLength = 2*100 + 1
)

var (
	// fullNamePattern is Gitea's "owner/name": alphanumerics, '-', '_', '.'.
	fullNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)
	// shaPattern is a SHA-1 or SHA-256 object id, as Git writes them: 40 or 64 lower-case
	// hex digits. The all-zero id means "no commit" (a created or deleted reference).
	shaPattern = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)
	zeroSHA    = regexp.MustCompile(`^(?:0{40}|0{64})$`)
)

// PushEvent is the part of Gitea's push event payload flux-webhook reads. Gitea sends the
// same document to native webhooks and to Actions workflows as github.event.
type PushEvent struct {
	Ref        string      `json:"ref"`
	Before     string      `json:"before"`
	After      string      `json:"after"`
	Repository *Repository `json:"repository"`
}

// Repository is the pushed repository.
type Repository struct {
	FullName string `json:"full_name"`
	CloneURL string `json:"clone_url"`
	SSHURL   string `json:"ssh_url"`
	HTMLURL  string `json:"html_url"`
}

// Deleted reports whether the push deleted its reference.
func (e *PushEvent) Deleted() bool { return zeroSHA.MatchString(e.After) }

// Push returns what the Flux side needs of the event, as the sender claims it.
func (e *PushEvent) Push(delivery string) gitops.Push {
	return gitops.Push{Delivery: delivery, Repository: e.Repository.FullName, URLs: e.URLs(),
		Ref: e.Ref, SHA: e.After, Before: e.Before}
}

// URLs returns the repository's URLs as Gitea reports them.
func (e *PushEvent) URLs() []string {
	var out []string
	for _, u := range []string{e.Repository.CloneURL, e.Repository.SSHURL, e.Repository.HTMLURL} {
		if u != "" {
			out = append(out, u)
		}
	}
	return out
}

// HeaderDelivery names a delivery: a UUID, the same on Gitea's retries of it.
const HeaderDelivery = "X-Gitea-Delivery"

// Events is Gitea as the sender of deliveries, as the server asks of a request.
type Events struct{}

// Delivery returns the delivery id the sender gave, "" when none.
func (Events) Delivery(h http.Header) string { return h.Get(HeaderDelivery) }

// Signed reports whether the request carries a webhook signature.
func (Events) Signed(h http.Header) bool { return Signed(h) }

// Verify checks a signed request's signature over its body with the webhook keys.
func (Events) Verify(h http.Header, body []byte, keys [][]byte) (credentials.Principal, error) {
	return VerifySignature(h, h.Get("Content-Type"), body, keys)
}

// Decode turns a delivery into the push it claims, or says why it is ignored: a push event
// (a Git push), or a package event (a tag pushed to the registry).
func (Events) Decode(h http.Header, body []byte, delivery string) (push gitops.Push, ignored string, err error) {
	if eventKind(h) == "package" {
		ev, ignored, err := DecodePackage(h.Get("Content-Type"), body)
		if err != nil || ignored != "" {
			return gitops.Push{}, ignored, err
		}
		return ev.Push(delivery), "", nil
	}
	ev, ignored, err := DecodeEvent(h, body)
	if err != nil || ignored != "" {
		return gitops.Push{}, ignored, err
	}
	return ev.Push(delivery), "", nil
}

// eventKind returns the event a delivery names ("" when none: a push, as workflows post
// them).
func eventKind(h http.Header) string {
	for _, name := range eventHeaders {
		if kind := h.Get(name); kind != "" {
			return kind
		}
	}
	return ""
}

// Event headers: Gitea sends all three.
var eventHeaders = []string{"X-Gitea-Event", "X-Gogs-Event", "X-GitHub-Event"}

// DecodeEvent reads a delivery: its push event, or, when it is no push flux-webhook acts on
// (another event, a deleted reference), why it is ignored.
func DecodeEvent(h http.Header, body []byte) (ev *PushEvent, ignored string, err error) {
	for _, name := range eventHeaders {
		if kind := h.Get(name); kind != "" && kind != "push" {
			return nil, fmt.Sprintf("%s event, not a push", printable(kind, 64)), nil
		}
	}
	if ev, err = DecodePush(h.Get("Content-Type"), body); err != nil {
		return nil, "", err
	}
	if ev.Deleted() {
		return nil, "the push deleted " + ev.Ref, nil
	}
	return ev, "", nil
}

// printable keeps at most n bytes of a header value, with every byte outside printable
// ASCII replaced, fit for an answer and a log line.
func printable(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, s)
}

// DecodePush parses a push event from a request body of the given Content-Type: JSON (what
// Actions workflows post) or Gitea's form encoding, "payload=<json>". It rejects a body
// that is not a complete push event with an error wrapping webhook.ErrBadPayload.
func DecodePush(contentType string, body []byte) (*PushEvent, error) {
	body, err := jsonBody(contentType, body)
	if err != nil {
		return nil, err
	}
	var e PushEvent
	if err := decodeJSON(body, &e); err != nil {
		return nil, err
	}
	if err := e.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", webhook.ErrBadPayload, err)
	}
	return &e, nil
}

// jsonBody returns the JSON document of a body of the given Content-Type: JSON (what
// Actions workflows post) or Gitea's form encoding, "payload=<json>".
func jsonBody(contentType string, body []byte) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		// Not echoed: a header value is no place for the sender's secrets, but a confused
		// sender may put them anywhere, and error messages are logged.
		return nil, fmt.Errorf("%w: want application/json or application/x-www-form-urlencoded", webhook.ErrUnsupportedMediaType)
	}
	if len(mt) > 64 {
		mt = mt[:64] + "…"
	}
	switch mt {
	case "application/json":
	case "application/x-www-form-urlencoded":
		payload, err := formPayload(body)
		if err != nil {
			return nil, fmt.Errorf("%w: form: %v", webhook.ErrBadPayload, err)
		}
		body = payload
	default:
		return nil, fmt.Errorf("%w %q: want application/json or application/x-www-form-urlencoded", webhook.ErrUnsupportedMediaType, mt)
	}
	// The caller unmarshals, not a Decoder: no second copy of a body of up to 3 MiB.
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("%w: empty body", webhook.ErrBadPayload)
	}
	return body, nil
}

// formPayload returns the one "payload" field of a form body, as url.ParseQuery would read
// it, decoded into a single new buffer (ParseQuery would make three copies of a body of up to
// 3 MiB).
func formPayload(body []byte) ([]byte, error) {
	var payload []byte
	found := 0
	for pair := range bytes.SplitSeq(body, []byte("&")) {
		if bytes.IndexByte(pair, ';') >= 0 {
			return nil, errors.New("invalid semicolon separator")
		}
		if len(pair) == 0 {
			continue
		}
		k, v, _ := bytes.Cut(pair, []byte("="))
		// A longer name cannot be "payload", however escaped: only checked, not decoded.
		if len(k) > len("payload")*3 || !bytes.Equal(mustUnescape(k), []byte("payload")) {
			if !validEscapes(k) || !validEscapes(v) {
				return nil, errors.New("invalid escape")
			}
			continue
		}
		if found++; found > 1 {
			return nil, errors.New("exactly one payload field expected")
		}
		var err error
		if payload, err = queryUnescape(v); err != nil {
			return nil, err
		}
	}
	if found != 1 {
		return nil, errors.New("exactly one payload field expected")
	}
	return payload, nil
}

// validEscapes reports whether every '%' of s starts an escape %XX.
func validEscapes(s []byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

// mustUnescape decodes a short name, nil if it is not valid.
func mustUnescape(s []byte) []byte {
	b, _ := queryUnescape(s)
	return b
}

// queryUnescape decodes a form value: '+' is a space, %XX a byte.
func queryUnescape(s []byte) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			out = append(out, ' ')
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return nil, errors.New("invalid escape")
			}
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func (e *PushEvent) validate() error {
	switch {
	case e.Repository == nil:
		return errors.New("repository is missing")
	case e.Repository.FullName == "":
		return errors.New("repository.full_name is missing")
	case !validFullName(e.Repository.FullName):
		return errors.New("repository.full_name is not owner/name")
	case e.Ref == "":
		return errors.New("ref is missing")
	case !webhook.ValidRef(e.Ref):
		return errors.New("ref is not a full Git reference")
	case e.After == "":
		return errors.New("after is missing")
	case !shaPattern.MatchString(e.After) && !zeroSHA.MatchString(e.After):
		return errors.New("after is not a commit id")
	case e.Before != "" && !shaPattern.MatchString(e.Before) && !zeroSHA.MatchString(e.Before):
		return errors.New("before is not a commit id")
	case len(e.URLs()) == 0:
		return errors.New("repository has no clone_url, ssh_url or html_url")
	case !slices.ContainsFunc(e.URLs(), func(u string) bool { _, err := flux.NormalizeURL(u); return err == nil }):
		return errors.New("repository has no clone_url, ssh_url or html_url naming a Git repository")
	}
	return nil
}

// validFullName reports whether name is a repository's "owner/name" as Gitea allows them.
func validFullName(name string) bool {
	return len(name) <= maxNameLength && fullNamePattern.MatchString(name) && !strings.Contains(name, "..")
}

// decodeJSON decodes one JSON document into v as Go's decoder matches names
// (case-insensitively, with Unicode folding: "REF", "repoſitory"), but refuses a member
// given twice under any folding, at any depth: Go's decoder would keep the last, another
// reader of the same signed body (a proxy, an audit log, a JavaScript consumer) may keep the
// first or match exactly. A signature covers bytes, not their meaning, so a body that could
// mean two pushes is refused. encoding/json/v2 checks this as it decodes.
func decodeJSON(body []byte, v any) error {
	// Case-insensitive as encoding/json, and, as it, with '_' and '-' significant
	// ("fullname" is not "full_name"): v2 alone would ignore them.
	if err := jsonv2.Unmarshal(body, v, jsonv2.MatchCaseInsensitiveNames(true), json.MatchCaseSensitiveDelimiter(true)); err != nil {
		return fmt.Errorf("%w: %s", webhook.ErrBadPayload, jsonError(err, body))
	}
	return nil
}

// jsonError describes a JSON decoding error of body without echoing it (beyond a member's
// name, bounded).
func jsonError(err error, body []byte) string {
	var syn *jsontext.SyntacticError
	var sem *jsonv2.SemanticError
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	case errors.Is(err, jsontext.ErrDuplicateName) && errors.As(err, &syn):
		return fmt.Sprintf("%s given more than once", memberPath(syn.JSONPointer))
	case errors.As(err, &syn) && syn.ByteOffset > 0 && jsontext.Value(body[:syn.ByteOffset]).IsValid():
		// What precedes the error is a whole document.
		return "trailing data after the JSON document"
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.ByteOffset+1)
	case errors.As(err, &sem) && sem.GoType != nil && sem.JSONPointer == "":
		return fmt.Sprintf("the payload must be %s, not %s", jsonType(sem.GoType), kindName(sem.JSONKind))
	case errors.As(err, &sem) && sem.GoType != nil:
		return fmt.Sprintf("%s must be %s, not %s", memberPath(sem.JSONPointer), jsonType(sem.GoType), kindName(sem.JSONKind))
	}
	return "invalid JSON"
}

// kindName names a JSON kind as encoding/json's errors do.
func kindName(k jsontext.Kind) string {
	switch k {
	case 'n':
		return "null"
	case 't', 'f':
		return "bool"
	case '"':
		return "string"
	case '0':
		return "number"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return "value"
}

// memberPath writes a JSON pointer as the dotted path of its members ("repository.full_name"),
// printable and bounded: a name can be anything the sender wrote.
func memberPath(p jsontext.Pointer) string {
	var names []string
	for name := range p.Tokens() {
		names = append(names, name)
	}
	return printable(strings.Join(names, "."), 64)
}

// jsonType names the JSON type a Go type is decoded from.
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Bool:
		return "boolean"
	}
	return "number"
}
