package gitea

import (
	"errors"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/webhook"
)

const validPackage = `{"action":"created","package":{"owner":{"login":"Platform"},"name":"fleet-manifests",
"type":"container","version":"latest","html_url":"https://gitea.example.com/platform/-/packages/container/fleet-manifests/latest"}}`

// The package events TestOCI recorded from a real Gitea (internal/testenv/testdata).
func TestDecodeRecordedPackageEvents(t *testing.T) {
	for _, name := range []string{"gitea-package-event", "gitea-package-event-linked"} {
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile("../../internal/testenv/testdata/" + name + ".body.json")
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{"X-Gitea-Event": {"package"}, "Content-Type": {"application/json"}}
			push, ignored, err := Events{}.Decode(h, body, "d1")
			if err != nil || ignored != "" {
				t.Fatalf("decode: %q %v", ignored, err)
			}
			if o := push.OCI; o == nil || o.Package != "platform/fleet-manifests" || o.Tag != "latest" ||
				!strings.HasPrefix(o.URL, "oci://127.0.0.1:") || !strings.HasSuffix(o.URL, "/platform/fleet-manifests") ||
				push.Repository != "" || push.SHA != "" {
				t.Fatalf("push %+v %+v", push, push.OCI)
			}
		})
	}
}

func TestDecodePackage(t *testing.T) {
	ev, ignored, err := DecodePackage("application/json", []byte(validPackage))
	if err != nil || ignored != "" {
		t.Fatal(ignored, err)
	}
	p := ev.Push("d1")
	if p.OCI.Package != "platform/fleet-manifests" || p.OCI.URL != "oci://gitea.example.com/platform/fleet-manifests" || p.OCI.Tag != "latest" {
		t.Fatalf("push %+v", p.OCI)
	}
	form := "payload=" + url.QueryEscape(validPackage)
	if ev2, _, err := DecodePackage("application/x-www-form-urlencoded", []byte(form)); err != nil || ev2.Push("d1").OCI.URL != p.OCI.URL {
		t.Fatalf("form: %v", err)
	}
}

// What a hostile or confused sender may post as a package event.
func TestDecodePackageRejects(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		ignored    bool
	}{
		{"deleted", strings.Replace(validPackage, `"created"`, `"deleted"`, 1), true},
		{"helm repository package", strings.Replace(validPackage, `"container"`, `"helm"`, 1), true},
		{"digest", strings.Replace(validPackage, `"version":"latest"`, `"version":"sha256:`+strings.Repeat("a", 64)+`"`, 1), true},
		{"no package", `{"action":"created"}`, false},
		{"no owner", `{"action":"created","package":{"name":"x","type":"container","version":"v1"}}`, false},
		{"owner path", strings.Replace(validPackage, `"Platform"`, `"../etc"`, 1), false},
		{"owner slash", strings.Replace(validPackage, `"Platform"`, `"a/b"`, 1), false},
		{"name upper-case path", strings.Replace(validPackage, `"fleet-manifests"`, `"a/../b"`, 1), false},
		{"tag with a slash", strings.Replace(validPackage, `"version":"latest"`, `"version":"a/b"`, 1), false},
		{"tag too long", strings.Replace(validPackage, `"version":"latest"`, `"version":"`+strings.Repeat("v", 129)+`"`, 1), false},
		{"tag with a newline", strings.Replace(validPackage, `"version":"latest"`, `"version":"v1\n"`, 1), false},
		{"page of another scheme", strings.Replace(validPackage, `https://gitea`, `file://gitea`, 1), false},
		{"page with credentials", strings.Replace(validPackage, `https://gitea`, `https://u:p@gitea`, 1), false},
		{"package twice", `{"action":"created","package":{"name":"a"},"package":{"name":"b"}}`, false},
		{"version twice", strings.Replace(validPackage, `"version":"latest"`, `"version":"latest","VERSION":"v2"`, 1), false},
		{"login twice", strings.Replace(validPackage, `"login":"Platform"`, `"login":"Platform","login":"other"`, 1), false},
		{"not an object", `[]`, false},
		{"empty", ``, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ev, ignored, err := DecodePackage("application/json", []byte(tt.body))
			switch {
			case tt.ignored && (err != nil || ignored == ""):
				t.Fatalf("want ignored, got %q %v", ignored, err)
			case !tt.ignored && !errors.Is(err, webhook.ErrBadPayload):
				t.Fatalf("want ErrBadPayload, got %+v %q %v", ev, ignored, err)
			}
		})
	}
}

// A package event is input from anyone holding a token or the webhook key: whatever it
// holds, decoding never panics, and what it accepts names an OCI repository and tag.
func FuzzDecodePackage(f *testing.F) {
	f.Add([]byte(validPackage))
	f.Add([]byte(`{"action":"created","package":{"owner":{"login":"a"},"name":"b","type":"container","version":"v1"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, ignored, err := DecodePackage("application/json", body)
		if err != nil || ignored != "" {
			return
		}
		p := ev.Push("d")
		if !packageNamePattern.MatchString(strings.Split(p.OCI.Package, "/")[1]) || !tagPattern.MatchString(p.OCI.Tag) ||
			strings.Count(p.OCI.Package, "/") != 1 || strings.ContainsAny(p.OCI.URL, " \n\t?#") {
			t.Fatalf("accepted %q as %+v", body, p.OCI)
		}
	})
}
