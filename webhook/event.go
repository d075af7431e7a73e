// Package webhook is the Gitea side of flux-webhook: push events in, authentication of
// their senders, commit statuses and pull request comments out.
package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"regexp"
	"strings"
)

var (
	// ErrBadPayload: the body is not a usable push event.
	ErrBadPayload = errors.New("malformed payload")
	// ErrUnsupportedMediaType: the body is neither JSON nor Gitea's form encoding.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
)

// Limits of what a push event may carry; far above anything Gitea produces.
const (
	// maxRefLength: Git itself has no hard limit, Gitea's database column is 255.
	maxRefLength = 255
	// maxNameLength: Gitea allows 100 characters per owner and per repository name.
	maxNameLength = 2*100 + 1
)

var (
	// fullNamePattern is Gitea's "owner/name": alphanumerics, '-', '_', '.'.
	fullNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)
	shaPattern      = regexp.MustCompile(`^(?:[0-9a-f]{40}|[0-9a-f]{64})$`)
	zeroSHA         = regexp.MustCompile(`^0+$`)
)

// PushEvent is the part of Gitea's push event payload flux-webhook reads. Gitea sends the
// same document to native webhooks and to Actions workflows as github.event.
type PushEvent struct {
	Ref        string      `json:"ref"`
	Before     string      `json:"before"`
	After      string      `json:"after"`
	Repository *Repository `json:"repository"`
	Pusher     *User       `json:"pusher"`
	HeadCommit *Commit     `json:"head_commit"`
}

// Repository is the pushed repository.
type Repository struct {
	FullName      string `json:"full_name"`
	CloneURL      string `json:"clone_url"`
	SSHURL        string `json:"ssh_url"`
	HTMLURL       string `json:"html_url"`
	DefaultBranch string `json:"default_branch"`
}

// User is the pusher.
type User struct {
	Login string `json:"login"`
}

// Commit is the head commit.
type Commit struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

// Deleted reports whether the push deleted its reference.
func (e *PushEvent) Deleted() bool { return zeroSHA.MatchString(e.After) }

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

// DecodePush parses a push event from a request body of the given Content-Type: JSON (what
// Actions workflows post) or Gitea's form encoding, "payload=<json>". It rejects a body
// that is not a complete push event with an error wrapping ErrBadPayload.
func DecodePush(contentType string, body []byte) (*PushEvent, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("%w %q", ErrUnsupportedMediaType, contentType)
	}
	switch mt {
	case "application/json":
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("%w: form: %v", ErrBadPayload, err)
		}
		if len(form["payload"]) != 1 {
			return nil, fmt.Errorf("%w: form needs exactly one payload field", ErrBadPayload)
		}
		body = []byte(form.Get("payload"))
	default:
		return nil, fmt.Errorf("%w %q: want application/json or application/x-www-form-urlencoded", ErrUnsupportedMediaType, mt)
	}
	var e PushEvent
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadPayload, jsonError(err))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON document", ErrBadPayload)
	}
	if err := e.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPayload, err)
	}
	return &e, nil
}

func (e *PushEvent) validate() error {
	switch {
	case e.Repository == nil:
		return errors.New("repository is missing")
	case e.Repository.FullName == "":
		return errors.New("repository.full_name is missing")
	case len(e.Repository.FullName) > maxNameLength || !fullNamePattern.MatchString(e.Repository.FullName) ||
		strings.Contains(e.Repository.FullName, ".."):
		return errors.New("repository.full_name is not owner/name")
	case e.Ref == "":
		return errors.New("ref is missing")
	case len(e.Ref) > maxRefLength || !strings.HasPrefix(e.Ref, "refs/") ||
		strings.ContainsFunc(e.Ref, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return errors.New("ref is not a full Git reference")
	case e.After == "":
		return errors.New("after is missing")
	case !shaPattern.MatchString(e.After) && !zeroSHA.MatchString(e.After):
		return errors.New("after is not a commit id")
	case len(e.URLs()) == 0:
		return errors.New("repository has no clone_url, ssh_url or html_url")
	}
	return nil
}

// jsonError describes a JSON decoding error without echoing the payload.
func jsonError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("%s must be %s, not %s", typ.Field, typ.Type, typ.Value)
	case err.Error() == "EOF":
		return "empty body"
	case err.Error() == "unexpected EOF":
		return "truncated JSON"
	}
	return "invalid JSON"
}
