// Package credentials holds the secrets flux-webhook authenticates with and signs with. It
// follows the Kubernetes Secrets External Secrets syncs from OpenBao (and the ExternalSecrets
// that own them), refuses a value that is weak or serves two purposes, keeps a rotated value
// valid for a grace period, and derives and verifies the scoped Bearer tokens a Gitea Actions
// workflow presents on /hook: a token speaks for one repository or one organization only.
package credentials

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Purpose names what a secret is for. One value serves one purpose: a value shared by two
// (the hook key also used as the webhook key, say) would let whoever holds it for the weaker
// purpose act for the stronger one.
type Purpose string

// The purposes of flux-webhook's secrets.
const (
	// HookKey is the master key scoped /hook tokens are derived from (DeriveToken).
	HookKey Purpose = "hook key"
	// WebhookKey is the HMAC key of native Gitea webhooks (X-Gitea-Signature). It is
	// configured in Gitea and never handed to a workflow.
	WebhookKey Purpose = "webhook key"
	// SharedToken is the compatibility Bearer token that speaks for every repository.
	SharedToken Purpose = "shared token"
	// PlatformToken is the Bearer token of the platform API.
	PlatformToken Purpose = "platform token"
	// GiteaToken is flux-webhook's own Gitea API token.
	GiteaToken Purpose = "gitea token"
	// RecordKey authenticates the request records flux-webhook writes on Flux objects.
	RecordKey Purpose = "record key"
	// EnrollToken is the Gitea API token enrollment writes Actions secrets, variables and
	// organization webhooks with: more than posting statuses needs, so it is a token of its
	// own and GiteaToken stays narrow.
	EnrollToken Purpose = "gitea enrollment token"
)

// MinSecretBytes is the shortest value accepted for any purpose: 256 bits, what an HMAC-SHA256
// key needs to be as strong as its output, and what `openssl rand -hex 16` (32 characters)
// already gives. Gitea's own API tokens are 40 characters.
const MinSecretBytes = 32

var (
	// ErrWeak: a value shorter than MinSecretBytes.
	ErrWeak = fmt.Errorf("shorter than %d bytes", MinSecretBytes)
	// ErrReused: a value already serving another purpose.
	ErrReused = errors.New("already used for another purpose")
	// ErrMissing: no value is set for a purpose.
	ErrMissing = errors.New("no value")
)

// Keyring holds, per purpose, the values valid now: the current one, values the Secret
// itself lists as still valid (a key being rotated), and for Grace after a change the value
// it replaced (or, for a purpose held by HoldRotation, until its copies are replaced).
type Keyring struct {
	// Grace is how long a replaced value stays valid, so senders caught mid-rotation still
	// get through.
	Grace time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu    sync.RWMutex
	slots map[Purpose]*slot
	holds map[Purpose]time.Duration // HoldRotation's maximum per purpose
}

type slot struct {
	current       []byte
	extra         [][]byte // listed by the Secret itself as still valid
	previous      []byte
	previousUntil time.Time
	refused       error  // why the last value given was not taken
	held          bool   // previous waits for Release (until previousUntil at most)
	released      string // the fingerprint Release last named
	changed       time.Time
}

func (k *Keyring) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// Set makes value the current value of p, and extra values (a rotation's previous key)
// valid beside it. Surrounding whitespace is dropped (a Secret written by hand often ends
// with a newline). The value it replaces stays valid for Grace (or as HoldRotation says).
//
// A value shorter than MinSecretBytes, or equal to a value of another purpose, is refused:
// Set returns why, and p then has no current value (only the one it replaces, for Grace).
// An empty value means p has no value at all: every request that needs it is refused.
func (k *Keyring) Set(p Purpose, value string, extra ...string) error {
	v := []byte(strings.TrimSpace(value))
	var more [][]byte
	for _, e := range extra {
		if e := []byte(strings.TrimSpace(e)); len(e) > 0 {
			more = append(more, e)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.slots == nil {
		k.slots = map[Purpose]*slot{}
	}
	s := k.slots[p]
	if s == nil {
		s = &slot{}
		k.slots[p] = s
	}
	var err error
	for _, c := range append([][]byte{v}, more...) {
		if err = k.checkLocked(p, c); err != nil {
			break
		}
	}
	if len(v) == 0 {
		err = nil
	}
	next := v
	if err != nil || len(v) == 0 {
		next, more = nil, nil
	}
	if s.current != nil && !equal(next, s.current) {
		s.previous, s.previousUntil, s.held, s.changed = s.current, k.now().Add(k.Grace), false, k.now()
		// A held purpose keeps the replaced value until Release says every copy of what
		// derives from it was replaced, at most its maximum; not for a value refused (there
		// is nothing to replace the copies with), nor when the release came first.
		if hold, ok := k.holds[p]; ok && next != nil && Fingerprint(next) != s.released {
			s.previousUntil, s.held = k.now().Add(max(hold, k.Grace)), true
		}
	}
	if len(v) == 0 {
		s.previous, s.held = nil, false // an emptied Secret withdraws every value at once
	}
	s.current, s.extra, s.refused = next, more, err
	if err != nil {
		return fmt.Errorf("%s refused: %w", p, err)
	}
	return nil
}

// HoldRotation makes a value of p that is replaced stay valid, instead of for Grace, until
// Release names the new value (and for Grace after that, for senders that read a copy of the
// old one just before), at most max after the change. Enrollment holds the hook key: the
// tokens derived from it sit in Gitea's Actions secrets, and the replaced key stays valid
// until every one of them holds the new token.
func (k *Keyring) HoldRotation(p Purpose, max time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.holds == nil {
		k.holds = map[Purpose]time.Duration{}
	}
	k.holds[p] = max
}

// Release ends the hold on p's replaced value once p's current value has the fingerprint fp
// (Fingerprint): the replaced value then stays valid for Grace more. A release naming
// another value changes nothing now; one that comes before the value it names (a replica
// that reads the new Secret late) is remembered, and that change then waits Grace only.
func (k *Keyring) Release(p Purpose, fp string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.slots[p]
	if s == nil {
		s = &slot{}
		if k.slots == nil {
			k.slots = map[Purpose]*slot{}
		}
		k.slots[p] = s
	}
	s.released = fp
	if !s.held || s.current == nil || Fingerprint(s.current) != fp {
		return
	}
	s.held = false
	if until := k.now().Add(k.Grace); until.Before(s.previousUntil) {
		s.previousUntil = until
	}
}

// Rotation is how a purpose's last change stands.
type Rotation struct {
	// Current and Previous are the fingerprints of the current value and of the value it
	// replaced ("" when there is none, or it is no longer valid).
	Current, Previous string
	// Changed is when the current value replaced the previous one.
	Changed time.Time
	// Until is how long the previous value stays valid at most; Held is true while it waits
	// for Release.
	Until time.Time
	Held  bool
}

// Rotation returns how p's last change stands.
func (k *Keyring) Rotation(p Purpose) Rotation {
	k.mu.RLock()
	defer k.mu.RUnlock()
	s := k.slots[p]
	if s == nil {
		return Rotation{}
	}
	var r Rotation
	if s.current != nil {
		r.Current = Fingerprint(s.current)
	}
	if s.previous != nil && k.now().Before(s.previousUntil) {
		r.Previous, r.Changed, r.Until, r.Held = Fingerprint(s.previous), s.changed, s.previousUntil, s.held
	}
	return r
}

// Fingerprint names a value without revealing it: 12 hex digits of SHA-256 over a label and
// the value. A key's fingerprint is its "generation" in logs, the enrollment record and
// the CLI; from 48 bits of a hash of a key of at least 256, nothing of the key follows.
func Fingerprint(v []byte) string {
	h := sha256.New()
	h.Write([]byte("flux-webhook key fingerprint v1\x00"))
	h.Write(v)
	return hex.EncodeToString(h.Sum(nil)[:6])
}

// checkLocked returns why v may not become a value of p.
func (k *Keyring) checkLocked(p Purpose, v []byte) error {
	if len(v) == 0 {
		return nil
	}
	if len(v) < MinSecretBytes {
		return ErrWeak
	}
	for q, s := range k.slots {
		if q == p {
			continue
		}
		for _, w := range append([][]byte{s.current, s.previous}, s.extra...) {
			if w != nil && equal(v, w) {
				return fmt.Errorf("%w (%s)", ErrReused, q)
			}
		}
	}
	return nil
}

// Values returns the values of p valid now, the current one first; none when p has no
// usable value.
func (k *Keyring) Values(p Purpose) [][]byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	s := k.slots[p]
	if s == nil {
		return nil
	}
	var out [][]byte
	if s.current != nil {
		out = append(out, s.current)
	}
	out = append(out, s.extra...)
	if s.previous != nil && k.now().Before(s.previousUntil) {
		out = append(out, s.previous)
	}
	return out
}

// Current returns the current value of p, nil when it has none.
func (k *Keyring) Current(p Purpose) []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if s := k.slots[p]; s != nil {
		return s.current
	}
	return nil
}

// Problem says why p has no current value: nil when it has one.
func (k *Keyring) Problem(p Purpose) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	s := k.slots[p]
	switch {
	case s == nil || (s.current == nil && s.refused == nil):
		return fmt.Errorf("%s: %w", p, ErrMissing)
	case s.refused != nil:
		return fmt.Errorf("%s refused: %w", p, s.refused)
	}
	return nil
}

// Match reports whether given equals one of the values of p valid now. It compares digests
// in constant time, so neither the values nor their lengths show in its timing.
func (k *Keyring) Match(p Purpose, given []byte) bool {
	ok := false
	for _, v := range k.Values(p) {
		ok = equal(given, v) || ok
	}
	return ok
}

// equal compares two secrets in constant time, whatever their lengths.
func equal(a, b []byte) bool {
	da, db := sha256.Sum256(a), sha256.Sum256(b)
	return subtle.ConstantTimeCompare(da[:], db[:]) == 1
}

// hmacEqual compares two MACs of the same fixed length in constant time.
func hmacEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
