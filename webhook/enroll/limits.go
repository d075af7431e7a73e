package enroll

import "time"

// Limits of enrollment, each with why it has its value.
const (
	// MaxScopes bounds the scopes enrolled at once: the record of one scope is about 300
	// bytes, so 2,000 stay well inside a ConfigMap's 1 MiB; a region's few hundred
	// repositories fit many times over. Scopes beyond it are counted (Record.Omitted) and
	// named in the log, not enrolled.
	MaxScopes = 2000
	// DefaultCallsPerSecond and callBurst bound the leader's calls to the forge: enrolling
	// or rotating 500 repositories then takes under two minutes, while Gitea keeps serving
	// the calls that verify pushes and post statuses.
	DefaultCallsPerSecond = 10
	callBurst             = 10
	// workers is how many scopes are written at once: enough to keep the call rate busy
	// through Gitea's latency (tens of milliseconds a write).
	workers = 4
	// tick is how often the leader looks for work: a changed hook key is noticed within it.
	tick = 2 * time.Second
	// desiredInterval is how often the scopes are read again (the scopes ConfigMap, and the
	// repositories Flux sources follow, from the caches): a repository a Flux source starts
	// to follow is enrolled within it plus one write.
	desiredInterval = 15 * time.Second
	// recordInterval bounds how often the record ConfigMap is written while a long pass (a
	// rotation of hundreds of scopes) runs; a pass that ends writes it at once.
	recordInterval = 5 * time.Second
	// backoffBase and backoffMax bound the retries of a scope that cannot be written:
	// 5 s, 10 s, 20 s, ... 5 min, ±20% jitter so that many failing scopes do not retry in step.
	backoffBase = 5 * time.Second
	backoffMax  = 5 * time.Minute
	// callTimeout bounds the forge calls of one scope (at most five).
	callTimeout = 30 * time.Second
	// maxErrorLength clips a recorded error: a forge's answer can be long.
	maxErrorLength = 256
	// maxListedFailures bounds the scopes /readyz names.
	maxListedFailures = 5
	// DefaultResync is how often each scope is checked (the secret present, the variable
	// right, the webhook in place) when nothing changed: two calls a scope.
	DefaultResync = 10 * time.Minute
	// DefaultRotationMax bounds how long a replaced hook key stays valid while enrolled
	// secrets still hold its tokens (a scope that cannot be written holds the rotation
	// back, never for longer than this).
	DefaultRotationMax = time.Hour
)
