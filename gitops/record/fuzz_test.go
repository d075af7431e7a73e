package record

import (
	"strings"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/api"
)

// The request record is an annotation anyone with patch rights on a Flux object can edit:
// whatever it holds, reading it never panics, what reads re-encodes to itself, and a new
// request keeps the record bounded.
func FuzzParse(f *testing.F) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	req := Request{Token: "2026-11-26T10:00:00Z", Repository: "org/app", Ref: "refs/heads/main", SHA: strings.Repeat("a", 40),
		Delivery: "d-1", RequestedAt: at, Intent: &api.Status{State: api.StateSuccess, Description: "applied"}, Posted: api.StatePending}
	for _, r := range []Record{
		{},
		{Current: &req},
		{Current: &req, Superseded: []Superseded{{Request: req, By: strings.Repeat("b", 40)}}},
	} {
		f.Add(r.Encode())
	}
	for _, s := range []string{"", "null", "{", `{"current":null}`, `{"current":{"requestedAt":"9999-12-31T23:59:59-23:59"}}`,
		`{"superseded":[{},{},{}]}`, `{"current":{"final":true,"requestedAt":"0000-01-01T00:00:00Z"}}`, `[]`, `"x"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		rec, err := Parse(map[string]string{Annotation: value})
		if err != nil {
			return
		}
		enc := rec.Encode()
		again, err := Parse(map[string]string{Annotation: enc})
		if err != nil {
			t.Fatalf("%q re-encodes to %q, which does not parse: %v", value, enc, err)
		}
		if again.Encode() != enc {
			t.Fatalf("%q: encoding not stable: %q then %q", value, enc, again.Encode())
		}
		_ = rec.Pending()
		next := req
		next.SHA = strings.Repeat("c", 40)
		next.RequestedAt = at.Add(time.Hour)
		out, _, ok := rec.Supersede(next)
		if ok && (len(out.Superseded) > maxSuperseded || out.Current == nil || out.Current.SHA != next.SHA) {
			t.Fatalf("%q: after a new request: %d superseded, current %+v", value, len(out.Superseded), out.Current)
		}
	})
}
