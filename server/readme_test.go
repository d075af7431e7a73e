package server

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	requests "github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/docs"
)

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func secs(d time.Duration) string { return fmt.Sprintf("%d s", int(d.Seconds())) }

func code(c int) string { return fmt.Sprintf("`%d`", c) }

// minutes writes a duration as the README's ?wait timeouts do: 5m, 30m.
func minutes(d time.Duration) string { return strings.TrimSuffix(d.String(), "0s") }

// limitRows are the rows of README.md's limits table (Interface), by their first cell: what
// the value and answer cells say, in order, from the constants (every number of those cells
// is one of these). A row another package holds to its constants names that package.
var limitRows = []struct {
	limit string
	says  []string
	owner string
}{
	{limit: "body", says: []string{fmt.Sprintf("%d MiB (`/hook`)", maxBodyBytes>>20), fmt.Sprintf("%d KiB (API)", maxAPIBodyBytes>>10),
		code(http.StatusRequestEntityTooLarge)}},
	{limit: "headers", says: []string{fmt.Sprintf("%d KiB", maxHeaderBytes>>10), code(http.StatusRequestHeaderFieldsTooLarge)}},
	{limit: "headers, whole request received within; idle connection", says: []string{secs(readHeaderTimeout), secs(readTimeout),
		fmt.Sprintf("%d min", int(idleTimeout.Minutes())), code(http.StatusRequestTimeout)}},
	{limit: "requests in flight (`/hook` and API); their bodies", says: []string{fmt.Sprint(maxInFlight),
		fmt.Sprintf("%d MiB", maxBodyBytesInFlight>>20), "up to " + secs(inFlightWait), code(http.StatusServiceUnavailable),
		"`Retry-After: " + overloadRetryAfter + "`"}},
	{limit: "open `?wait=true` streams", says: []string{fmt.Sprint(maxWaiting), code(http.StatusServiceUnavailable)}},
	{limit: "failed authentications per client (the TCP peer, or a trusted proxy's `X-Forwarded-For`; IPv6 by /64) and kind of credential (Bearer, signature)",
		says: []string{fmt.Sprint(authFailureBurst),
			"one per " + secs(time.Duration(float64(time.Second)/float64(authFailureRate))),
			docs.Thousands(maxTrackedAddresses) + " addresses", code(http.StatusTooManyRequests), code(http.StatusUnauthorized)}},
	{limit: "signed requests read before their signature is checked", says: []string{fmt.Sprintf("%d per replica", maxSignedReads),
		fmt.Sprintf("%d per client", maxSignedReadsPerClient), secs(signedReadTimeout) + " each",
		fmt.Sprintf("%d MiB of the %d", maxSignedBodyBytes>>20, maxBodyBytesInFlight>>20), fmt.Sprintf("(%d KiB, then its buffer)", signedReadStep>>10),
		code(http.StatusServiceUnavailable), "`Retry-After: " + overloadRetryAfter + "`", code(http.StatusRequestTimeout)}},
	{limit: "the same `X-Gitea-Delivery` and body again", says: []string{fmt.Sprintf("within %d min", int(deliveryWindow.Minutes())),
		fmt.Sprintf("%d MiB of answers", deliveryCacheBytes>>20)}},
	{limit: "`?wait` timeout", says: []string{"default " + minutes(defaultWait), "at most " + minutes(maxWait), code(http.StatusBadRequest)}},
	{limit: "Flux objects one push may feed (all clusters)", says: []string{docs.Thousands(requests.DefaultMaxTargets) + " (`--max-push-targets`)",
		code(http.StatusUnprocessableEntity)}},
	{limit: "targets listed in one `/hook` answer", says: []string{docs.Thousands(maxListedTargets)}},
	{limit: "new platform jobs (all replicas together); targets of one job", owner: "gitops/jobs"},
}

// README.md's table of limits says what limits.go (and the other packages' constants it
// quotes) holds, row for row: a row without its constants here, or a constant's row gone,
// fails too.
func TestReadmeLimits(t *testing.T) {
	section, err := docs.Section(readme(t), "Interface")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := docs.Table(section, "limit", "value", "answer")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		name := r.Cells[0]
		seen[name] = true
		found := false
		for _, l := range limitRows {
			if l.limit != name {
				continue
			}
			found = true
			if l.owner != "" {
				continue // its package's test holds it
			}
			if err := docs.SaysInOrder(strings.Join(r.Cells[1:], " | "), l.says...); err != nil {
				t.Errorf("README.md:%d, limit %q: %v", r.Line, name, err)
			}
		}
		if !found {
			t.Errorf("README.md:%d: limit %q is held to no constant (add it to limitRows)", r.Line, name)
		}
	}
	for _, l := range limitRows {
		if !seen[l.limit] {
			t.Errorf("README.md's limits table has no row %q", l.limit)
		}
	}
}

// What the README's prose quotes of limits.go.
func TestReadmeQuotesLimits(t *testing.T) {
	text := strings.Join(strings.Fields(readme(t)), " ")
	for _, want := range []string{
		// Nothing for the unauthenticated.
		fmt.Sprintf("from a pool of %d such reads per replica, %d per client, for at most %s", maxSignedReads, maxSignedReadsPerClient, secs(signedReadTimeout)),
		fmt.Sprintf("from a %d MiB share", maxSignedBodyBytes>>20),
		fmt.Sprintf("IPv6 by /%d", ipv6ClientBits),
		// The threat model.
		fmt.Sprintf("(then from a bounded pool, %d per client, %s, reserving what it read from a %d MiB share;", maxSignedReadsPerClient, secs(signedReadTimeout), maxSignedBodyBytes>>20),
		fmt.Sprintf("sends a heartbeat every %s", secs(heartbeatInterval)),
		fmt.Sprintf("gives in-flight requests %s,", secs(shutdownTimeout)),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("README.md does not say %q", want)
		}
	}
}
