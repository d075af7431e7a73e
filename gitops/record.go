package gitops

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// RecordAnnotation holds, on each Flux object flux-webhook asked to reconcile, what it asked
// for and what it has reported so far. Pending work lives in the Kubernetes API, not in a
// process: whichever replica leads finds it there and finishes the reports.
const RecordAnnotation = "flux-webhook.openova.io/request"

// maxSuperseded bounds the superseded requests kept on one object until their warning is
// posted. The reporter drains a few dozen a second, so only a burst of more distinct pushes
// than this to one object within seconds reaches it; the oldest are then dropped and counted
// as lost. At ~400 bytes each the record stays under 100 KiB of the 256 KiB Kubernetes
// allows for all of an object's annotations.
const maxSuperseded = 200

// coalesceWindow is how close together pushes to one object share a reconcile: Flux fetches
// the branch's head when it reconciles, so a burst needs one reconcile after it, not one per
// push. A push within the window of the previous patch is recorded at once (and gets its
// pending status) but its requestedAt is set by the reporter when the window ends.
const coalesceWindow = 2 * time.Second

// repeatWindow is how long a push is remembered on an object, so that a repeat of it is
// absorbed: the Actions step and the native webhook of one push arrive within seconds, a
// workflow's curl retries within a minute, a redelivery by hand within minutes. After it,
// the same push delivered again (a re-run workflow) requests a new reconcile.
const repeatWindow = 5 * time.Minute

// Commit status states, as Gitea names them.
const (
	StatePending = "pending"
	StateSuccess = "success"
	StateFailure = "failure"
	StateError   = "error"
	StateWarning = "warning"
)

// Request is one push's request to reconcile one object.
type Request struct {
	// Token is the reconcile.fluxcd.io/requestedAt value set for this push.
	Token string `json:"token"`
	// Repository is the pushed repository's full name, "owner/name": statuses go there.
	Repository string `json:"repository"`
	Ref        string `json:"ref"`
	SHA        string `json:"sha"`
	// Before is the reference's previous commit, as the push event says.
	Before   string `json:"before,omitempty"`
	Delivery string `json:"delivery,omitempty"`
	// RequestedAt is when the object was patched; the result timeout counts from here.
	RequestedAt time.Time `json:"requestedAt"`
	// Intent is the status being posted: recorded before the post, cleared after it, so a
	// reporter that takes over knows what may have been posted already. IntentSince is when
	// it was recorded: Gitea failures are retried until the result timeout after it.
	Intent      *Status   `json:"intent,omitempty"`
	IntentSince time.Time `json:"intentSince,omitempty"`
	// PatchAt, when set, is when requestedAt is still to be set to Token: the push came
	// within coalesceWindow of the previous patch, which the reporter then makes once for
	// the burst.
	PatchAt *time.Time `json:"patchAt,omitempty"`
	// Lost is set, with Final, when the final status could not be posted: Gitea refused it
	// (4xx) or stayed unavailable past the result timeout.
	Lost bool `json:"lost,omitempty"`
	// Posted is the last state posted to Gitea for this request ("" before the first).
	Posted string `json:"posted,omitempty"`
	// Final is set once the one final status has been posted; Description is its text.
	Final       bool   `json:"final,omitempty"`
	Description string `json:"description,omitempty"`
}

// Status is a commit status state and its description.
type Status struct {
	State       string `json:"state"`
	Description string `json:"description"`
}

// final reports whether a state ends a request.
func final(state string) bool { return state != StatePending }

// Superseded is a request overtaken by a newer push before its final status was posted.
type Superseded struct {
	Request
	By string `json:"by"`
}

// Record is the value of RecordAnnotation.
type Record struct {
	Current    *Request     `json:"current,omitempty"`
	Superseded []Superseded `json:"superseded,omitempty"`
	// PatchedAt is when flux-webhook last set requestedAt on the object.
	PatchedAt time.Time `json:"patchedAt,omitempty"`
	// Seen remembers the pushes requested within repeatWindow, whatever became of them, so
	// that a repeat arriving late (after a newer push) is recognised.
	Seen []Seen `json:"seen,omitempty"`
}

// Seen is one push a record has requested.
type Seen struct {
	Key string    `json:"key"`
	At  time.Time `json:"at"`
}

// maxSeen bounds Record.Seen: a busy repository pushes far less than this per repeatWindow.
const maxSeen = 64

// pushKey identifies a push: the same repository, reference, previous and new commit. A
// redelivery, or the Actions step and the native webhook of one push, share it; a force-push
// back to an earlier commit does not (its previous commit differs).
func (r Request) pushKey() string {
	sum := sha256.Sum256([]byte(r.Repository + "\x00" + r.Ref + "\x00" + r.Before + "\x00" + r.SHA))
	return hex.EncodeToString(sum[:8])
}

// ParseRecord reads the record from an object's annotations; a missing annotation is an
// empty record, a malformed one an error (the reporter then leaves the object alone).
func ParseRecord(annotations map[string]string) (Record, error) {
	var r Record
	v, ok := annotations[RecordAnnotation]
	if !ok || v == "" {
		return r, nil
	}
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return r, fmt.Errorf("parse %s: %w", RecordAnnotation, err)
	}
	return r, nil
}

// Encode returns the annotation value.
func (r Record) Encode() string {
	b, err := json.Marshal(r)
	if err != nil { // only plain strings, times and bools: cannot fail
		panic(err)
	}
	return string(b)
}

// find returns the request with the given token, current or superseded, or nil.
func (r *Record) find(token string) *Request {
	if r.Current != nil && r.Current.Token == token {
		return r.Current
	}
	for i := range r.Superseded {
		if r.Superseded[i].Token == token {
			return &r.Superseded[i].Request
		}
	}
	return nil
}

// sameProgress reports whether q is as far in its reporting as seen: the same status posted,
// the same one on its way, equally final.
func (q *Request) sameProgress(seen Request) bool {
	return q.Posted == seen.Posted && q.Final == seen.Final &&
		(q.Intent == nil) == (seen.Intent == nil) && (q.Intent == nil || *q.Intent == *seen.Intent)
}

// Pending reports whether the record still owes Gitea a status.
func (r Record) Pending() bool {
	return len(r.Superseded) > 0 || (r.Current != nil && !r.Current.Final)
}

// Supersede returns the record after a newer push asked for req: an unfinished request for
// another commit is kept to be reported as superseded by req.SHA, and dropped holds what
// fell off beyond maxSuperseded. ok is false when req repeats a push seen less than
// repeatWindow ago, or the unfinished request for the same commit: there is nothing to patch.
func (r Record) Supersede(req Request) (out Record, dropped []Superseded, ok bool) {
	key := req.pushKey()
	for _, s := range r.Seen {
		if s.Key == key && req.RequestedAt.Sub(s.At) < repeatWindow {
			return r, nil, false
		}
	}
	cur := r.Current
	if cur != nil && !cur.Final && cur.SHA == req.SHA && cur.Repository == req.Repository {
		return r, nil, false
	}
	out.PatchedAt = r.PatchedAt
	for _, s := range r.Seen {
		if req.RequestedAt.Sub(s.At) < repeatWindow {
			out.Seen = append(out.Seen, s)
		}
	}
	out.Seen = append(out.Seen, Seen{Key: key, At: req.RequestedAt})
	if n := len(out.Seen); n > maxSeen {
		out.Seen = out.Seen[n-maxSeen:]
	}
	out.Superseded = append([]Superseded(nil), r.Superseded...)
	if cur != nil && !cur.Final {
		out.Superseded = append(out.Superseded, Superseded{Request: *cur, By: req.SHA})
	}
	if n := len(out.Superseded); n > maxSuperseded {
		dropped = out.Superseded[:n-maxSuperseded]
		out.Superseded = out.Superseded[n-maxSuperseded:]
	}
	out.Current = &req
	return out, dropped, true
}
