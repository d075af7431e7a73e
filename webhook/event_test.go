package webhook

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		{"text/plain", "text/plain", validPush, ErrUnsupportedMediaType},
		{"no content type", "", validPush, ErrUnsupportedMediaType},
		{"multipart", "multipart/form-data; boundary=x", validPush, ErrUnsupportedMediaType},
		{"empty body", "application/json", "", ErrBadPayload},
		{"not json", "application/json", "hello", ErrBadPayload},
		{"truncated", "application/json", validPush[:40], ErrBadPayload},
		{"trailing document", "application/json", validPush + `{}`, ErrBadPayload},
		{"array", "application/json", `[` + validPush + `]`, ErrBadPayload},
		{"null", "application/json", `null`, ErrBadPayload},
		{"no repository", "application/json", `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}`, ErrBadPayload},
		{"null repository", "application/json", replace(`"repository":{`, `"repository":null,"x":{`), ErrBadPayload},
		{"repository is a string", "application/json", `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":"org/app"}`, ErrBadPayload},
		{"ref is a number", "application/json", replace(`"ref":"refs/heads/main"`, `"ref":42`), ErrBadPayload},
		{"no ref", "application/json", replace(`"ref":"refs/heads/main",`, ``), ErrBadPayload},
		{"short ref", "application/json", replace(`refs/heads/main`, `main`), ErrBadPayload},
		{"ref with newline", "application/json", replace(`refs/heads/main`, `refs/heads/ma\nin`), ErrBadPayload},
		{"no after", "application/json", replace(`"after":"0123456789abcdef0123456789abcdef01234567",`, ``), ErrBadPayload},
		{"after not a sha", "application/json", replace(`0123456789abcdef0123456789abcdef01234567`, `HEAD`), ErrBadPayload},
		{"upper-case sha", "application/json", replace(`0123456789abcdef0123456789abcdef01234567`, `0123456789ABCDEF0123456789ABCDEF01234567`), ErrBadPayload},
		{"no full_name", "application/json", replace(`"full_name":"org/app",`, ``), ErrBadPayload},
		{"path traversal name", "application/json", replace(`org/app`, `../etc`), ErrBadPayload},
		{"unicode name", "application/json", replace(`org/app`, `org/äpp`), ErrBadPayload},
		{"three segments", "application/json", replace(`org/app`, `org/app/x`), ErrBadPayload},
		{"no urls", "application/json", `{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"full_name":"org/app"}}`, ErrBadPayload},
		{"form without payload", "application/x-www-form-urlencoded", "x=1", ErrBadPayload},
		{"form with two payloads", "application/x-www-form-urlencoded", "payload=" + url.QueryEscape(validPush) + "&payload=" + url.QueryEscape(validPush), ErrBadPayload},
		{"form with bad escape", "application/x-www-form-urlencoded", "payload=%zz", ErrBadPayload},
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

func TestDeletedPush(t *testing.T) {
	body := strings.Replace(validPush, "0123456789abcdef0123456789abcdef01234567", strings.Repeat("0", 40), 1)
	ev, err := DecodePush("application/json", []byte(body))
	if err != nil || !ev.Deleted() {
		t.Fatalf("deleted push: %+v %v", ev, err)
	}
}

func FuzzDecodePush(f *testing.F) {
	f.Add("application/json", []byte(validPush))
	f.Add("application/x-www-form-urlencoded", []byte("payload="+url.QueryEscape(validPush)))
	f.Add("application/json", []byte(`{"repository":null}`))
	f.Add("application/json", []byte(`{"ref":1}`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		ev, err := DecodePush(ct, body)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) && !errors.Is(err, ErrUnsupportedMediaType) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		// Whatever decodes is complete enough to act on.
		if ev.Repository == nil || !fullNamePattern.MatchString(ev.Repository.FullName) ||
			!strings.HasPrefix(ev.Ref, "refs/") || len(ev.URLs()) == 0 {
			t.Fatalf("accepted incomplete event %+v", ev)
		}
	})
}
