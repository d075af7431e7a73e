package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/webhook"
)

// HookResponse is the answer to a push.
type HookResponse struct {
	Delivery   string `json:"delivery"`
	Repository string `json:"repository,omitempty"`
	Ref        string `json:"ref,omitempty"`
	SHA        string `json:"sha,omitempty"`
	// Result says what happened: "accepted" (202: reconciles requested, statuses follow),
	// or, with 200, why nothing was done: "ignored" or "no-match".
	Result  string           `json:"result"`
	Reason  string           `json:"reason,omitempty"`
	Targets []gitops.Outcome `json:"targets,omitempty"`
	// Unreachable lists clusters that could not be asked: what the push feeds there is
	// unknown.
	Unreachable []gitops.ClusterError `json:"unreachable,omitempty"`
}

// Event headers: Gitea sends all three.
var eventHeaders = []string{"X-Gitea-Event", "X-Gogs-Event", "X-GitHub-Event"}

// hook handles POST /hook: authenticate the raw body, decode the push, request the
// reconciles, answer. Waiting for Flux happens after the answer, in the reporter.
func (s *Server) hook(c echo.Context) error {
	body, err := s.readBody(c, maxBodyBytes)
	if err != nil {
		return err
	}
	r := c.Request()
	if err := s.authenticate(c, s.Auth, body); err != nil {
		return err
	}
	wait, timeout, err := waitParams(c)
	if err != nil {
		return err
	}
	res := HookResponse{Delivery: c.Get(deliveryKey).(string)}
	// A repeat of a delivery already answered gets that answer, without asking Kubernetes
	// again. A waiting stream is not kept: its repeat waits again.
	key, keep := replayKey(c, body)
	keep = keep && !wait
	if keep {
		if a, ok := s.deliveries.get(key); ok {
			log.FromContext(r.Context()).Info("delivery repeated: earlier answer returned")
			c.Response().Header().Set("X-Delivery-Replayed", "true")
			return c.JSONBlob(a.code, a.body)
		}
	}
	for _, h := range eventHeaders {
		if ev := r.Header.Get(h); ev != "" && ev != "push" {
			res.Result, res.Reason = "ignored", fmt.Sprintf("%s event, not a push", sanitize(ev))
			return c.JSON(http.StatusOK, res)
		}
	}
	ev, err := webhook.DecodePush(r.Header.Get(echo.HeaderContentType), body)
	if err != nil {
		return err
	}
	res.Repository, res.Ref, res.SHA = ev.Repository.FullName, ev.Ref, ev.After
	ctx := log.IntoContext(r.Context(), log.FromContext(r.Context()).WithValues(
		"repository", ev.Repository.FullName, "ref", ev.Ref, "commit", ev.After))
	if ev.Deleted() {
		res.Result, res.Reason = "ignored", "the push deleted "+ev.Ref
		return c.JSON(http.StatusOK, res)
	}
	if wait {
		// Refused before anything is patched when this replica has enough open streams.
		release, err := s.waiting.acquire(ctx, 0)
		if err != nil {
			return err
		}
		defer release()
	}
	push := gitops.Push{
		Delivery:   res.Delivery,
		Repository: ev.Repository.FullName,
		URLs:       ev.URLs(),
		Ref:        ev.Ref,
		SHA:        ev.After,
		Before:     ev.Before,
	}
	result, err := s.Requester.Request(ctx, push)
	if err != nil {
		return err
	}
	res.Targets, res.Unreachable = result.Targets, result.Unreachable
	requested := 0
	for _, o := range result.Targets {
		if o.Requested() {
			requested++
		}
	}
	switch {
	case len(result.Targets) == 0:
		res.Result, res.Reason = "no-match", fmt.Sprintf("no GitRepository in any cluster follows %s of %s", ev.Ref, ev.Repository.FullName)
		return s.reply(c, http.StatusOK, res, key, keep)
	case requested == 0:
		res.Result, res.Reason = "no-match", "every Flux object fed by this push is suspended"
		return s.reply(c, http.StatusOK, res, key, keep)
	}
	res.Result = "accepted"
	if wait {
		return s.stream(c, res, push, result, timeout)
	}
	return s.reply(c, http.StatusAccepted, res, key, keep)
}

// reply answers res as JSON and, when keep is set, keeps the answer for a repeat of the
// delivery.
func (s *Server) reply(c echo.Context, code int, res HookResponse, key deliveryID, keep bool) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if keep {
		s.deliveries.add(key, answer{code: code, body: b}, len(b)+len(key.delivery)+len(key.body))
	}
	return c.JSONBlob(code, b)
}

// sanitize keeps a header value fit for a JSON answer and a log line.
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
