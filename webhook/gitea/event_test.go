package gitea

import (
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openova-io/flux-webhook/webhook"
)

const validPush = `{"ref":"refs/heads/main","before":"fedcba9876543210fedcba9876543210fedcba98",
"after":"0123456789abcdef0123456789abcdef01234567",
"repository":{"full_name":"org/app","clone_url":"http://gitea.example.com/org/app.git",
"ssh_url":"git@gitea.example.com:org/app.git","html_url":"http://gitea.example.com/org/app","default_branch":"main"},
"pusher":{"login":"dev"}}`

func TestDecodePush(t *testing.T) {
	ev, err := DecodePush("application/json; charset=utf-8", []byte(validPush))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Repository.FullName != "org/app" || ev.Ref != "refs/heads/main" || ev.Deleted() || len(ev.URLs()) != 3 {
		t.Fatalf("decoded %+v", ev)
	}
	form := "payload=" + url.QueryEscape(validPush)
	ev2, err := DecodePush("application/x-www-form-urlencoded", []byte(form))
	if err != nil {
		t.Fatal(err)
	}
	if *ev2.Repository != *ev.Repository || ev2.After != ev.After {
		t.Fatalf("form decoded %+v", ev2)
	}
}

// The payloads in testdata were captured from a real Gitea (see testdata/README.md).
func TestDecodeCapturedPayloads(t *testing.T) {
	files, _ := filepath.Glob("testdata/gitea-push-*")
	if len(files) == 0 {
		t.Fatal("no captured payloads in testdata")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ct := "application/json"
			if strings.HasSuffix(f, ".form") {
				ct = "application/x-www-form-urlencoded"
			}
			ev, err := DecodePush(ct, body)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Repository.CloneURL == "" || ev.Repository.HTMLURL == "" {
				t.Fatalf("urls missing: %+v", ev.Repository)
			}
			if ev.Deleted() || !strings.HasPrefix(ev.Ref, "refs/") {
				t.Fatalf("decoded %+v", ev)
			}
		})
	}
}

func TestDecodePushRejects(t *testing.T) {
	replace := func(old, new string) string { return strings.Replace(validPush, old, new, 1) }
	tests := []struct {
		name, ct, body string
		want           error
	}{
		{"text/plain", "text/plain", validPush, webhook.ErrUnsupportedMediaType},
		{"no content type", "", validPush, webhook.ErrUnsupportedMediaType},
		{"multipart", "multipart/form-data; boundary=x", validPush, webhook.ErrUnsupportedMediaType},
		{"empty body", "application/json", "", webhook.ErrBadPayload},
		{"not json", "application/json", "hello", webhook.ErrBadPayload},
		{"truncated", "application/json", validPush[:40], webhook.ErrBadPayload},
		{"trailing document", "application/json", validPush + `{}`, webhook.ErrBadPayload},
		{"array", "application/json", `[` + validPush + `]`, webhook.ErrBadPayload},
		{"null", "application/json", `null`, webhook.ErrBadPayload},
		{"no repository", "application/json", `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}`, webhook.ErrBadPayload},
		{"null repository", "application/json", replace(`"repository":{`, `"repository":null,"x":{`), webhook.ErrBadPayload},
		{"repository is a string", "application/json", `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":"org/app"}`, webhook.ErrBadPayload},
		{"ref is a number", "application/json", replace(`"ref":"refs/heads/main"`, `"ref":42`), webhook.ErrBadPayload},
		{"no ref", "application/json", replace(`"ref":"refs/heads/main",`, ``), webhook.ErrBadPayload},
		{"short ref", "application/json", replace(`refs/heads/main`, `main`), webhook.ErrBadPayload},
		{"ref with newline", "application/json", replace(`refs/heads/main`, `refs/heads/ma\nin`), webhook.ErrBadPayload},
		{"no after", "application/json", replace(`"after":"0123456789abcdef0123456789abcdef01234567",`, ``), webhook.ErrBadPayload},
		{"after not a sha", "application/json", replace(`0123456789abcdef0123456789abcdef01234567`, `HEAD`), webhook.ErrBadPayload},
		{"upper-case sha", "application/json", replace(`0123456789abcdef0123456789abcdef01234567`, `0123456789ABCDEF0123456789ABCDEF01234567`), webhook.ErrBadPayload},
		{"no full_name", "application/json", replace(`"full_name":"org/app",`, ``), webhook.ErrBadPayload},
		// encoding/json matches "FULL_NAME", never "fullname" or "full-name": neither does this.
		{"fullname is no full_name", "application/json", replace(`"full_name":`, `"fullname":`), webhook.ErrBadPayload},
		{"full-name is no full_name", "application/json", replace(`"full_name":`, `"full-name":`), webhook.ErrBadPayload},
		{"path traversal name", "application/json", replace(`org/app`, `../etc`), webhook.ErrBadPayload},
		{"unicode name", "application/json", replace(`org/app`, `org/äpp`), webhook.ErrBadPayload},
		{"three segments", "application/json", replace(`org/app`, `org/app/x`), webhook.ErrBadPayload},
		{"no urls", "application/json", `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"org/app"}}`, webhook.ErrBadPayload},
		{"form without payload", "application/x-www-form-urlencoded", "x=1", webhook.ErrBadPayload},
		{"form with two payloads", "application/x-www-form-urlencoded", "payload=" + url.QueryEscape(validPush) + "&payload=" + url.QueryEscape(validPush), webhook.ErrBadPayload},
		{"form with bad escape", "application/x-www-form-urlencoded", "payload=%zz", webhook.ErrBadPayload},
		// Duplicate members a reader could resolve either way (Go keeps the last).
		{"duplicate ref", "application/json", replace(`"ref":"refs/heads/main"`, `"ref":"refs/heads/other","ref":"refs/heads/main"`), webhook.ErrBadPayload},
		{"duplicate ref in other case", "application/json", replace(`"ref":"refs/heads/main"`, `"ref":"refs/heads/other","REF":"refs/heads/main"`), webhook.ErrBadPayload},
		{"duplicate after", "application/json", replace(`"after":`, `"after":"fedcba9876543210fedcba9876543210fedcba98","After":`), webhook.ErrBadPayload},
		{"duplicate repository by unicode folding", "application/json", replace(`"repository":{`, `"repoſitory":{"full_name":"org/other","clone_url":"http://gitea.example.com/org/other.git"},"repository":{`), webhook.ErrBadPayload},
		{"duplicate full_name", "application/json", replace(`"full_name":"org/app"`, `"full_name":"org/other","full_name":"org/app"`), webhook.ErrBadPayload},
		{"duplicate clone_url", "application/json", replace(`"clone_url":`, `"clone_url":"http://evil.example.com/x/y.git","Clone_URL":`), webhook.ErrBadPayload},
		{"trailing garbage", "application/json", validPush + `]`, webhook.ErrBadPayload},
		{"repository is an array", "application/json", replace(`"repository":{`, `"repository":[],"x":{`), webhook.ErrBadPayload},
		{"after is a number", "application/json", replace(`"after":"0123456789abcdef0123456789abcdef01234567"`, `"after":123`), webhook.ErrBadPayload},
		{"full_name is an object", "application/json", replace(`"full_name":"org/app"`, `"full_name":{"a":1}`), webhook.ErrBadPayload},
		// References Git itself refuses.
		{"ref with ..", "application/json", replace(`refs/heads/main`, `refs/heads/../../etc/passwd`), webhook.ErrBadPayload},
		{"ref with //", "application/json", replace(`refs/heads/main`, `refs/heads//main`), webhook.ErrBadPayload},
		{"ref component starting with a dot", "application/json", replace(`refs/heads/main`, `refs/heads/.hidden`), webhook.ErrBadPayload},
		{"ref ending in .lock", "application/json", replace(`refs/heads/main`, `refs/heads/main.lock`), webhook.ErrBadPayload},
		{"ref with @{", "application/json", replace(`refs/heads/main`, `refs/heads/main@{1}`), webhook.ErrBadPayload},
		{"ref with a backslash", "application/json", replace(`refs/heads/main`, `refs/heads/ma\\in`), webhook.ErrBadPayload},
		{"ref with a colon", "application/json", replace(`refs/heads/main`, `refs/heads/a:b`), webhook.ErrBadPayload},
		{"ref with a bidi override", "application/json", replace(`refs/heads/main`, "refs/heads/ma\u202ein"), webhook.ErrBadPayload},
		{"ref with a zero-width space", "application/json", replace(`refs/heads/main`, "refs/heads/ma\u200bin"), webhook.ErrBadPayload},
		{"ref with invalid UTF-8", "application/json", replace(`refs/heads/main`, "refs/heads/ma\xffin"), webhook.ErrBadPayload},
		{"ref ending in /", "application/json", replace(`refs/heads/main`, `refs/heads/main/`), webhook.ErrBadPayload},
		{"only unusable urls", "application/json", `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"org/app","clone_url":"file:///etc/passwd","html_url":"javascript:alert(1)"}}`, webhook.ErrBadPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodePush(tt.ct, []byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodePushAccepts(t *testing.T) {
	for _, ref := range []string{"refs/heads/fünf", "refs/heads/機能/x", "refs/tags/v1.0.0", "refs/heads/release/1.x", "refs/heads/a-b_c.d"} {
		body := strings.Replace(validPush, "refs/heads/main", ref, 1)
		if ev, err := DecodePush("application/json", []byte(body)); err != nil || ev.Ref != ref {
			t.Errorf("%s: %v", ref, err)
		}
	}
	// No member repeats, at any depth; nor, under any case folding, one that is read.
	for _, tc := range []struct{ from, to, dup string }{
		{`"pusher":{"login":"dev"}`, `"pusher":{"login":"dev"},"pusher":{"login":"x"}`, "pusher"},
		{`"full_name":`, `"FULL_NAME":"x/y","full_name":`, "repository.full_name"},
		{`"pusher":{"login":"dev"}`, `"pusher":{"login":"dev"},"commits":[{"ref":1,"ref":2}]`, "commits.0.ref"},
		{`"ref":`, `"ref":"refs/heads/x","repoſitory":{},"Ref":`, "Ref"},
	} {
		body := strings.Replace(validPush, tc.from, tc.to, 1)
		if _, err := DecodePush("application/json", []byte(body)); err == nil || !strings.HasSuffix(err.Error(), ": "+tc.dup+" given more than once") {
			t.Errorf("%s: %v", tc.to, err)
		}
	}
}

func TestDecodePushErrorsNameJSONTypes(t *testing.T) {
	_, err := DecodePush("application/json", []byte(`{"repository":[]}`))
	if err == nil || err.Error() != "malformed payload: repository must be object, not array" {
		t.Fatalf("got %v", err)
	}
	_, err = DecodePush("application/json", []byte(`{"ref":"refs/heads/main","ref":"refs/heads/x","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"o/r","clone_url":"http://h/o/r"}}`))
	if err == nil || err.Error() != "malformed payload: ref given more than once" {
		t.Fatalf("got %v", err)
	}
}

func TestDeletedPush(t *testing.T) {
	body := strings.Replace(validPush, "0123456789abcdef0123456789abcdef01234567", strings.Repeat("0", 40), 1)
	ev, err := DecodePush("application/json", []byte(body))
	if err != nil || !ev.Deleted() {
		t.Fatalf("deleted push: %+v %v", ev, err)
	}
}

// formPayload reads a form exactly as url.ParseQuery does, with one copy instead of three.
func FuzzFormPayload(f *testing.F) {
	for _, s := range []string{"payload=%7B%7D", "payload=a&payload=b", "x=1&payload=a+b", "payload=%zz", "a;b=1&payload=1",
		"%70ayload=x", "&&payload=&", "x=%2&payload=1", "payload", "=payload&payload=1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := formPayload(body)
		form, perr := url.ParseQuery(string(body))
		switch {
		case perr != nil || len(form["payload"]) != 1:
			if err == nil {
				t.Fatalf("%q: payload %q, ParseQuery: %v, %d payloads", body, got, perr, len(form["payload"]))
			}
		case err != nil:
			t.Fatalf("%q: %v, ParseQuery: %q", body, err, form.Get("payload"))
		case string(got) != form.Get("payload"):
			t.Fatalf("%q: %q, ParseQuery: %q", body, got, form.Get("payload"))
		}
	})
}

func FuzzDecodePush(f *testing.F) {
	f.Add("application/json", []byte(validPush))
	f.Add("application/x-www-form-urlencoded", []byte("payload="+url.QueryEscape(validPush)))
	f.Add("application/json", []byte(`{"repository":null}`))
	f.Add("application/json", []byte(`{"ref":1}`))
	f.Add("application/json", []byte(strings.Replace(validPush, `"ref":`, `"ref":"refs/heads/x","REF":`, 1)))
	f.Add("application/json", []byte(strings.Replace(validPush, "refs/heads/main", "refs/heads/fünf", 1)))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		ev, err := DecodePush(ct, body)
		if err != nil {
			if !errors.Is(err, webhook.ErrBadPayload) && !errors.Is(err, webhook.ErrUnsupportedMediaType) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// Whatever decodes is complete enough to act on.
		if ev.Repository == nil || !fullNamePattern.MatchString(ev.Repository.FullName) ||
			!strings.HasPrefix(ev.Ref, "refs/") || len(ev.URLs()) == 0 || !webhook.ValidRef(ev.Ref) {
			t.Fatalf("accepted incomplete event %+v", ev)
		}
		// ... and means one thing only: Go's own decoder, which keeps the last of repeated
		// members, reads the same push from it.
		if ct == "application/json" {
			var v1 PushEvent
			if err := json.Unmarshal(body, &v1); err != nil || v1.Ref != ev.Ref || v1.After != ev.After || v1.Before != ev.Before ||
				v1.Repository == nil || *v1.Repository != *ev.Repository {
				t.Fatalf("accepted %+v, encoding/json reads %+v (%v)", ev, v1, err)
			}
		}
	})
}

// The decoding errors say what is wrong with the JSON without echoing it.
func TestJSONErrorMessages(t *testing.T) {
	for body, want := range map[string]string{
		validPush[:40]:   "truncated JSON",
		validPush + `{}`: "trailing data after the JSON document",
		validPush + ` ]`: "trailing data after the JSON document",
		`{"ref":}`:       "invalid JSON at byte 8",
		`{"ref":1}`:      "ref must be string, not number",
		`"push"`:         "the payload must be object, not string",
	} {
		_, err := DecodePush("application/json", []byte(body))
		if err == nil || !strings.HasSuffix(err.Error(), ": "+want) {
			t.Errorf("%.30q: %v, want %q", body, err, want)
		}
	}
}
