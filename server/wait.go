package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
)

// errStreamFailed: a waiting answer ends as a failure. Its status line went out as 200
// before Flux answered, so the stream ends without its terminating chunk instead, which
// clients report as an error (curl exits 18); observe counts and logs it first.
var errStreamFailed = errors.New("stream ended as a failure")

// mimeNDJSON is the streaming JSON a waiting sender can ask for with Accept.
const mimeNDJSON = "application/x-ndjson"

// waitParams parses ?wait=true[&timeout=5m].
func waitParams(c echo.Context) (bool, time.Duration, error) {
	q := c.QueryParams()
	// Given twice, a parameter could mean one thing here and another to a proxy in front.
	if len(q["wait"]) > 1 || len(q["timeout"]) > 1 {
		return false, 0, fmt.Errorf("%w: wait and timeout may each be given once", errBadQuery)
	}
	wait := false
	if v := q.Get("wait"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, 0, fmt.Errorf("%w: wait=%q: want true or false", errBadQuery, sanitize(v))
		}
		wait = b
	}
	timeout := defaultWait
	if v := q.Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxWait {
			return false, 0, fmt.Errorf("%w: timeout=%q: want a duration up to %s", errBadQuery, sanitize(v), maxWait)
		}
		timeout = d
	}
	return wait, timeout, nil
}

// stream answers a waiting sender: 200, a line when the push is accepted, one line per
// target as Flux answers (and a heartbeat line every heartbeatInterval while none does), and
// a summary. The status line goes out before Flux's answers are
// known, so a failure cannot change it: when any target failed or got no answer, the stream
// ends without its terminating chunk, which clients report as an error (curl exits 18, even
// without --fail-with-body) after the summary line.
func (s *Server) stream(c echo.Context, res api.HookResponse, push gitops.Push, result gitops.Result, timeout time.Duration) error {
	// The push is accepted: the stream holds a waiting slot (taken by hook), not one of the
	// slots of requests in flight.
	requestOf(c).release()
	ndjson := strings.Contains(c.Request().Header.Get(echo.HeaderAccept), mimeNDJSON)
	w := c.Response()
	if ndjson {
		w.Header().Set(echo.HeaderContentType, mimeNDJSON)
	} else {
		w.Header().Set(echo.HeaderContentType, echo.MIMETextPlainCharsetUTF8)
	}
	w.Header().Set("X-Accel-Buffering", "no") // ask ingress-nginx not to buffer the stream
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w.Writer)
	write := func(text string, line api.StreamLine) {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if ndjson {
			b, _ := json.Marshal(line)
			_, _ = w.Write(append(b, '\n'))
		} else {
			_, _ = fmt.Fprintln(w, text)
		}
		_ = rc.Flush()
	}
	requested := 0
	for _, o := range result.Targets {
		if o.Reported() {
			requested++
		}
	}
	write(fmt.Sprintf("accepted: %s, delivery %s: waiting up to %s for %d Flux objects",
		describePush(res), res.Delivery, timeout, requested), api.StreamLine{Event: "accepted", HookResponse: &res})
	counts := map[string]int{}
	answered := 0
	start := time.Now()
	answers := s.Awaiter.Await(c.Request().Context(), push, result, timeout)
	// A line while Flux is silent keeps proxies from taking the stream for idle.
	heartbeat := time.NewTicker(s.lim.heartbeatInterval)
	defer heartbeat.Stop()
stream:
	for {
		select {
		case r, ok := <-answers:
			if !ok {
				break stream
			}
			counts[r.State]++
			answered++
			write(fmt.Sprintf("%-8s %s  %s  (%.1fs)", r.State, r.Target.Context(), r.Description, r.Elapsed.Seconds()),
				api.StreamLine{Event: "target", TargetResult: &r, Seconds: r.Elapsed.Seconds()})
		case <-heartbeat.C:
			took := time.Since(start).Seconds()
			write(fmt.Sprintf("waiting: %d of %d answered (%.0fs)", answered, requested, took),
				api.StreamLine{Event: "heartbeat", Counts: counts, Seconds: took})
		case <-s.stopping:
			// Flux's answer is not known here any more: say so, and end as a failure (a job
			// must not go green without it); the commit statuses still follow.
			ok := false
			write("interrupted: flux-webhook is shutting down; Flux's answers follow as commit statuses",
				api.StreamLine{Event: "summary", OK: &ok, Counts: counts, Seconds: time.Since(start).Seconds()})
			return errStreamFailed
		}
	}
	if c.Request().Context().Err() != nil {
		return nil // the sender left
	}
	ok := counts[api.StateFailure] == 0 && counts[api.StateError] == 0
	verdict := "OK"
	if !ok {
		verdict = "FAILED"
	}
	write(fmt.Sprintf("summary: %d success, %d failure, %d error, %d warning in %.1fs: %s",
		counts[api.StateSuccess], counts[api.StateFailure], counts[api.StateError], counts[api.StateWarning],
		time.Since(start).Seconds(), verdict), api.StreamLine{Event: "summary", OK: &ok, Counts: counts, Seconds: time.Since(start).Seconds()})
	if !ok {
		return errStreamFailed
	}
	return nil
}

// describePush names what a push was, for the stream's first line.
func describePush(res api.HookResponse) string {
	what := fmt.Sprintf("%s %s %s", res.Repository, res.Ref, api.ShortSHA(res.SHA))
	switch {
	case res.Package != "" && res.SHA != "":
		what = fmt.Sprintf("%s:%s (built from %s)", res.Package, res.Tag, what)
	case res.Package != "":
		what = fmt.Sprintf("%s:%s (records no commit: no commit statuses)", res.Package, res.Tag)
	}
	return what
}
