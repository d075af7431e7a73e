package gitea

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/webhook"
)

func TestParseTarget(t *testing.T) {
	long := strings.Repeat("a", 100)
	tests := []struct {
		raw     string
		want    webhook.Target
		errHas  string // "" when it parses
		comment string
	}{
		{raw: "acme/app", want: webhook.Target{Repository: "acme/app"}},
		{raw: "Acme/App.Web_1-x", want: webhook.Target{Repository: "Acme/App.Web_1-x"}},
		{raw: "acme/app/main", want: webhook.Target{Repository: "acme/app", Ref: "main"}},
		{raw: "acme/app/release/1.2", want: webhook.Target{Repository: "acme/app", Ref: "release/1.2"}},
		{raw: "acme/app/v1.0.0", want: webhook.Target{Repository: "acme/app", Ref: "v1.0.0"}},
		{raw: "acme/app/refs/heads/main", want: webhook.Target{Repository: "acme/app", Ref: "refs/heads/main"}},
		{raw: "acme/app/refs/tags/v1", want: webhook.Target{Repository: "acme/app", Ref: "refs/tags/v1"}},
		{raw: "acme/app/f%C3%BCnf", want: webhook.Target{Repository: "acme/app", Ref: "fünf"}, comment: "UTF-8, escaped"},
		{raw: "acme/app/fünf", want: webhook.Target{Repository: "acme/app", Ref: "fünf"}, comment: "UTF-8, as curl sends it"},
		{raw: "acme/app/fix%23123", want: webhook.Target{Repository: "acme/app", Ref: "fix#123"}},
		{raw: "acme/app/a+b", want: webhook.Target{Repository: "acme/app", Ref: "a+b"}, comment: "a plus is a plus in a path"},
		{raw: long + "/" + long + "/" + strings.Repeat("r", 244), want: webhook.Target{Repository: long + "/" + long, Ref: strings.Repeat("r", 244)}},

		{raw: "acme", errHas: "no repository"},
		{raw: "acme/", errHas: "empty path segment"},
		{raw: "/acme/app", errHas: "empty path segment"},
		{raw: "acme//app", errHas: "empty path segment"},
		{raw: "acme/app/", errHas: "empty path segment"},
		{raw: "acme/app//main", errHas: "empty path segment"},
		{raw: "../etc/passwd", errHas: "dot segment"},
		{raw: "acme/../app", errHas: "dot segment"},
		{raw: "acme/app/../../api/v1/reconcile", errHas: "dot segment"},
		{raw: "acme/./app", errHas: "dot segment"},
		{raw: "acme/app/refs/heads/..", errHas: "dot segment"},
		{raw: "acme/app/a..b", errHas: "not a branch or tag name"},
		{raw: "acme/a..b", errHas: "owner/name"},
		{raw: "acme%2Fapp/x", errHas: "percent-escaped", comment: "an escaped slash would make one segment two"},
		{raw: "acme/app/refs%2fheads%2fmain", errHas: "percent-escaped"},
		{raw: "acme/%2e%2e", errHas: "percent-escaped"},
		{raw: "acme/app/%2E%2E/x", errHas: "percent-escaped"},
		{raw: "acme/app/%252F", errHas: "percent-escaped", comment: "a double encoding"},
		{raw: "acme/app/main%00", errHas: "percent-escaped"},
		{raw: "acme/app/ma%0Ain", errHas: "percent-escaped"},
		{raw: "acme/app/ma%20in", errHas: "percent-escaped"},
		{raw: "acme/app/%5C", errHas: "percent-escaped"},
		{raw: "acme/app/%zz", errHas: "invalid percent-escape"},
		{raw: "acme/app/main%", errHas: "invalid percent-escape"},
		{raw: "acme/app/main%4", errHas: "invalid percent-escape"},
		{raw: `acme\app/main`, errHas: "backslash"},
		{raw: "acme/app/ma\x00in", errHas: "control character"},
		{raw: "acme/app/ma\tin", errHas: "control character"},
		{raw: "acme/app/ma\x7fin", errHas: "control character"},
		{raw: "acme/app/ma in", errHas: "space"},
		{raw: "ac%41me/app", want: webhook.Target{Repository: "acAme/app"}, comment: "an escaped letter means that letter"},
		{raw: "acme/app/ma%E2%80%AEin", errHas: "not a branch or tag name", comment: "a bidi override"},
		{raw: "acme/app/%FF", errHas: "not a branch or tag name", comment: "not UTF-8"},
		{raw: "acme/app/main.lock", errHas: "not a branch or tag name"},
		{raw: "acme/app/ma~in", errHas: "not a branch or tag name"},
		{raw: "acme/app/ma%3Fin", errHas: "not a branch or tag name"},
		{raw: "acme/app/HEAD@{1}", errHas: "not a branch or tag name"},
		{raw: "acme/app/refs/heads/ma:in", errHas: "not a full Git reference"},
		{raw: "ac%C3%A9me/app", errHas: "owner/name", comment: "Gitea's names are ASCII"},
		{raw: "acme/app%3Bx", errHas: "owner/name"},
		{raw: long + "x/" + long + "/main", errHas: "owner/name", comment: "over 201 bytes"},
		{raw: "acme/app/" + strings.Repeat("r", 246), errHas: "not a branch or tag name", comment: "refs/heads/ and it over 255 bytes"},
		{raw: "acme/app/" + strings.Repeat("%C3%BC", 300), errHas: "path over", comment: "bounded before decoding"},
		{raw: "fwh1.repo.acme/app.cmFuZG9tLW1hYy1vZi10aGUtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg", errHas: "holds a flux-webhook token"},
		{raw: "acme/app/FWH1.org.acme.cmFuZG9tLW1hYy1vZi10aGUtdG9rZW4", errHas: "holds a flux-webhook token"},
		{raw: "fwh1.org.acme.cmFuZG9tLW1hYy1vZi10aGUtdG9rZW4", errHas: "holds a flux-webhook token", comment: "an organization's token"},
		{raw: "acme%2Fapp", errHas: "percent-escaped", comment: "not one segment taken for two"},
	}
	for _, tt := range tests {
		t.Run(tt.raw[:min(len(tt.raw), 60)], func(t *testing.T) {
			got, err := ParseTarget(tt.raw)
			switch {
			case tt.errHas == "" && err != nil:
				t.Fatalf("%v (%s)", err, tt.comment)
			case tt.errHas == "" && got != tt.want:
				t.Fatalf("%+v, want %+v (%s)", got, tt.want, tt.comment)
			case tt.errHas != "" && (!errors.Is(err, webhook.ErrBadTarget) || !strings.Contains(err.Error(), tt.errHas)):
				t.Fatalf("%+v %v, want an error saying %q (%s)", got, err, tt.errHas, tt.comment)
			case err != nil && len(tt.raw) > 8 && strings.Contains(err.Error(), tt.raw):
				t.Fatalf("the error echoes the path: %v", err)
			}
		})
	}
}

func TestEventsTarget(t *testing.T) {
	sha1, sha256 := strings.Repeat("a", 40), strings.Repeat("b", 64)
	tests := []struct {
		raw, query string
		want       webhook.Target
		errHas     string
	}{
		{"", "", webhook.Target{}, ""},
		{"", "sha=" + sha1, webhook.Target{SHA: sha1}, ""},
		{"acme/app", "sha=" + sha1, webhook.Target{Repository: "acme/app", SHA: sha1}, ""},
		{"acme/app/main", "sha=" + sha256 + "&wait=true", webhook.Target{Repository: "acme/app", Ref: "main", SHA: sha256}, ""},
		{"acme/app", "SHA=" + strings.ToUpper(sha1), webhook.Target{Repository: "acme/app"}, ""},
		{"acme/app", "sha=" + sha1 + "&sha=" + sha1, webhook.Target{}, "given more than once"},
		{"acme/app", "sha=" + strings.ToUpper(sha1), webhook.Target{}, "not a commit id"},
		{"acme/app", "sha=" + sha1[:39], webhook.Target{}, "not a commit id"},
		{"acme/app", "sha=", webhook.Target{}, "not a commit id"},
		{"acme/app", "sha=" + strings.Repeat("0", 40), webhook.Target{}, "not a commit id"},
		{"acme/app", "sha=HEAD", webhook.Target{}, "not a commit id"},
		{"acme", "sha=" + sha1, webhook.Target{}, "no repository"},
	}
	for _, tt := range tests {
		t.Run(tt.raw+"?"+tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Events{}.Target(tt.raw, q)
			if tt.errHas == "" && (err != nil || got != tt.want) {
				t.Fatalf("%+v %v, want %+v", got, err, tt.want)
			}
			if tt.errHas != "" && (!errors.Is(err, webhook.ErrBadTarget) || !strings.Contains(err.Error(), tt.errHas)) {
				t.Fatalf("%+v %v, want an error saying %q", got, err, tt.errHas)
			}
		})
	}
}

// Whatever ParseTarget accepts names one repository and reference exactly as a push event
// would, with as many segments as the path has slashes (no escape made or hid one), and
// reads the same once its segments are escaped the standard way.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"acme/app", "acme/app/main", "acme/app/refs/tags/v1", "acme/app/f%C3%BCnf", "acme%2Fapp",
		"acme/app/%2e%2e", "acme/../x", "acme/app/a%23b", "fwh1.repo.a/b.c", "a/b/%FF", `a\b/c`, "a/b/c%", "a/b/%25"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := ParseTarget(raw)
		if err != nil {
			if !errors.Is(err, webhook.ErrBadTarget) {
				t.Fatalf("%q: unexpected error kind: %v", raw, err)
			}
			return
		}
		if !validFullName(got.Repository) || strings.Count(got.Repository, "/") != 1 {
			t.Fatalf("%q: repository %q", raw, got.Repository)
		}
		switch {
		case got.Ref == "":
		case strings.HasPrefix(got.Ref, "refs/"):
			if !webhook.ValidRef(got.Ref) {
				t.Fatalf("%q: reference %q", raw, got.Ref)
			}
		case !webhook.ValidRef("refs/heads/"+got.Ref) || !webhook.ValidRef("refs/tags/"+got.Ref):
			t.Fatalf("%q: short reference %q", raw, got.Ref)
		}
		decoded := got.Repository
		if got.Ref != "" {
			decoded += "/" + got.Ref
		}
		if strings.Count(decoded, "/") != strings.Count(raw, "/") {
			t.Fatalf("%q: %q has another number of segments", raw, decoded)
		}
		for _, s := range strings.Split(decoded, "/") {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "\\\x00") || strings.HasPrefix(strings.ToLower(s), tokenPrefix) {
				t.Fatalf("%q: segment %q", raw, s)
			}
		}
		lower := strings.ToLower(raw)
		for _, esc := range []string{"%2f", "%2e", "%25", "%5c", "%00"} {
			if strings.Contains(lower, esc) {
				t.Fatalf("%q: accepted with %s", raw, esc)
			}
		}
		var again []string
		for _, s := range strings.Split(decoded, "/") {
			again = append(again, url.PathEscape(s))
		}
		if back, err := ParseTarget(strings.Join(again, "/")); err != nil || back != got {
			t.Fatalf("%q: %+v, escaped again %+v %v", raw, got, back, err)
		}
	})
}
