package gitops

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// RefMatches decides, for a reference pushed by an untrusted sender, which GitRepositories
// reconcile; whatever the inputs, it follows source-controller's precedence.
func FuzzRefMatches(f *testing.F) {
	f.Add("", "", "", "", "main", "refs/heads/main", false)
	f.Add("", "", "", "", "", "refs/heads/master", true)
	f.Add("", "", ">=1.0.0 <2.0.0", "", "", "refs/tags/v1.4.2", false)
	f.Add("", "", "1.x", "v9", "", "refs/tags/latest", false)
	f.Add("", "refs/heads/main", "", "", "main", "refs/heads/main", false)
	f.Add("0123456789012345678901234567890123456789", "", "", "", "main", "refs/heads/main", false)
	f.Add("", "", "", "v1.0.0", "", "refs/tags/v1.0.0", false)
	f.Add("", "", "~1.2.3-rc.1 || ^0.0.1", "", "", "refs/tags/1.2.4-rc.2+build", false)
	f.Fuzz(func(t *testing.T, commit, name, semverRange, tag, branch, pushed string, nilRef bool) {
		ref := &sourcev1.GitRepositoryRef{Commit: commit, Name: name, SemVer: semverRange, Tag: tag, Branch: branch}
		if nilRef {
			ref = nil
			commit, name, semverRange, tag, branch = "", "", "", "", ""
		}
		got := RefMatches(ref, pushed)
		var want, decided bool
		switch {
		case commit != "":
			want, decided = false, true
		case name != "":
			want, decided = name == pushed, true
		case semverRange != "":
			// The range decides among tags only.
			if got && !strings.HasPrefix(pushed, tagPrefix) {
				t.Fatalf("semver %q matched %q, not a tag", semverRange, pushed)
			}
		case tag != "":
			want, decided = pushed == tagPrefix+tag, true
		case branch != "":
			want, decided = pushed == branchPrefix+branch, true
		default:
			want, decided = pushed == branchPrefix+fluxDefaultBranch, true
		}
		if decided && got != want {
			t.Fatalf("RefMatches(%+v, %q) = %v, want %v", ref, pushed, got, want)
		}
	})
}

// The request record is an annotation anyone with patch rights on a Flux object can edit:
// whatever it holds, reading it never panics, what reads re-encodes to itself, and a new
// request keeps the record bounded.
func FuzzParseRecord(f *testing.F) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	req := Request{Token: "2026-11-26T10:00:00Z", Repository: "org/app", Ref: "refs/heads/main", SHA: strings.Repeat("a", 40),
		Delivery: "d-1", RequestedAt: at, Intent: &Status{State: StateSuccess, Description: "applied"}, Posted: StatePending}
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
		rec, err := ParseRecord(map[string]string{RecordAnnotation: value})
		if err != nil {
			return
		}
		enc := rec.Encode()
		again, err := ParseRecord(map[string]string{RecordAnnotation: enc})
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

// A platform selector as the API decodes it (known fields only) and the domain validates
// it: what is accepted names only DNS labels and known kinds, and is its own canonical form.
func FuzzSelector(f *testing.F) {
	for _, s := range []string{
		`{"region":"eu-central","labelSelector":"tier=platform"}`,
		`{"clusters":["b","a","a"],"namespaces":["flux-system"],"kinds":["kustomization","HelmRelease"],"withSource":false}`,
		`{"all":true}`, `{}`, `{"kinds":["Secret"]}`, `{"region":"../x"}`, `{"labelSelector":"a in (b,c),!d"}`,
		`{"labelSelector":"!!"}`, `{"clusters":[""]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var sel Selector
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&sel) != nil {
			return
		}
		if _, err := dec.Token(); err != io.EOF {
			return
		}
		out, err := sel.normalize()
		if err != nil {
			if !errors.Is(err, ErrBadSelector) && !errors.Is(err, ErrEmptySelector) {
				t.Fatalf("%s: error %v of no known kind", body, err)
			}
			return
		}
		for _, n := range slices.Concat(out.Clusters, out.Namespaces, []string{out.Region}) {
			if n != "" && len(validation.IsDNS1123Label(n)) > 0 {
				t.Fatalf("%s: accepted name %q", body, n)
			}
		}
		for _, k := range out.Kinds {
			if !slices.Contains(Kinds, k) {
				t.Fatalf("%s: accepted kind %q", body, k)
			}
		}
		again, err := out.normalize()
		if err != nil || !reflect.DeepEqual(again, out) || again.digest() != out.digest() {
			t.Fatalf("%s: normalized %+v is not canonical: %+v, %v", body, out, again, err)
		}
	})
}
