// Package record is flux-webhook's request/record protocol: what it writes onto each Flux
// object it asks to reconcile (the request record, sealed with a MAC under the record key),
// and into its own namespace for each push (the push record). Pending work lives there, not
// in a process: whichever replica leads finds it and finishes the reports. The rules of a
// record — a newer push supersedes an unfinished one, a repeat is absorbed, everything is
// bounded — are here; reading and writing objects is the cluster package's.
package record

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/openova-io/flux-webhook/api"
)

// Annotation holds, on each Flux object flux-webhook asked to reconcile, what it asked for
// and what it has reported so far.
const Annotation = "flux-webhook.openova.io/request"

// The record's bounds. Everything in it is bounded, so that one request (or a burst of them)
// cannot make flux-webhook, Flux's controllers and etcd carry large annotations on every Flux
// object a push feeds:
//
//   - what a push brings is validated where it enters (webhook, server): repository
//     "owner/name" of at most 100+1+100 bytes, reference at most 255 bytes, commit ids of 40
//     or 64 hex digits, delivery id at most 128 printable bytes; the trace context is a W3C
//     traceparent (55 bytes) flux-webhook makes;
//   - descriptions (Flux's messages) are cut to maxStoredDescription bytes;
//   - superseded requests keep only their commit and the commit that superseded them (and
//     the names of the canaries they still owe a status);
//   - a request follows at most MaxFollowers canaries;
//
// so that a record at its largest (TestRecordAtItsLargest) stays under maxRecordBytes.
const (
	// maxRecordBytes is the most the encoded record takes on one object: a few KiB of the
	// 256 KiB Kubernetes allows for all of an object's annotations (16 rather than 8 for the
	// canaries a request may follow: MaxFollowers of them at their largest take ~4.5 KiB).
	maxRecordBytes = 16 << 10

	// maxSuperseded bounds the superseded requests kept on one object until their warning
	// is posted. The reporter posts every superseded request of an object in one pass (two
	// record writes, whatever their number), so only a burst of more distinct pushes than
	// this to one object within a pass reaches it; the oldest are then dropped and counted
	// as lost. About 200 bytes each at most.
	maxSuperseded = 16

	// maxStoredDescription bounds a status description, as posted and as kept in the record:
	// Gitea shows a line of it, and a takeover compares the record's copy with Gitea's.
	maxStoredDescription = 255
)

// CoalesceWindow is how close together pushes to one object share a reconcile: Flux fetches
// the branch's head when it reconciles, so a burst needs one reconcile after it, not one per
// push. A push within the window of the previous patch is recorded at once (and gets its
// pending status) but its requestedAt is set by the reporter when the window ends.
const CoalesceWindow = 2 * time.Second

// RepeatWindow is how long a push is remembered on an object, so that a repeat of it is
// absorbed: the Actions step and the native webhook of one push arrive within seconds, a
// workflow's curl retries within a minute, a redelivery by hand within minutes. After it,
// the same push delivered again (a re-run workflow) requests a new reconcile.
const RepeatWindow = 5 * time.Minute

// Request is one push's request to reconcile one object.
type Request struct {
	// Token is the reconcile.fluxcd.io/requestedAt value set for this push.
	Token string `json:"token"`
	// Repository is the pushed repository's full name, "owner/name": statuses go there.
	// Superseded requests leave it out: they are of the current request's repository.
	Repository string `json:"repository,omitempty"`
	Ref        string `json:"ref,omitempty"`
	SHA        string `json:"sha"`
	// Version is the tag an OCI push made (a chart's version; at most 128 characters, as
	// the OCI distribution spec allows), "" for a Git push.
	Version string `json:"version,omitempty"`
	// Before is the reference's previous commit, as the push event says.
	Before string `json:"before,omitempty"`
	// Aggregate, when set, is the key of the push record whose per-cluster status reports
	// this request (status granularity "cluster"): the object's own result goes there, not
	// to Gitea.
	Aggregate string `json:"aggregate,omitempty"`
	Delivery  string `json:"delivery,omitempty"`
	// Trace is the W3C traceparent of the push's trace (internal/tracing), "" with tracing
	// off: the worker and the reporter continue the trace the intake started.
	Trace string `json:"trace,omitempty"`
	// RequestedAt is when the object was patched; the result timeout counts from here.
	RequestedAt time.Time `json:"requestedAt,omitzero"`
	// Intent is the status being posted: recorded before the post, cleared after it, so a
	// reporter that takes over knows what may have been posted already. IntentSince is when
	// it was recorded: Gitea failures are retried until the result timeout after it.
	Intent      *api.Status `json:"intent,omitempty"`
	IntentSince time.Time   `json:"intentSince,omitzero"`
	// PatchAt, when set, is when requestedAt is still to be set to Token: the push came
	// within CoalesceWindow of the previous patch, which the reporter then makes once for
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
	// Followers are the statuses the request owes beyond the object's own: the objects whose
	// own controller acts on what the object applied (Flagger's canaries of the Deployments
	// a Kustomization applied), found when the object was seen applying the commit. At most
	// MaxFollowers.
	Followers []Follower `json:"followers,omitempty"`
}

// MaxFollowers bounds Request.Followers: the canaries followed for one request of one
// object (a Kustomization applying more canary targets has the first MaxFollowers
// followed, and the rest logged). About 300 bytes each at most, one intent at a time.
const MaxFollowers = 8

// Follower is one status a request owes under the context of another object than its own
// (see Request.Followers), and how far it got.
type Follower struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Since is when the request's object was seen applying the commit; Base what the
	// follower's status said then (its kind's baseline, opaque here).
	Since time.Time `json:"since,omitzero"`
	Base  string    `json:"base,omitempty"`
	// Shown identifies the pending description posted last, so that progress is posted
	// once per step.
	Shown string `json:"shown,omitempty"`
	// Posted, Intent, IntentSince, Final and Lost are as for a request.
	Posted      string      `json:"posted,omitempty"`
	Intent      *api.Status `json:"intent,omitempty"`
	IntentSince time.Time   `json:"intentSince,omitzero"`
	Final       bool        `json:"final,omitempty"`
	Lost        bool        `json:"lost,omitempty"`
}

// Target returns the follower's target in cluster.
func (f Follower) Target(cluster string) api.Target {
	return api.Target{Cluster: cluster, Kind: f.Kind, Namespace: f.Namespace, Name: f.Name}
}

// Following reports whether some of the request's followers are owed a final status.
func (q Request) Following() bool {
	for _, f := range q.Followers {
		if !f.Final {
			return true
		}
	}
	return false
}

// Unfinished reports whether the request still owes a status: its own final one, or a
// follower's.
func (q Request) Unfinished() bool { return !q.Final || q.Following() }

// Name names the request's push for people: its commit, shortened, or for an artifact
// that records none, its tag.
func (r Request) Name() string {
	if r.SHA == "" && r.Version != "" {
		return "tag " + r.Version
	}
	return api.ShortSHA(r.SHA)
}

// Superseded is a request overtaken by a newer push before its final status was posted.
type Superseded struct {
	Request
	By string `json:"by"`
}

// SupersededIntent is the intent recorded on a superseded request while its warning goes
// out: the state only (the description follows from By), to keep a full record small.
var SupersededIntent = api.Status{State: api.StateWarning}

// Record is the value of Annotation.
type Record struct {
	Current    *Request     `json:"current,omitempty"`
	Superseded []Superseded `json:"superseded,omitempty"`
	// PatchedAt is when flux-webhook last set requestedAt on the object.
	PatchedAt time.Time `json:"patchedAt,omitzero"`
	// Seen remembers the pushes requested within RepeatWindow, whatever became of them, so
	// that a repeat arriving late (after a newer push) is recognised.
	Seen []Seen `json:"seen,omitempty"`
	// Sealed is when the record was written, later on every write of an object's record
	// (Stamp): the MAC binds a record to its object, not to a moment, so a tenant could put
	// an older genuine record back; one older than a record already seen on the object is
	// not acted on (cluster.OpenRecord).
	Sealed time.Time `json:"sealed,omitzero"`
}

// Stamp sets when the record is sealed: now, or, when now is not after the newest seal known
// on the object (prev, from a replica whose clock is ahead), just after it, so that every
// record an object carries is sealed later than the one it replaces.
func (r *Record) Stamp(prev, now time.Time) {
	if prev.Before(r.Sealed) {
		prev = r.Sealed
	}
	if !now.After(prev) {
		now = prev.Add(time.Microsecond)
	}
	r.Sealed = now
}

// Seen is one push a record has requested.
type Seen struct {
	Key string    `json:"key"`
	At  time.Time `json:"at"`
}

// maxSeen bounds Record.Seen: a repository seldom pushes more than this to one reference
// per RepeatWindow (a push beyond it repeated late is requested again: one more reconcile).
// About 60 bytes each.
const maxSeen = 16

// pushKey identifies a push: the same repository, reference, previous and new commit. A
// redelivery, or the Actions step and the native webhook of one push, share it; a force-push
// back to an earlier commit does not (its previous commit differs).
func (r Request) PushKey() string {
	id := r.Repository + "\x00" + r.Ref + "\x00" + r.Before + "\x00" + r.SHA
	if r.Version != "" {
		id += "\x00" + r.Version // a registry push: each tag is a push of its own
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:8])
}

// Parse reads the record from an object's annotations; a missing annotation is an
// empty record, a malformed one an error (the reporter then leaves the object alone).
func Parse(annotations map[string]string) (Record, error) {
	var r Record
	v, ok := annotations[Annotation]
	if !ok || v == "" {
		return r, nil
	}
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return r, fmt.Errorf("parse %s: %w", Annotation, err)
	}
	return r, nil
}

// Encode returns the annotation value. Characters HTML would mind stay as they are: escaped,
// each would take six bytes of the record.
func (r Record) Encode() string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil { // only plain strings, times and bools: cannot fail
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// Find returns the request with the given token, current or superseded, or nil.
func (r *Record) Find(token string) *Request {
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

// SameProgress reports whether q is as far in its reporting as seen: the same status posted,
// the same one on its way, equally final.
func (q *Request) SameProgress(seen Request) bool {
	return q.Posted == seen.Posted && q.Final == seen.Final &&
		(q.Intent == nil) == (seen.Intent == nil) && (q.Intent == nil || *q.Intent == *seen.Intent)
}

// compact returns what a superseded request keeps of q: what identifies it, and how far its
// reporting got. Its final status is always the warning supersededStatus makes, so an intent
// it inherits is one being posted for the current request, which is dropped: the warning is
// what goes out now.
func (q *Request) compact() Request {
	c := Request{Token: q.Token, SHA: q.SHA, Version: q.Version, Aggregate: q.Aggregate, Posted: q.Posted, Final: q.Final}
	// Its followers not finished yet are owed the warning too; of them only what names them.
	for _, f := range q.Followers {
		if !f.Final {
			c.Followers = append(c.Followers, Follower{Kind: f.Kind, Namespace: f.Namespace, Name: f.Name, Posted: f.Posted})
		}
	}
	return c
}

// Bounded returns a description fit for a status and the record: control characters become
// spaces, and it is cut to maxStoredDescription bytes, on a character boundary.
func Bounded(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= maxStoredDescription {
		return s
	}
	return Cut(s, maxStoredDescription-len("…")) + "…"
}

// Cut returns s cut to at most n bytes, on a character boundary (whatever bytes come
// before the cut).
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// RepositoryOf returns the repository of a superseded request: its own when it keeps one,
// else the current request's.
func (r Record) RepositoryOf(s Superseded) string {
	if s.Repository == "" && r.Current != nil {
		return r.Current.Repository
	}
	return s.Repository
}

// Pending reports whether the record still owes Gitea a status.
func (r Record) Pending() bool {
	return len(r.Superseded) > 0 || (r.Current != nil && r.Current.Unfinished())
}

// ErrFull: a superseded request was dropped to keep the record within its bounds.
var ErrFull = errors.New("record full")

// Apply returns the record after req (Supersede), within maxRecordBytes.
func (r Record) Apply(req Request) (out Record, dropped []Superseded, ok bool) {
	out, dropped, ok = r.Supersede(req)
	if ok {
		dropped = append(dropped, out.fit()...)
	}
	return out, dropped, ok
}

// seenWith returns the pushes seen within RepeatWindow of at, with key added.
func (r Record) seenWith(key string, at time.Time) []Seen {
	var out []Seen
	for _, s := range r.Seen {
		if at.Sub(s.At) < RepeatWindow {
			out = append(out, s)
		}
	}
	out = append(out, Seen{Key: key, At: at})
	if n := len(out); n > maxSeen {
		out = out[n-maxSeen:]
	}
	return out
}

// fit drops the oldest superseded requests, then the oldest seen pushes, until the
// encoded record is within maxRecordBytes, and returns the requests dropped. Within the
// bounds of what enters a record it never drops anything (TestRecordAtItsLargest); it makes
// the cap hold whatever the bounds are.
func (r *Record) fit() []Superseded {
	var dropped []Superseded
	for len(r.Encode()) > maxRecordBytes {
		switch {
		case len(r.Superseded) > 0:
			dropped = append(dropped, r.Superseded[0])
			r.Superseded = r.Superseded[1:]
		case len(r.Seen) > 0:
			r.Seen = r.Seen[1:]
		default:
			return dropped
		}
	}
	return dropped
}

// Supersede returns the record after a newer push asked for req: an unfinished request for
// another commit is kept to be reported as superseded by req.SHA, and dropped holds what
// fell off beyond maxSuperseded. ok is false when req repeats a push seen less than
// RepeatWindow ago, or the unfinished request for the same commit: there is nothing to patch.
func (r Record) Supersede(req Request) (out Record, dropped []Superseded, ok bool) {
	key := req.PushKey()
	for _, s := range r.Seen {
		if s.Key == key && req.RequestedAt.Sub(s.At) < RepeatWindow {
			return r, nil, false
		}
	}
	cur := r.Current
	if cur != nil && cur.Unfinished() && cur.SHA == req.SHA && cur.Repository == req.Repository && cur.Version == req.Version {
		return r, nil, false
	}
	out.PatchedAt, out.Sealed = r.PatchedAt, r.Sealed
	out.Seen = r.seenWith(key, req.RequestedAt)
	// One final status per commit and context: a superseded request for the commit now
	// requested again is finished by the new request. An entry keeps its repository only
	// when it is not the current request's.
	oldRepository := ""
	if cur != nil {
		oldRepository = cur.Repository
	}
	for _, s := range r.Superseded {
		if s.SHA == req.SHA {
			continue
		}
		if s.Repository == "" {
			s.Repository = oldRepository
		}
		if s.Repository == req.Repository {
			s.Repository = ""
		}
		out.Superseded = append(out.Superseded, s)
	}
	if cur != nil && cur.Unfinished() && (cur.SHA != req.SHA || cur.Version != req.Version) {
		s := Superseded{Request: cur.compact(), By: req.Name()}
		if cur.Repository != req.Repository {
			s.Repository = cur.Repository
		}
		out.Superseded = append(out.Superseded, s)
	}

	if n := len(out.Superseded); n > maxSuperseded {
		dropped = out.Superseded[:n-maxSuperseded]
		out.Superseded = out.Superseded[n-maxSuperseded:]
	}
	out.Current = &req
	return out, dropped, true
}
