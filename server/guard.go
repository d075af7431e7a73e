package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The guards of the HTTP surface against more than it should take: requests in flight,
// waiting streams, failed authentication per address, and repeated deliveries.

// errOverloaded: the replica has maxInFlight requests, maxBodyBytesInFlight of bodies or
// maxWaiting streams already.
var errOverloaded = errors.New("too many requests in flight on this replica, retry later")

// authLimitedError: the client address failed to authenticate too often.
type authLimitedError struct{ RetryAfter time.Duration }

func (e *authLimitedError) Error() string {
	return fmt.Sprintf("too many failed authentications from this address: retry in %s", e.RetryAfter.Round(time.Second))
}

var (
	httpInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flux_webhook_http_requests_in_flight",
		Help: fmt.Sprintf("Requests being handled on /hook and the platform API (at most %d per replica).", maxInFlight),
	})
	httpWaiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flux_webhook_http_waiting_streams",
		Help: fmt.Sprintf("Open /hook?wait=true streams (at most %d per replica).", maxWaiting),
	})
	httpBodyBytes = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flux_webhook_http_body_bytes_in_flight",
		Help: fmt.Sprintf("Bytes reserved by the bodies of requests being handled (at most %d MiB per replica).", maxBodyBytesInFlight>>20),
	})
	httpSignedReads = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flux_webhook_http_signed_reads_in_flight",
		Help: fmt.Sprintf("Signed /hook requests being read before their signature is checked (at most %d per replica, %d per client address).",
			maxSignedReads, maxSignedReadsPerClient),
	})
)

func init() { metrics.Registry.MustRegister(httpInFlight, httpWaiting, httpBodyBytes, httpSignedReads) }

// slots is a counting semaphore.
type slots struct {
	ch    chan struct{}
	gauge prometheus.Gauge
}

func newSlots(n int, gauge prometheus.Gauge) *slots {
	return &slots{ch: make(chan struct{}, n), gauge: gauge}
}

// acquire takes a slot, waiting up to wait for one; the returned release may be called more
// than once.
func (s *slots) acquire(ctx context.Context, wait time.Duration) (release func(), err error) {
	select {
	case s.ch <- struct{}{}:
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case s.ch <- struct{}{}:
		case <-t.C:
			return nil, errOverloaded
		case <-ctx.Done():
			return nil, errOverloaded
		}
	}
	s.gauge.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			<-s.ch
			s.gauge.Dec()
		})
	}, nil
}

// limitInFlight holds a slot for each authenticated request from the start of its handler
// to its answer; over maxInFlight a request waits up to inFlightWait, then gets 503. The slot
// and the bytes its body reserved (readBody) are given back when the request ends, or
// earlier by a waiting stream, which holds a waiting slot instead.
func (s *Server) limitInFlight(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		release, err := s.inFlight.acquire(c.Request().Context(), s.lim.inFlightWait)
		if err != nil {
			return err
		}
		st := requestOf(c)
		st.releases = append(st.releases, release)
		return next(c)
	}
}

// reserveBody reserves n bytes of the budget of bodies in flight for the request, waiting up
// to inFlightWait for them; they are given back with its slot. A request not yet
// authenticated reserves them from the share of the budget such requests may hold too,
// given back once it is (request.vouched).
func (s *Server) reserveBody(c echo.Context, n int64) error {
	if n <= 0 {
		return nil
	}
	st := requestOf(c)
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.lim.inFlightWait)
	defer cancel()
	if st.unauthenticated {
		if err := s.signedBodyBytes.Acquire(ctx, n); err != nil {
			return errOverloaded
		}
		if st.shareBytes == 0 {
			st.releaseShare = func() {
				s.signedBodyBytes.Release(st.shareBytes)
				st.shareBytes = 0
			}
		}
		st.shareBytes += n
	}
	if err := s.bodyBytes.Acquire(ctx, n); err != nil {
		return errOverloaded // a share taken above is given back with the request
	}
	httpBodyBytes.Add(float64(n))
	st.releases = append(st.releases, func() {
		s.bodyBytes.Release(n)
		httpBodyBytes.Sub(float64(n))
	})
	return nil
}

// credential is the kind of credential a request failed with. Each kind has its own budget
// of failures per client: a client guessing Bearer tokens (answered from the headers) never
// spends the budget of the signed deliveries sent from the same address, nor the reverse.
type credential uint8

const (
	// bearerCredential: a Bearer token, or none (/hook and the platform API alike), answered
	// from the headers.
	bearerCredential credential = iota
	// signatureCredential: a webhook signature, answered once the body it covers is read.
	signatureCredential
)

// failureKey is what a budget of failures belongs to: a kind of credential and a client.
type failureKey struct {
	kind   credential
	client netip.Prefix
}

// authLimiter counts failed authentications per kind of credential and client.
type authLimiter struct {
	burst int
	every rate.Limit
	table *lru[failureKey, *rate.Limiter]
}

func newAuthLimiter(l limits) *authLimiter {
	// No expiry: a client that keeps failing keeps its empty bucket. Only the size bound
	// forgets clients, least recently seen first.
	return &authLimiter{burst: l.authFailureBurst, every: l.authFailureRate,
		table: newLRU[failureKey, *rate.Limiter](l.maxTrackedAddresses, 0, nil)}
}

// clientKey identifies a client by its address (the TCP peer, or what a trusted proxy
// says): an IPv4 address, or an IPv6 address's /64, which one host usually owns entirely
// (its privacy addresses rotate within it). An address that does not parse (none in
// practice) shares one key.
func clientKey(ip string) netip.Prefix {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}
	}
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = ipv6ClientBits
	}
	p, _ := a.Prefix(bits)
	return p
}

func (a *authLimiter) limiter(k failureKey) *rate.Limiter {
	return a.table.getOrAdd(k, func() *rate.Limiter { return rate.NewLimiter(a.every, a.burst) })
}

// fail records a failed authentication with a credential of kind from ip and reports
// whether the client is over that budget, and when it may try again.
func (a *authLimiter) fail(kind credential, ip string, now time.Time) (time.Duration, bool) {
	lim := a.limiter(failureKey{kind, clientKey(ip)})
	if lim.AllowN(now, 1) {
		return 0, false
	}
	r := lim.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	return max(d, time.Second), true
}

// over reports whether ip has no failure left in its budget for kind: its signed requests
// are then read one at a time (signedReads), still verified.
func (a *authLimiter) over(kind credential, ip string, now time.Time) bool {
	lim, ok := a.table.get(failureKey{kind, clientKey(ip)})
	return ok && lim.TokensAt(now) < 1
}

// deliveryID is what identifies a delivery for its replay: the sender's delivery id and
// the digest of the body it came with. The same id with another body is another request.
type deliveryID struct {
	delivery string
	body     [sha256.Size]byte
}

// answer is a kept /hook answer.
type answer struct {
	code int
	body []byte
}

// replayKey returns the key of a request's answer, false when the sender gave no delivery
// id of its own (one generated here never repeats). The digest covers the body, the path and
// query (/hook/<owner>/<repo>/<ref>?sha= names what is pushed) and who authenticated.
func replayKey(c echo.Context, body []byte) (deliveryID, bool) {
	st := requestOf(c)
	if !st.senderDelivery {
		return deliveryID{}, false
	}
	h := sha256.New()
	h.Write([]byte(st.principal.String() + "\x00" + c.Request().URL.RequestURI() + "\x00"))
	h.Write(body)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return deliveryID{delivery: st.delivery, body: sum}, true
}
