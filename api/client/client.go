// Package client calls flux-webhook's platform API: region-wide reconciles and their
// progress. It imports only the wire types (package api), so a tool can use it without the
// service.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/openova-io/flux-webhook/api"
)

// ErrInsecureServer: the server URL would send the token in clear over the network.
var ErrInsecureServer = errors.New("http:// would send the token in clear; use https://")

// Limits of one call.
const (
	// requestTimeout bounds each call: the server answers a reconcile within its write
	// timeout (30 s).
	requestTimeout = 30 * time.Second
	// maxAnswerBytes bounds an answer read: a job of the largest size the server makes is a
	// few MiB of JSON.
	maxAnswerBytes = 32 << 20
)

// Client calls one flux-webhook's platform API with a platform token. It never follows a
// redirect: the token would go wherever the server points.
type Client struct {
	base, token, userAgent string
	http                   *http.Client
}

// New returns a client of the platform API at server ("https://host[:port]"). An http://
// server is refused (ErrInsecureServer) unless it is on this machine or allowHTTP is set.
func New(server, token, userAgent string, allowHTTP bool) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: want http(s)://host[:port]", Clean(server))
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) && !allowHTTP {
		return nil, fmt.Errorf("server %q: %w", Clean(server), ErrInsecureServer)
	}
	return &Client{base: strings.TrimSuffix(server, "/"), token: token, userAgent: userAgent, http: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// Error is an answer of the platform API other than a success.
type Error struct {
	Method, Path string
	StatusCode   int
	// Message is the server's error text, cleaned for a terminal.
	Message string
	// RetryAfter is the server's Retry-After, in seconds, "" when none.
	RetryAfter string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s %s: %d: %s", e.Method, e.Path, e.StatusCode, e.Message)
	if e.RetryAfter != "" {
		msg += " (retry after " + e.RetryAfter + "s)"
	}
	return msg
}

// Reconcile starts a region-wide reconcile of what sel chooses, and returns its job.
func (c *Client) Reconcile(ctx context.Context, sel api.Selector) (*api.JobStatus, error) {
	return c.do(ctx, http.MethodPost, "/api/v1/reconcile", sel)
}

// Job returns a job's progress.
func (c *Client) Job(ctx context.Context, id string) (*api.JobStatus, error) {
	return c.do(ctx, http.MethodGet, "/api/v1/reconcile/"+url.PathEscape(id), nil)
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*api.JobStatus, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return nil, fmt.Errorf("%s %s: %d: the server redirects to %q; not followed (give that URL as the server if it is flux-webhook's)",
			method, path, resp.StatusCode, Clean(resp.Header.Get("Location")))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		var e api.ErrorResponse
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return nil, &Error{Method: method, Path: path, StatusCode: resp.StatusCode, Message: Clean(e.Error),
			RetryAfter: Clean(resp.Header.Get("Retry-After"))}
	}
	var st api.JobStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return &st, nil
}

// Clean makes text from a server safe to print on a terminal: control characters (escape
// sequences, carriage returns) and invisible formatting characters (bidirectional
// overrides) become '?'.
func Clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return '?'
		}
		return r
	}, s)
}

// loopback reports whether host names this machine: plain http to it keeps the token local.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
