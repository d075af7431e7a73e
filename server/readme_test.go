package server

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// README.md's table of limits says what limits.go holds.
func TestReadmeLimits(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	secs := func(d time.Duration) string { return fmt.Sprintf("%d s", int(d.Seconds())) }
	for _, want := range []string{
		fmt.Sprintf("| body | %d MiB (`/hook`), %d KiB (API)", maxBodyBytes>>20, maxAPIBodyBytes>>10),
		fmt.Sprintf("| headers | %d KiB | `431`", maxHeaderBytes>>10),
		fmt.Sprintf("| %s, %s; %d min |", secs(readHeaderTimeout), secs(readTimeout), int(idleTimeout.Minutes())),
		fmt.Sprintf("| %d; %d MiB; one more waits up to %s for room | `503`, `Retry-After: %s` |", maxInFlight, maxBodyBytesInFlight>>20, secs(inFlightWait), overloadRetryAfter),
		fmt.Sprintf("| open `?wait=true` streams | %d ", maxWaiting),
		fmt.Sprintf("| %d, then one per %s; %s addresses kept |", authFailureBurst, secs(time.Duration(float64(time.Second)/float64(authFailureRate))), "10,000"),
		fmt.Sprintf("| %d per replica, %d per client (1 over its budget of signatures), %s each; their bodies %d MiB of the %d, each reserving what it has read (%d KiB, then its buffer) |",
			maxSignedReads, maxSignedReadsPerClient, secs(signedReadTimeout), maxSignedBodyBytes>>20, maxBodyBytesInFlight>>20, signedReadStep>>10),
		fmt.Sprintf("from a pool of %d such reads per replica, %d per client, for\nat most %s", maxSignedReads, maxSignedReadsPerClient, secs(signedReadTimeout)),
		fmt.Sprintf("from a %d MiB share", maxSignedBodyBytes>>20),
		fmt.Sprintf("IPv6 by /%d", ipv6ClientBits),
		fmt.Sprintf("| within %d min (%d MiB of answers kept) |", int(deliveryWindow.Minutes()), deliveryCacheBytes>>20),
		fmt.Sprintf("| default %s, at most %s;", strings.TrimSuffix(defaultWait.String(), "0s"), strings.TrimSuffix(maxWait.String(), "0s")),
		fmt.Sprintf("sends a heartbeat every %s", secs(heartbeatInterval)),
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md does not say %q", want)
		}
	}
	if maxTrackedAddresses != 10000 {
		t.Errorf("README.md says 10,000 addresses are kept, limits.go %d", maxTrackedAddresses)
	}
}
