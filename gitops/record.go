package gitops

import (
	"encoding/json"
	"fmt"
	"time"
)

// RecordAnnotation holds, on each Flux object flux-webhook asked to reconcile, what it asked
// for and what it has reported so far. Pending work lives in the Kubernetes API, not in a
// process: whichever replica leads finds it there and finishes the reports.
const RecordAnnotation = "flux-webhook.openova.io/request"

// maxSuperseded bounds the superseded requests kept on one object until their warning is
// posted; the reporter drains them within seconds, so only a burst of more pushes than this
// to one object between two reporter passes reaches it. The oldest are then dropped and
// counted as lost (the Kubernetes annotation budget is 256 KiB for all annotations).
const maxSuperseded = 32

// repeatWindow is how long a finished request still absorbs a repeat of the same push: the
// Actions step and the native webhook for one push, or a redelivery, arrive within seconds.
// After it, the same commit pushed again (a re-run workflow) requests a new reconcile.
const repeatWindow = time.Minute

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
	Delivery   string `json:"delivery,omitempty"`
	// RequestedAt is when the object was patched; the result timeout counts from here.
	RequestedAt time.Time `json:"requestedAt"`
	// Intent is the status being posted: recorded before the post, cleared after it, so a
	// reporter that takes over knows what may have been posted already.
	Intent *Status `json:"intent,omitempty"`
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

// Pending reports whether the record still owes Gitea a status.
func (r Record) Pending() bool {
	return len(r.Superseded) > 0 || (r.Current != nil && !r.Current.Final)
}

// Supersede returns the record after a newer push asked for req: an unfinished request for
// another commit is kept to be reported as superseded by req.SHA, and dropped holds what
// fell off beyond maxSuperseded. ok is false when req repeats the request for the same
// commit while it is unfinished or finished less than repeatWindow ago: there is nothing to
// patch.
func (r Record) Supersede(req Request) (out Record, dropped []Superseded, ok bool) {
	cur := r.Current
	if cur != nil && cur.SHA == req.SHA && cur.Repository == req.Repository &&
		(!cur.Final || req.RequestedAt.Sub(cur.RequestedAt) < repeatWindow) {
		return r, nil, false
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
