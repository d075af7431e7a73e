package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/labstack/echo/v4"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/webhook"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

func FuzzWaitParams(f *testing.F) {
	for _, q := range []string{"", "wait=true", "wait=1&timeout=10m", "wait=yes", "timeout=-1s", "timeout=31m",
		"wait=true&wait=false", "timeout=1ns", "wait=%00", "timeout=9223372036854775807ns", "wait=true&timeout=1h"} {
		f.Add(q)
	}
	e := echo.New()
	f.Fuzz(func(t *testing.T, query string) {
		req := httptest.NewRequest(http.MethodPost, "/hook", nil)
		req.URL.RawQuery = query
		wait, timeout, err := waitParams(e.NewContext(req, httptest.NewRecorder()))
		if err != nil {
			if !errors.Is(err, errBadQuery) {
				t.Fatalf("error %v is not a bad query", err)
			}
			if strings.ContainsFunc(err.Error(), func(r rune) bool { return r < ' ' || r > '~' }) {
				t.Fatalf("error echoes unprintable input: %q", err)
			}
			return
		}
		if timeout <= 0 || timeout > maxWait {
			t.Fatalf("%q: timeout %s outside (0, %s]", query, timeout, maxWait)
		}
		q, _ := url.ParseQuery(query)
		if !wait && (q.Get("wait") == "true" || q.Get("wait") == "1") {
			t.Fatalf("%q: wait not set", query)
		}
	})
}

func FuzzDecodeSelector(f *testing.F) {
	f.Add("application/json", []byte(`{"region":"eu-central","labelSelector":"tier=platform"}`))
	f.Add("application/json; charset=utf-8", []byte(`{"clusters":["a","b"],"kinds":["kustomization"],"withSource":false}`))
	f.Add("", []byte(`{"all":true}`))
	f.Add("application/json", []byte(`{"region":"x","regoin":"y"}`))
	f.Add("application/json", []byte(`{"clusters":"a"}`))
	f.Add("application/json", []byte(`{} {}`))
	f.Add("text/plain", []byte(`{}`))
	f.Add("application/json", []byte(`null`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		sel, err := decodeSelector(ct, body)
		if err != nil {
			if !errors.Is(err, errBadQuery) && !errors.Is(err, webhook.ErrUnsupportedMediaType) {
				t.Fatalf("error %v of no known kind", err)
			}
			if strings.ContainsFunc(err.Error(), func(r rune) bool { return r < ' ' || r > '~' }) {
				t.Fatalf("error echoes unprintable input: %q", err)
			}
			return
		}
		// What decodes means what its encoding means: nothing is lost or added (an empty
		// list and none are the same selection).
		b, err := json.Marshal(sel)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeSelector("application/json", b)
		if err != nil {
			t.Fatalf("%s decodes to %+v, whose encoding %s does not decode: %v", body, sel, b, err)
		}
		if b2, _ := json.Marshal(again); !bytes.Equal(b, b2) {
			t.Fatalf("%s decodes to %s, then to %s", body, b, b2)
		}
	})
}

// countingRequester counts domain calls and checks what it is asked.
type countingRequester struct {
	calls atomic.Int64
	bad   atomic.Value // string: the first malformed push seen
}

func (c *countingRequester) Accept(_ context.Context, p gitops.Push) (gitops.Result, error) {
	c.calls.Add(1)
	if p.Repository == "" || !strings.HasPrefix(p.Ref, "refs/") || len(p.URLs) == 0 || p.SHA == "" || p.Delivery == "" {
		c.bad.CompareAndSwap(nil, p.Repository+" "+p.Ref)
	}
	return gitops.Result{Targets: requested}, nil
}

func (c *countingRequester) Await(context.Context, gitops.Push, gitops.Result, time.Duration) <-chan api.TargetResult {
	ch := make(chan api.TargetResult)
	close(ch)
	return ch
}

// The whole /hook handler over arbitrary requests: without the token nothing reaches the
// domain; with it only a complete push does; nothing is ever a 5xx; every error is a JSON
// body that does not contain the token.
func FuzzHook(f *testing.F) {
	push, err := os.ReadFile("../webhook/gitea/testdata/gitea-push-branch.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("application/json", push, "", "", "", true)
	f.Add("application/json", push, "push", "d-1", "wait=true", true)
	f.Add("application/x-www-form-urlencoded", []byte("payload="+url.QueryEscape(string(push))), "push", "", "", true)
	f.Add("application/json", push, "issues", "", "", true)
	f.Add("application/json", push, "", "", "token="+secret, false)
	f.Add("application/json", []byte(`{"ref":"refs/heads/main","REF":"x"}`), "", "", "", true)
	f.Add("text/plain", push, "", "", "", true)
	req := &countingRequester{}
	s := &Server{Keys: testKeys(false), Forge: gitea.Events{}, Intake: &webhook.Intake{Requester: req}, Awaiter: req, Log: logr.Discard()}
	h := s.HookHandler()
	f.Fuzz(func(t *testing.T, ct string, body []byte, event, delivery, query string, withToken bool) {
		before := req.calls.Load()
		r := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", ct)
		r.Header.Set("X-Gitea-Event", event)
		r.Header.Set("X-Gitea-Delivery", delivery)
		if withToken {
			r.Header.Set("Authorization", "Bearer "+secret)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		called := req.calls.Load() - before
		if bad := req.bad.Load(); bad != nil {
			t.Fatalf("domain asked for an incomplete push: %v", bad)
		}
		if w.Code >= 500 {
			t.Fatalf("%d: %s", w.Code, w.Body)
		}
		if !withToken && (called != 0 || (w.Code != http.StatusUnauthorized && w.Code != http.StatusTooManyRequests)) {
			t.Fatalf("without the token: %d, %d domain calls", w.Code, called)
		}
		if called > 0 && w.Code != http.StatusAccepted && w.Code != http.StatusOK {
			t.Fatalf("domain called, answer %d", w.Code)
		}
		if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			var m map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
				t.Fatalf("answer %d is not JSON: %q", w.Code, w.Body)
			}
			if _, ok := m["error"].(string); w.Code >= 400 && !ok {
				t.Fatalf("error answer without an error: %s", w.Body)
			}
		} else if w.Code >= 400 {
			t.Fatalf("error answer %d is %q", w.Code, w.Header().Get("Content-Type"))
		}
		if bytes.Contains(w.Body.Bytes(), []byte(secret)) {
			t.Fatalf("token in the answer: %s", w.Body)
		}
	})
}
