package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/api"
)

// handleHook handles POST /hook and POST /hook/<owner>/<repo>[/<ref>], already
// authenticated: decode the delivery (or resolve the target the path names, decode), hand the
// push to the intake (which verifies its claim and requests the reconciles), answer. Waiting for
// Flux happens after the answer, in the reporter (or in the stream, with ?wait=true).
func (s *Server) handleHook(c echo.Context) error {
	st := requestOf(c)
	body, err := s.readBody(c, maxBodyBytes)
	if err != nil {
		return err
	}
	wait, timeout, err := waitParams(c)
	if err != nil {
		return err
	}
	res := api.HookResponse{Delivery: st.delivery}
	// A repeat of a delivery already answered gets that answer, without asking Gitea or
	// Kubernetes again. A waiting stream is not kept: its repeat waits again.
	key, keep := replayKey(c, body)
	keep = keep && !wait
	if keep {
		if a, ok := s.deliveries.get(key); ok {
			log.FromContext(c.Request().Context()).Info("delivery repeated: earlier answer returned")
			c.Response().Header().Set("X-Delivery-Replayed", "true")
			return c.JSONBlob(a.code, a.body)
		}
	}
	push, ignored, err := s.decode(c, body)
	switch {
	case err != nil:
		return err
	case ignored != "":
		res.Result, res.Reason = "ignored", ignored
		return c.JSON(http.StatusOK, res)
	}
	res.Repository, res.Ref, res.SHA = push.Repository, push.Ref, push.SHA
	values := []any{"repository", push.Repository, "ref", push.Ref, "commit", push.SHA}
	if push.OCI != nil {
		res.Package, res.Tag = push.OCI.Package, push.OCI.Tag
		values = []any{"package", push.OCI.Package, "tag", push.OCI.Tag}
	}
	ctx := log.IntoContext(c.Request().Context(), log.FromContext(c.Request().Context()).WithValues(values...))
	if wait {
		// Refused before anything is patched when this replica has enough open streams.
		release, err := s.waiting.acquire(ctx, 0)
		if err != nil {
			return err
		}
		defer release()
	}
	acc, err := s.Intake.Accept(ctx, st.principal, push)
	if err != nil {
		return err
	}
	res.Repository, res.Ref, res.SHA = acc.Push.Repository, acc.Push.Ref, acc.Push.SHA
	if acc.Push.OCI != nil && acc.Push.SHA != "" {
		ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("repository", acc.Push.Repository, "commit", acc.Push.SHA))
	}
	if acc.Ignored != "" {
		res.Result, res.Reason = "ignored", acc.Ignored
		return s.reply(c, http.StatusOK, res, key, keep)
	}
	result := acc.Result
	res.Clusters, res.Targets, res.Unreachable = result.Clusters, result.Targets, result.Unreachable
	if n := len(res.Targets); n > maxListedTargets {
		// The counts per cluster say it all; the stream and the logs have every target.
		res.Targets, res.TargetsOmitted = res.Targets[:maxListedTargets], n-maxListedTargets
	}
	reported := 0
	for _, o := range result.Targets {
		if o.Reported() {
			reported++
		}
	}
	switch {
	case len(result.Targets) == 0 && slices.ContainsFunc(result.Clusters, func(c api.ClusterTargets) bool { return c.Refused > 0 }):
		res.Result, res.Reason = "no-match", "no Flux source follows "+acc.Push.What()+" in a cluster that may follow it: the clusters refused may follow only public repositories and those granted to them"
		return s.reply(c, http.StatusOK, res, key, keep)
	case len(result.Targets) == 0:
		res.Result, res.Reason = "no-match", "no Flux source in any cluster follows "+acc.Push.What()
		return s.reply(c, http.StatusOK, res, key, keep)
	case reported == 0:
		res.Result, res.Reason = "no-match", "every Flux object fed by this push is suspended"
		return s.reply(c, http.StatusOK, res, key, keep)
	}
	res.Result = "accepted"
	if acc.Push.Head != "" {
		res.Reason = fmt.Sprintf("%s moved on to %s before this push arrived: it is reported as superseded, the later push is what reconciles", push.Ref, acc.Push.Head)
	}
	if wait {
		return s.stream(c, res, acc.Push, result, timeout)
	}
	return s.reply(c, http.StatusAccepted, res, key, keep)
}

// reply answers res as JSON and, when keep is set, keeps the answer for a repeat of the
// delivery.
func (s *Server) reply(c echo.Context, code int, res api.HookResponse, key deliveryID, keep bool) error {
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
