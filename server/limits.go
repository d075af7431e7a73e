package server

import (
	"time"

	"golang.org/x/time/rate"
)

// Every limit of the HTTP surface, with why it has its value. README.md's Interface section
// lists them with the answer a sender gets; each answer has a JSON {"error"} body except
// where net/http answers before any handler runs (noted below).
const (
	// maxBodyBytes caps a /hook body (413). Gitea's push payload lists at most a few dozen
	// commits (setting webhook.PAYLOAD_COMMIT_LIMIT-like caps); 3 MiB leaves room for long
	// messages, as Flux's own receiver does.
	maxBodyBytes = 3 << 20

	// maxAPIBodyBytes caps a platform API request (413): a selector is a few hundred bytes.
	maxAPIBodyBytes = 64 << 10

	// maxHeaderBytes caps request headers: Gitea sends a handful, under 2 KiB. net/http
	// enforces it (plus its 4 KiB of read-buffer slack) while reading the request, before
	// any handler exists, so the answer is its own: 431 with a text/plain body, then the
	// connection is closed. It is the one limit whose answer is not JSON.
	maxHeaderBytes = 64 << 10

	// readHeaderTimeout and readTimeout bound a slow sender (slowloris): a client gets 10 s
	// for its headers and 30 s for its whole request. A sender whose headers are not in after
	// 10 s is disconnected without an answer (net/http's behaviour); one whose body is not in
	// after 30 s gets 408 if it still listens. Gitea sends a delivery within milliseconds; an
	// ingress that buffers requests (ingress-nginx does by default) sends it at once.
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second

	// writeTimeout bounds writing an answer. /hook answers within Gitea's 5 s delivery
	// timeout, the patches being done first. A waiting stream sets its own deadline per line.
	writeTimeout = 30 * time.Second

	// timeoutAnswerGrace is the write deadline given to the 408 answer of a request whose
	// body did not arrive in time: the connection's own write deadline has passed with it.
	timeoutAnswerGrace = 5 * time.Second

	// idleTimeout closes keep-alive connections nobody uses.
	idleTimeout = 2 * time.Minute

	// shutdownTimeout is how long in-flight requests get to finish on shutdown, within a
	// pod's default 30 s termination grace period.
	shutdownTimeout = 20 * time.Second

	// retryAfterSeconds is what a 503 for an unreachable Kubernetes API tells the sender to
	// wait before retrying.
	retryAfterSeconds = "10"

	// maxInFlight bounds the requests one replica handles at once on /hook and the platform
	// API, from reading the body to the answer: goroutines, and work queued behind the
	// Kubernetes client's own rate (50 QPS), which more concurrency would only lengthen. A
	// burst of 100 concurrent deliveries (the load test) fits without waiting.
	maxInFlight = 128

	// maxBodyBytesInFlight bounds the memory of the bodies those requests hold: an
	// authenticated request reserves its Content-Length (the route's limit when it sends
	// none) before reading; one read before it is authenticated (signed) reserves its buffer
	// as it grows (signedReadStep). A request of the largest body allocates that body once
	// (JSON) or twice (Gitea's form encoding; TestLargestBodyMemory), so bodies take 64 MiB,
	// 128 MiB at worst, under the Deployment's 256 MiB limit; 21 bodies of 3 MiB fit, and
	// thousands of ordinary (kilobytes) pushes.
	maxBodyBytesInFlight = 64 << 20

	// maxSignedBodyBytes is the share of maxBodyBytesInFlight that requests read before
	// they are authenticated may hold together, so that strangers never take what a request
	// with a Bearer token needs: the other 48 MiB stay for requests that authenticated. A
	// signed request's bytes leave the share once its signature verifies.
	maxSignedBodyBytes = 16 << 20

	// signedReadStep is what a request read before it is authenticated reserves first,
	// before it has sent more: its buffer then doubles as bytes arrive, each growth reserved
	// before it is made. A sender announcing 1 MiB and trickling a byte a second holds 32
	// KiB, not the 1 MiB it announced (the first round's figure: 64 such senders from 16
	// addresses made a Bearer push wait 1.18 s for room; benchmarks/README.md). Gitea's
	// push payloads are a few KiB: most fit in the first step.
	signedReadStep = 32 << 10

	// inFlightWait is how long a request over either limit waits for room before it is
	// answered 503 with Retry-After: a burst is smoothed out, and the answer still comes well
	// within Gitea's 5 s delivery timeout. 503, not 429: the replica is full, the sender did
	// nothing wrong and may as well be sent to another replica (ingress-nginx's
	// proxy_next_upstream http_503) or retry (curl --retry does, honouring Retry-After). A
	// sender that trickles its body holds its room at most readTimeout; behind an ingress
	// that buffers requests none does.
	inFlightWait = 2 * time.Second

	// overloadRetryAfter is the Retry-After of that 503: room frees up within a request's
	// duration, typically tens of milliseconds.
	overloadRetryAfter = "2"

	// maxSignedReads bounds the /hook requests one replica reads before authenticating them:
	// those carrying a webhook signature, which covers the body. maxSignedReadsPerClient
	// bounds them per client, and signedReadTimeout how long each may take to send its body:
	// strangers trickling bodies under a made-up signature hold a few of these places for
	// seconds, next to no bytes (signedReadStep), no in-flight slot, and nothing a Bearer
	// request needs; it takes 64 clients to fill the pool, and a signed delivery waits up to
	// inFlightWait for a place. A place is a goroutine and a connection, the bytes are
	// bounded apart (maxSignedBodyBytes), so the pool is wide. Gitea sends each delivery at
	// once (an ingress that buffers requests sends them whole), so legitimate signed reads
	// take milliseconds.
	maxSignedReads          = 256
	maxSignedReadsPerClient = 4
	signedReadTimeout       = 2 * time.Second

	// maxDeliveryLength bounds a sender's X-Gitea-Delivery (Gitea's are 36-character UUIDs):
	// it goes into logs, answers, Events and the request record on every Flux object.
	maxDeliveryLength = 128

	// maxWaiting bounds the /hook?wait=true streams one replica keeps open. A waiting
	// stream gives its maxInFlight slot back once the push is accepted (it holds no body,
	// only a goroutine and a watch on the targets), so waiting workflows never starve pushes;
	// beyond this many the push is refused with 503 before anything is patched.
	maxWaiting = 128

	// authFailureBurst and authFailureRate rate-limit failed authentication per kind of
	// credential and client: after 30 failures, one more every 2 s, others get 429 with
	// Retry-After instead of 401. The kinds are Bearer tokens (and requests with none),
	// answered from the headers, and webhook signatures, answered once the body is read: a
	// client guessing tokens never spends the budget of signed deliveries from the same
	// address. A request that authenticates is never limited, so a sender behind the same
	// address keeps working while someone else guesses; a client over its budget of
	// signatures has its signed requests read one at a time, still verified. The client is
	// the TCP peer, or the address a trusted proxy (--trusted-proxies) names in
	// X-Forwarded-For. Guessing a key is hopeless anyway; what this bounds is the HMAC work
	// over 3 MiB bodies and the log lines strangers can cause.
	authFailureBurst = 30
	authFailureRate  = rate.Limit(1.0 / 2)

	// maxTrackedAddresses bounds the failure table: least recently seen clients are
	// forgotten first (about 200 bytes each, 2 MiB in all).
	maxTrackedAddresses = 10000

	// ipv6ClientBits is the prefix of an IPv6 address that is one client: a /64, which a
	// host usually owns entirely (SLAAC and privacy addresses rotate within it), so rotating
	// addresses neither resets a client's budget nor fills the table.
	ipv6ClientBits = 64

	// deliveryWindow is how long a delivery's answer is kept: the same X-Gitea-Delivery with
	// the same body (an Actions step's curl --retry, a proxy's retry, a replay of a captured
	// request) gets the earlier answer, status and body, without asking Kubernetes again.
	// Gitea's own "redeliver" sends a new delivery id; the domain absorbs that repeat (the
	// same repository and commit) across replicas.
	deliveryWindow = 10 * time.Minute

	// deliveryCacheBytes bounds the memory of the answers kept for deliveryWindow, least
	// recently used dropped first; an answer is typically well under 1 KiB.
	deliveryCacheBytes = 4 << 20

	// maxListedTargets bounds the targets one /hook answer lists (about 150 bytes each):
	// a region-wide push matches thousands; the answer's per-cluster counts cover them all.
	maxListedTargets = 1000
	// defaultWait and maxWait bound /hook?wait=true: a workflow step waits for Flux at most
	// this long (the commit statuses follow anyway).
	defaultWait = 5 * time.Minute
	maxWait     = 30 * time.Minute

	// heartbeatInterval is how often a ?wait=true stream says it is still waiting while
	// Flux is silent: proxies cut a connection that carries nothing for a while
	// (ingress-nginx's proxy_read_timeout and most load balancers' idle timeouts are 60 s),
	// which would turn a slow deploy into a red job. 20 s leaves room for two lines lost to
	// buffering within the shortest common timeout.
	heartbeatInterval = 20 * time.Second
)

// limits holds the values a Server uses; tests shorten them. The zero value means the
// constants above.
type limits struct {
	readHeaderTimeout, readTimeout, writeTimeout, idleTimeout time.Duration
	signedReadTimeout                                         time.Duration
	maxInFlight, maxWaiting                                   int
	maxSignedReads, maxSignedReadsPerClient                   int
	maxBodyBytesInFlight, maxSignedBodyBytes                  int64
	inFlightWait                                              time.Duration
	authFailureBurst                                          int
	authFailureRate                                           rate.Limit
	maxTrackedAddresses                                       int
	deliveryWindow                                            time.Duration
	deliveryCacheBytes                                        int
	heartbeatInterval                                         time.Duration
}

func (l limits) withDefaults() limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.readHeaderTimeout, readHeaderTimeout)
	def(&l.readTimeout, readTimeout)
	def(&l.signedReadTimeout, signedReadTimeout)
	def(&l.writeTimeout, writeTimeout)
	def(&l.idleTimeout, idleTimeout)
	def(&l.inFlightWait, inFlightWait)
	def(&l.deliveryWindow, deliveryWindow)
	def(&l.heartbeatInterval, heartbeatInterval)
	defInt(&l.maxInFlight, maxInFlight)
	defInt(&l.maxWaiting, maxWaiting)
	defInt(&l.maxSignedReads, maxSignedReads)
	defInt(&l.maxSignedReadsPerClient, maxSignedReadsPerClient)
	defInt(&l.authFailureBurst, authFailureBurst)
	defInt(&l.maxTrackedAddresses, maxTrackedAddresses)
	defInt(&l.deliveryCacheBytes, deliveryCacheBytes)
	if l.maxBodyBytesInFlight == 0 {
		l.maxBodyBytesInFlight = maxBodyBytesInFlight
	}
	if l.maxSignedBodyBytes == 0 {
		l.maxSignedBodyBytes = maxSignedBodyBytes
	}
	if l.authFailureRate == 0 {
		l.authFailureRate = authFailureRate
	}
	return l
}
