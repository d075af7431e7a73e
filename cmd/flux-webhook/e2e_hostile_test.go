package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/record"
)

// hostile is one bad request and the answer it must get.
type hostile struct {
	name    string
	method  string            // POST when empty
	path    string            // /hook when empty
	headers map[string]string // Content-Type is application/json unless given ("" removes it)
	body    []byte
	chunked bool // send the body without a Content-Length
	// expect100: send "Expect: 100-continue" and the body only if asked for, as curl does for
	// bodies over 1 MiB. A body whose Content-Length is over the limit is refused before it
	// is read; a sender that writes it anyway may see the connection reset before it reads
	// the 413 (net/http closes the connection after answering).
	expect100 bool
	raw       string // sent as is over a TCP connection instead (request line, headers and body)
	platform  bool   // sent to the platform API's address instead of /hook's
	code      int
	errHas    string // a part of the JSON error
	// plain: net/http's own answer before any handler runs (text/plain); noBody: no body at
	// all (HEAD, OPTIONS).
	plain, noBody bool
	check         func(t *testing.T, resp *http.Response, body []byte)
}

func hmacHex(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// clientFrom returns an HTTP client whose connections come from the given loopback address
// (the failed-authentication budget is per address) and whose answers are recorded for the
// secret sweep.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{
		Transport:     e2e.answers.Wrap(&http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, ExpectContinueTimeout: 10 * time.Second}),
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fluxState is what a push would change on a Flux object.
type fluxState struct{ resourceVersion, requestedAt, record string }

func (a *app) fluxState(t *testing.T) map[string]fluxState {
	t.Helper()
	out := map[string]fluxState{}
	for kind, o := range map[string]client.Object{"GitRepository": &sourcev1.GitRepository{}, "Kustomization": &kustomizev1.Kustomization{}} {
		if err := e2e.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: fluxNS, Name: a.name}, o); err != nil {
			t.Fatal(err)
		}
		ann := o.GetAnnotations()
		out[kind] = fluxState{o.GetResourceVersion(), ann[meta.ReconcileRequestAnnotation], ann[record.Annotation]}
	}
	return out
}

// settled waits until the app's Flux objects stop changing and returns their state.
func (a *app) settled(t *testing.T) map[string]fluxState {
	t.Helper()
	var before map[string]fluxState
	waitFor(t, time.Minute, "Flux objects of "+a.name+" settled", func() bool {
		before = a.fluxState(t)
		time.Sleep(3 * time.Second)
		return maps.Equal(before, a.fluxState(t))
	})
	return before
}

// More than 40 bad requests against the real service: each gets its code and a JSON error
// (but for the answers net/http gives before any handler runs), none patches the Flux
// objects of the repository they name, and no answer carries a secret. A slow sender is cut
// meanwhile.
func TestHostileRequests(t *testing.T) {
	integration(t)
	sentinel := newApp(t, "hostile-"+randomSuffix(), "main")
	sha := strings.TrimPrefix(sentinel.applied(t), "main@sha1:")
	push := sentinel.pushEvent(sha)

	// A slow sender, from the start: headers that never end.
	slow := make(chan string, 1)
	go func() { slow <- slowHeaders(e2e.hookURL) }()

	// One real delivery of the sentinel's head, answered and reported, to be replayed below.
	delivery := "hostile-" + randomSuffix()
	signed := map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, push), "X-Gitea-Delivery": delivery, "X-Gitea-Event": "push"}
	first := send(t, clientFrom("127.0.0.2"), hostile{headers: signed, body: push})
	if first.code != http.StatusAccepted {
		t.Fatalf("the real delivery: %d %s", first.code, first.body)
	}
	sentinel.waitFinal(t, sha, "GitRepository", "success")
	sentinel.waitFinal(t, sha, "Kustomization", "success")
	// The bad requests name a newer commit, which any request that got through would make
	// Flux reconcile (a repeat of the reported one would be absorbed as already requested).
	replayed := push
	next := sentinel.commit(t, "deploy/configmap.yaml", configMap(sentinel.name, "never-applied"), "hostile")
	push = sentinel.pushEvent(next)
	before := sentinel.settled(t)

	event := func(edit func(m map[string]any)) []byte {
		var m map[string]any
		_ = json.Unmarshal(push, &m)
		edit(m)
		b, _ := json.Marshal(m)
		return b
	}
	repo := func(edit func(r map[string]any)) []byte {
		return event(func(m map[string]any) { edit(m["repository"].(map[string]any)) })
	}
	// replace edits the raw push, for what json.Marshal would not write (duplicate keys).
	replace := func(old, new string) []byte {
		if !bytes.Contains(push, []byte(old)) {
			t.Fatalf("push event lacks %s", old)
		}
		return bytes.Replace(push, []byte(old), []byte(new), 1)
	}
	ref := `"ref":"refs/heads/main"`
	token := sentinel.token()
	bearer := func(extra ...string) map[string]string {
		h := map[string]string{"Authorization": "Bearer " + token}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	platform := map[string]string{"Authorization": "Bearer " + platformToken}
	huge := append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), 3<<20)...), `"}`...)
	manyHeaders := map[string]string{"Authorization": "Bearer " + token}
	for i := range 2000 {
		manyHeaders[fmt.Sprintf("X-Pad-%04d", i)] = strings.Repeat("p", 30)
	}
	form := func(values url.Values) []byte { return []byte(values.Encode()) }
	full := sentinel.repo.FullName
	owner, name, _ := strings.Cut(full, "/")
	formCT := "application/x-www-form-urlencoded"

	tests := []hostile{
		// Credentials.
		{name: "no credentials", body: push, code: 401},
		{name: "wrong bearer", headers: map[string]string{"Authorization": "Bearer wrong-token"}, body: push, code: 401},
		{name: "empty bearer", headers: map[string]string{"Authorization": "Bearer "}, body: push, code: 401},
		{name: "whitespace bearer", headers: map[string]string{"Authorization": "Bearer \t   "}, body: push, code: 401},
		{name: "empty authorization", headers: map[string]string{"Authorization": ""}, body: push, code: 401},
		{name: "token in the query string", path: "/hook?token=" + url.QueryEscape(token), body: push, code: 401},
		{name: "token as access_token parameter", path: "/hook?access_token=" + url.QueryEscape(token) + "&secret=" + url.QueryEscape(token), body: push, code: 401},
		{name: "token in the path", path: "/hook/" + token, body: push, code: 401},
		{name: "token in an unknown path", path: "/hooks/" + token, headers: bearer(), body: push, code: 404},
		{name: "basic auth with the token", headers: map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("gitea:"+token))}, body: push, code: 401},
		{name: "token scheme instead of bearer", headers: map[string]string{"Authorization": "token " + token}, body: push, code: 401},
		{name: "bearer with a prefix of the token", headers: map[string]string{"Authorization": "Bearer " + token[:len(token)-1]}, body: push, code: 401},
		{name: "bearer with the token and more", headers: map[string]string{"Authorization": "Bearer " + token + "x"}, body: push, code: 401},
		{name: "signature of another body", headers: map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, []byte("{}"))}, body: push, code: 401},
		{name: "hub signature of another body", headers: map[string]string{"X-Hub-Signature-256": "sha256=" + hmacHex(e2e.webhookKey, append(push, ' '))}, body: push, code: 401},
		{name: "signature under the hook key", headers: map[string]string{"X-Gitea-Signature": hmacHex(e2e.hookKey, push)}, body: push, code: 401},
		{name: "signature under the scoped token", headers: map[string]string{"X-Gitea-Signature": hmacHex(token, push)}, body: push, code: 401},
		{name: "the hook key as a bearer", headers: map[string]string{"Authorization": "Bearer " + e2e.hookKey}, body: push, code: 401},
		{name: "the webhook key as a bearer", headers: map[string]string{"Authorization": "Bearer " + e2e.webhookKey}, body: push, code: 401},
		{name: "a shared token while the shared mode is off", headers: map[string]string{"Authorization": "Bearer " + strings.Repeat("s", 40)}, body: push, code: 401},
		{name: "a scoped token with its scope changed", headers: map[string]string{"Authorization": "Bearer " + strings.Replace(token, sentinel.name, sentinel.name+"x", 1)}, body: push, code: 401},
		{name: "a scoped token of another repository", headers: map[string]string{"Authorization": "Bearer " + tokenFor(e2e.gitea.AdminUser+"/some-other-repository")}, body: push, code: 403, errHas: "may not push for"},
		{name: "an organization token of another owner", headers: map[string]string{"Authorization": "Bearer " + tokenFor("another-owner")}, body: push, code: 403, errHas: "may not push for"},
		{name: "signature that is not hex", headers: map[string]string{"X-Gitea-Signature": strings.Repeat("zz", 32)}, body: push, code: 401},
		{name: "signature under the platform token", headers: map[string]string{"X-Gitea-Signature": hmacHex(platformToken, push)}, body: push, code: 401},
		{name: "the token as a signature", headers: map[string]string{"X-Gitea-Signature": token}, body: push, code: 401},
		{name: "platform token on /hook", headers: platform, body: push, code: 401},
		{name: "forwarded-for loopback without credentials", headers: map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}, body: push, code: 401},
		{name: "overlong delivery id without credentials", headers: map[string]string{"X-Gitea-Delivery": strings.Repeat("d", 10000)}, body: push, code: 401},

		// Payloads that are not one complete push (authenticated).
		{name: "malformed json", headers: bearer(), body: []byte(`{"ref":`), code: 400, errHas: "truncated JSON"},
		{name: "not json", headers: bearer(), body: []byte("hello"), code: 400},
		{name: "empty body", headers: bearer(), body: nil, code: 400, errHas: "empty body: send POST /hook/<owner>/<repo>"},
		{name: "empty body without a content type", headers: bearer("Content-Type", ""), body: nil, code: 400, errHas: "empty body: send POST /hook/<owner>/<repo>"},
		{name: "array of the push", headers: bearer(), body: append(append([]byte("["), push...), ']'), code: 400},
		{name: "null", headers: bearer(), body: []byte("null"), code: 400, errHas: "repository is missing"},
		{name: "repository is an array (argo-cd#20444)", headers: bearer(), body: event(func(m map[string]any) { m["repository"] = []any{} }), code: 400, errHas: "repository must be object, not array"},
		{name: "ref is a number", headers: bearer(), body: event(func(m map[string]any) { m["ref"] = 42 }), code: 400, errHas: "ref must be string, not number"},
		{name: "after is a boolean", headers: bearer(), body: event(func(m map[string]any) { m["after"] = true }), code: 400},
		{name: "full_name is an object", headers: bearer(), body: repo(func(r map[string]any) { r["full_name"] = map[string]any{"a": 1} }), code: 400},
		{name: "no repository (CVE-2025-59537)", headers: bearer(), body: event(func(m map[string]any) { delete(m, "repository") }), code: 400, errHas: "repository is missing"},
		{name: "null repository", headers: bearer(), body: event(func(m map[string]any) { m["repository"] = nil }), code: 400, errHas: "repository is missing"},
		{name: "empty repository", headers: bearer(), body: event(func(m map[string]any) { m["repository"] = map[string]any{} }), code: 400},
		{name: "path traversal in full_name", headers: bearer(), body: repo(func(r map[string]any) { r["full_name"] = "../../etc/passwd" }), code: 400},
		{name: "homoglyph in full_name", headers: bearer(), body: repo(func(r map[string]any) { r["full_name"] = strings.Replace(sentinel.repo.FullName, "a", "\u0430", 1) }), code: 400},
		{name: "path traversal in ref", headers: bearer(), body: event(func(m map[string]any) { m["ref"] = "refs/heads/../../main" }), code: 400, errHas: "ref is not a full Git reference"},
		{name: "bidi override in ref", headers: bearer(), body: event(func(m map[string]any) { m["ref"] = "refs/heads/ma\u202ein" }), code: 400},
		{name: "NUL in ref", headers: bearer(), body: event(func(m map[string]any) { m["ref"] = "refs/heads/main\u0000" }), code: 400},
		{name: "after is not a commit", headers: bearer(), body: event(func(m map[string]any) { m["after"] = "HEAD~1" }), code: 400},
		{name: "after of 250 KiB of zeros", headers: bearer(), body: event(func(m map[string]any) { m["after"] = strings.Repeat("0", 250<<10) }), code: 400, errHas: "after is not a commit id"},
		{name: "before of 250 KiB", headers: bearer(), body: event(func(m map[string]any) { m["before"] = strings.Repeat("0", 250<<10) }), code: 400, errHas: "before is not a commit id"},
		{name: "before is not a commit", headers: bearer(), body: event(func(m map[string]any) { m["before"] = "<script>" }), code: 400, errHas: "before is not a commit id"},
		{name: "full_name and clone_url of two repositories", headers: bearer(), body: repo(func(r map[string]any) { r["clone_url"] = e2e.gitea.URL + "/" + e2e.gitea.AdminUser + "/other.git" }), code: 400, errHas: "does not name"},
		{name: "a commit the repository does not have", headers: bearer(), body: event(func(m map[string]any) { m["after"] = strings.Repeat("e", 40) }), code: 403, errHas: "has no commit"},
		{name: "a reference the repository does not have", headers: bearer(), body: event(func(m map[string]any) { m["ref"], m["after"] = "refs/heads/no-such-branch", strings.Repeat("e", 40) }), code: 403, errHas: "has no commit"},
		{name: "no url naming a repository", headers: bearer(), body: repo(func(r map[string]any) { r["clone_url"], r["html_url"] = "file:///etc/passwd", "javascript:alert(1)" }), code: 400},
		{name: "duplicate ref, the last one followed", headers: bearer(), body: replace(ref, `"ref":"refs/heads/nobody-follows",`+ref), code: 400, errHas: "ref given more than once"},
		{name: "duplicate ref in another case", headers: bearer(), body: replace(ref, `"REF":"refs/heads/nobody-follows",`+ref), code: 400},
		{name: "duplicate after", headers: bearer(), body: replace(`"after":`, `"after":"`+strings.Repeat("0", 40)+`","After":`), code: 400},
		{name: "duplicate repository by unicode folding", headers: bearer(), body: replace(`"repository":`, `"repoſitory":{"full_name":"nobody/nothing","clone_url":"http://127.0.0.1:1/nobody/nothing.git"},"repository":`), code: 400},
		{name: "duplicate full_name", headers: bearer(), body: replace(`"full_name":`, `"full_name":"nobody/nothing","full_name":`), code: 400},
		{name: "trailing data", headers: bearer(), body: append(append([]byte{}, push...), []byte(`{"ref":"refs/heads/main"}`)...), code: 400, errHas: "trailing data"},
		{name: "deeply nested", headers: bearer(), body: []byte(`{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`), code: 400},
		{name: "huge payload (CVE-2024-40634)", headers: bearer(), body: huge, expect100: true, code: 413, errHas: "request body over 3 MiB"},
		{name: "huge payload without a length", headers: bearer(), body: huge, chunked: true, code: 413},
		{name: "huge payload without credentials: refused unread", body: huge, expect100: true, code: 401},
		{name: "huge payload without a length nor credentials: refused unread", body: huge, chunked: true, code: 401},
		{name: "truncated body", raw: fmt.Sprintf("POST /hook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			token, len(push), push[:len(push)/2]), code: 400, errHas: "body shorter than its Content-Length"},

		// Content types.
		{name: "text/plain", headers: bearer("Content-Type", "text/plain"), body: push, code: 415},
		{name: "no content type", headers: bearer("Content-Type", ""), body: push, code: 400, errHas: "without Content-Type: send POST /hook/<owner>/<repo>"},
		{name: "multipart", headers: bearer("Content-Type", "multipart/form-data; boundary=x"), body: push, code: 415},
		{name: "xml", headers: bearer("Content-Type", "application/xml"), body: push, code: 415},
		{name: "content type list", headers: bearer("Content-Type", "application/json, text/plain"), body: push, code: 415},
		{name: "form with two payloads", headers: bearer("Content-Type", formCT), body: form(url.Values{"payload": {string(push), string(push)}}), code: 400},
		{name: "form payload not json", headers: bearer("Content-Type", formCT), body: form(url.Values{"payload": {"hello"}}), code: 400},

		// Headers over the limit: net/http answers before any handler.
		{name: "header over 64 KiB", headers: bearer("X-Pad", strings.Repeat("p", 70<<10)), body: push, code: 431, plain: true},
		{name: "2000 headers", headers: manyHeaders, body: push, code: 431, plain: true},

		// Methods and paths.
		{name: "GET", method: http.MethodGet, headers: bearer(), code: 405},
		{name: "PUT", method: http.MethodPut, headers: bearer(), body: push, code: 405},
		{name: "PROPFIND", method: "PROPFIND", headers: bearer(), body: push, code: 405},
		{name: "TRACE", method: http.MethodTrace, headers: bearer(), code: 405},
		{name: "HEAD", method: http.MethodHead, headers: bearer(), code: 405, noBody: true},
		{name: "OPTIONS answers only what is allowed", method: http.MethodOptions, code: 204, noBody: true, check: func(t *testing.T, resp *http.Response, _ []byte) {
			if resp.Header.Get("Allow") != "OPTIONS, POST" {
				t.Fatalf("Allow %q", resp.Header.Get("Allow"))
			}
		}},
		{name: "double slash", path: "//hook", headers: bearer(), body: push, code: 404},
		{name: "dot-dot from /hook to the API", path: "/hook/../api/v1/reconcile", headers: platform, body: []byte(`{"all":true}`), code: 401},
		{name: "encoded dot-dot from /hook to the API", path: "/hook/%2e%2e/api/v1/reconcile", headers: platform, body: []byte(`{"all":true}`), code: 401},
		{name: "encoded dot-dot before /hook", path: "/%2e%2e/hook", headers: bearer(), body: push, code: 404},
		{name: "dot-dot from the API to /hook", path: "/api/v1/reconcile/../../../hook", headers: bearer(), body: push, platform: true, code: 401},
		{name: "the platform API on /hook's address", path: "/api/v1/reconcile", headers: platform, body: []byte(`{"all":true}`), code: 404},
		{name: "/hook on the platform API's address", headers: bearer(), body: push, platform: true, code: 404},
		{name: "upper-case path", path: "/HOOK", headers: bearer(), body: push, code: 404},
		{name: "path parameter", path: "/hook;x=1", headers: bearer(), body: push, code: 404},

		// The short form's path, /hook/<owner>/<repo>[/<ref>][?sha=] with no body, read as
		// strictly as a payload's full_name and ref (authenticated: refused on its path).
		{name: "short form: an escaped slash", path: "/hook/" + strings.Replace(full, "/", "%2F", 1), headers: bearer(), code: 400, errHas: "percent-escaped"},
		{name: "short form: an escaped slash in the reference", path: "/hook/" + full + "/refs%2Fheads%2Fmain", headers: bearer(), code: 400, errHas: "percent-escaped"},
		{name: "short form: dot-dot out of the path", path: "/hook/" + full + "/../../api/v1/reconcile", headers: bearer(), code: 400, errHas: "dot segment"},
		{name: "short form: dot-dot to another repository", path: "/hook/" + full + "/../other", headers: bearer(), code: 400, errHas: "dot segment"},
		{name: "short form: encoded dot-dot", path: "/hook/" + full + "/%2e%2e/x", headers: bearer(), code: 400, errHas: "percent-escaped"},
		{name: "short form: a dot segment", path: "/hook/" + owner + "/./" + name, headers: bearer(), code: 400, errHas: "dot segment"},
		{name: "short form: an empty segment", path: "/hook/" + owner + "//" + name, headers: bearer(), code: 400, errHas: "empty path segment"},
		{name: "short form: a trailing slash", path: "/hook/" + full + "/", headers: bearer(), code: 400, errHas: "empty path segment"},
		{name: "short form: an escaped NUL", path: "/hook/" + full + "/main%00", headers: bearer(), code: 400, errHas: "percent-escaped"},
		{name: "short form: an escaped newline", path: "/hook/" + full + "/main%0Ainjected", headers: bearer(), code: 400, errHas: "percent-escaped"},
		{name: "short form: a backslash", path: "/hook/" + owner + "%5C" + name + "/main", headers: bearer(), code: 400, errHas: "percent-escaped"},
		{name: "short form: a double encoding", path: "/hook/" + full + "/main%252F..%252F", headers: bearer(), code: 400, errHas: "percent-escaped"},
		{name: "short form: an invalid escape", raw: fmt.Sprintf("POST /hook/%s/main%%zz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", full, token), code: 400, plain: true}, // net/http's own answer: it cannot parse the target
		{name: "short form: a bidi override", path: "/hook/" + full + "/ma%E2%80%AEin", headers: bearer(), code: 400, errHas: "not a branch or tag name"},
		{name: "short form: a raw bidi override", raw: fmt.Sprintf("POST /hook/%s/ma\u202ein HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", full, token), code: 400, errHas: "not a branch or tag name"},
		{name: "short form: a reference Git refuses", path: "/hook/" + full + "/refs/heads/ma:in", headers: bearer(), code: 400, errHas: "not a full Git reference"},
		{name: "short form: a homoglyph in the owner", path: "/hook/" + strings.Replace(full, "a", "%D0%B0", 1), headers: bearer(), code: 400, errHas: "owner/name"},
		{name: "short form: no repository", path: "/hook/" + owner, headers: bearer(), code: 400, errHas: "no repository"},
		{name: "short form: a path over the bound", path: "/hook/" + full + "/" + strings.Repeat("%C3%BC", 300), headers: bearer(), code: 400, errHas: "path over"},
		{name: "short form: the token in the path with a bearer", path: "/hook/" + token, headers: bearer(), code: 400, errHas: "holds a flux-webhook token"},
		{name: "short form: the token as the reference", path: "/hook/" + full + "/" + token, headers: bearer(), code: 400, errHas: "holds a flux-webhook token"},
		{name: "short form: another repository", path: "/hook/" + owner + "/some-other-repository", headers: bearer(), code: 403, errHas: "may not push for"},
		{name: "short form: another owner", path: "/hook/another-owner/" + name, headers: bearer(), code: 403, errHas: "may not push for"},
		{name: "short form: sha given twice", path: "/hook/" + full + "?sha=" + next + "&sha=" + next, headers: bearer(), code: 400, errHas: "sha given more than once"},
		{name: "short form: sha not a commit id", path: "/hook/" + full + "?sha=HEAD~1", headers: bearer(), code: 400, errHas: "sha is not a commit id"},
		{name: "short form: sha in upper case", path: "/hook/" + full + "?sha=" + strings.ToUpper(next), headers: bearer(), code: 400, errHas: "sha is not a commit id"},
		{name: "short form: a commit the repository does not have", path: "/hook/" + full + "?sha=" + strings.Repeat("e", 40), headers: bearer(), code: 403, errHas: "has no commit"},
		{name: "short form: a branch Gitea does not have", path: "/hook/" + full + "/no-such-branch", headers: bearer(), code: 404, errHas: "has no branch or tag no-such-branch"},
		{name: "short form: a signature over the empty body", path: "/hook/" + full, headers: map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, nil)}, code: 401},
		{name: "short form: no credentials", path: "/hook/" + full, code: 401},
		{name: "short form: the push event of another repository on the path", path: "/hook/" + owner + "/other", headers: map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, push)}, body: push, code: 400, errHas: "the path names " + owner + "/other"},
		{name: "short form: the push event on another reference's path", path: "/hook/" + full + "/other-branch", headers: bearer(), body: push, code: 400, errHas: "the path names the reference other-branch"},

		// The platform API.
		{name: "API with the hook token", platform: true, path: "/api/v1/reconcile", headers: bearer(), body: []byte(`{"all":true}`), code: 401},
		{name: "API without credentials", platform: true, path: "/api/v1/reconcile", body: []byte(`{"all":true}`), code: 401},
		{name: "API job with the hook token", method: http.MethodGet, platform: true, path: "/api/v1/reconcile/0123456789abcdef", headers: bearer(), code: 401},
		{name: "API unknown field", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`{"regoin":"eu-central"}`), code: 400, errHas: "unknown field"},
		{name: "API empty selector", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`{}`), code: 400, errHas: "empty selector"},
		{name: "API null selector", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`null`), code: 400, errHas: "empty selector"},
		{name: "API path traversal in region", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`{"region":"../etc"}`), code: 400, errHas: "invalid selector"},
		{name: "API unknown kind", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`{"kinds":["Secret"]}`), code: 400, errHas: "invalid selector"},
		{name: "API bad label selector", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`{"labelSelector":"!!!"}`), code: 400},
		{name: "API clusters as a string", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`{"clusters":"e2e"}`), code: 400},
		{name: "API trailing selector", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`{"region":"nowhere"} {"all":true}`), code: 400, errHas: "trailing data"},
		{name: "API text/plain", platform: true, path: "/api/v1/reconcile", headers: map[string]string{"Authorization": "Bearer " + platformToken, "Content-Type": "text/plain"}, body: []byte(`{"region":"nowhere"}`), code: 415},
		{name: "API body over 64 KiB", platform: true, path: "/api/v1/reconcile", headers: platform, body: []byte(`{"labelSelector":"` + strings.Repeat("a", 64<<10) + `"}`), expect100: true, code: 413, errHas: "over 64 KiB"},
		{name: "API job that is no id", method: http.MethodGet, platform: true, path: "/api/v1/reconcile/..%2f..%2fhook", headers: platform, code: 404},

		// ?wait with bad values (authenticated: refused before the push is read).
		{name: "wait=yes", path: "/hook?wait=yes", headers: bearer(), body: push, code: 400},
		{name: "negative timeout", path: "/hook?wait=true&timeout=-1s", headers: bearer(), body: push, code: 400},
		{name: "timeout over the maximum", path: "/hook?wait=true&timeout=31m", headers: bearer(), body: push, code: 400},
		{name: "timeout not a duration", path: "/hook?wait=true&timeout=abc", headers: bearer(), body: push, code: 400},
		{name: "wait given twice", path: "/hook?wait=true&wait=false", headers: bearer(), body: push, code: 400, errHas: "given once"},

		// Replays: the same delivery gets the earlier answer and patches nothing; a forged one
		// is refused.
		{name: "replayed delivery", headers: signed, body: replayed, code: 202, check: func(t *testing.T, resp *http.Response, body []byte) {
			if string(body) != first.body || resp.Header.Get("X-Delivery-Replayed") != "true" {
				t.Fatalf("replay answered %s (replayed %q), first %s", body, resp.Header.Get("X-Delivery-Replayed"), first.body)
			}
		}},
		{name: "replayed delivery with another body", headers: signed, body: push, code: 401},

		// Not pushes: answered, nothing requested.
		{name: "not a push event", headers: bearer("X-Gitea-Event", "issues"), body: push, code: 200},
		{name: "branch deletion", headers: bearer(), body: event(func(m map[string]any) { m["after"] = strings.Repeat("0", 40) }), code: 200},
	}
	if len(tests) < 40 {
		t.Fatalf("only %d bad requests", len(tests))
	}
	secrets := map[string]string{"scoped token": token, "hook key": e2e.hookKey, "webhook key": e2e.webhookKey,
		"platform token": platformToken, "Gitea token": e2e.giteaToken}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each request from an address of its own: the failed-authentication budget of one
			// address is not what this test is about.
			got := send(t, clientFrom(fmt.Sprintf("127.0.%d.%d", 10+i/200, 10+i%200)), tt)
			if got.code != tt.code {
				t.Fatalf("%d %s, want %d", got.code, got.body, tt.code)
			}
			for name, s := range secrets {
				if strings.Contains(got.body, s) || strings.Contains(got.header, s) {
					t.Fatalf("%s in the answer: %s %s", name, got.header, got.body)
				}
			}
			switch {
			case tt.noBody:
				if got.body != "" {
					t.Fatalf("body %q", got.body)
				}
			case tt.plain:
				if !strings.HasPrefix(got.contentType, "text/plain") {
					t.Fatalf("content type %q", got.contentType)
				}
			case tt.code >= 400:
				var e struct{ Error string }
				if !strings.HasPrefix(got.contentType, "application/json") || json.Unmarshal([]byte(got.body), &e) != nil || e.Error == "" {
					t.Fatalf("not a JSON error: %q %s", got.contentType, got.body)
				}
				if !strings.Contains(e.Error, tt.errHas) {
					t.Fatalf("error %q, want it to say %q", e.Error, tt.errHas)
				}
			}
			if tt.check != nil {
				tt.check(t, got.resp, []byte(got.body))
			}
		})
	}

	// Nothing was patched: not requestedAt, not the record, not anything else.
	after := sentinel.fluxState(t)
	if !maps.Equal(before, after) {
		t.Fatalf("the sentinel's Flux objects changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if states, _ := sentinel.states(t, sha, sentinel.context("Kustomization")); len(states) != 2 {
		t.Fatalf("statuses of the replayed commit: %v", states)
	}
	if all, err := sentinel.repo.Statuses(t.Context(), next); err != nil || len(all) != 0 {
		t.Fatalf("statuses of the commit the bad requests named: %d, %v", len(all), err)
	}
	if msg := <-slow; msg != "" {
		t.Fatal(msg)
	}
	t.Logf("%d bad requests answered, nothing patched", len(tests))
}

type sent struct {
	code                      int
	body, header, contentType string
	resp                      *http.Response
}

func send(t testing.TB, c *http.Client, tt hostile) sent {
	t.Helper()
	if tt.raw != "" {
		return sendRaw(t, tt.raw)
	}
	method, path := tt.method, tt.path
	if method == "" {
		method = http.MethodPost
	}
	if path == "" {
		path = "/hook"
	}
	var body io.Reader = bytes.NewReader(tt.body)
	if tt.chunked {
		body = io.MultiReader(body) // a reader of unknown length: sent chunked
	}
	base := e2e.hookURL
	if tt.platform {
		base = e2e.platformURL
	}
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tt.expect100 {
		req.Header.Set("Expect", "100-continue")
	}
	for k, v := range tt.headers {
		if v == "" && k == "Content-Type" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var hdr bytes.Buffer
	_ = resp.Header.Write(&hdr)
	return sent{code: resp.StatusCode, body: string(b), header: hdr.String(), contentType: resp.Header.Get("Content-Type"), resp: resp}
}

// sendRaw writes a request over TCP as is, half-closes, and reads the answer.
func sendRaw(t testing.TB, raw string) sent {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e2e.hookURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, _ := io.ReadAll(c)
	e2e.answers.Add("raw request to "+e2e.hookURL, b)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return sent{code: resp.StatusCode, body: string(body), header: string(b), contentType: resp.Header.Get("Content-Type"), resp: resp}
}

// slowHeaders sends headers one byte a second and never ends them; it returns "" when the
// service cuts the connection within its 10 s header timeout (net/http's answer: none).
func slowHeaders(hookURL string) string {
	c, err := net.Dial("tcp", strings.TrimPrefix(hookURL, "http://"))
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "POST /hook HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
		return err.Error()
	}
	go func() {
		for range 60 {
			time.Sleep(time.Second)
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
		}
	}()
	_ = c.SetReadDeadline(start.Add(30 * time.Second))
	b, err := io.ReadAll(c)
	took := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return fmt.Sprintf("a sender trickling its headers was not cut after %s", took)
	}
	if len(b) > 0 || took < 9*time.Second || took > 15*time.Second {
		return fmt.Sprintf("a sender trickling its headers was cut after %s with %q, want after 10s with nothing", took, b)
	}
	return ""
}

// After 30 failed authentications from one address, its failures get 429 with Retry-After,
// also behind a forged X-Forwarded-For; the right token from that address is still served;
// another address still gets 401.
func TestFailedAuthenticationIsRateLimited(t *testing.T) {
	integration(t)
	nobody, token := unfollowedPush(t)
	attacker := clientFrom("127.0.1.1")
	wrong := map[string]string{"Authorization": "Bearer not-the-token"}
	for i := range 30 {
		if got := send(t, attacker, hostile{headers: wrong, body: nobody}); got.code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i+1, got.code, got.body)
		}
	}
	for _, h := range []map[string]string{wrong, {"Authorization": "Bearer not-the-token", "X-Forwarded-For": "198.51.100.7"}} {
		got := send(t, attacker, hostile{headers: h, body: nobody})
		if got.code != http.StatusTooManyRequests || got.resp.Header.Get("Retry-After") == "" || !strings.Contains(got.body, "too many failed authentications") {
			t.Fatalf("over the budget: %d %s (Retry-After %q)", got.code, got.body, got.resp.Header.Get("Retry-After"))
		}
	}
	if got := send(t, attacker, hostile{headers: map[string]string{"Authorization": "Bearer " + token}, body: nobody}); got.code != http.StatusOK || !strings.Contains(got.body, `"no-match"`) {
		t.Fatalf("the right token from the limited address: %d %s", got.code, got.body)
	}
	if got := send(t, clientFrom("127.0.1.2"), hostile{headers: wrong, body: nobody}); got.code != http.StatusUnauthorized {
		t.Fatalf("another address: %d %s", got.code, got.body)
	}
}

// Over 128 requests in flight, or 64 MiB of their bodies, the real service makes the next
// request wait, then answers 503 with Retry-After; a small body that fits is still served;
// once the senders are gone it serves again. The senders held here never finish their body.
func TestInFlightLimitsOfTheService(t *testing.T) {
	integration(t)
	nobody, token := unfollowedPush(t)
	bearer := map[string]string{"Authorization": "Bearer " + token}
	client := clientFrom("127.0.1.3")
	var held []net.Conn
	release := func() {
		for _, c := range held {
			c.Close()
		}
		held = nil
	}
	defer release()
	hold := func(n, length int) {
		for range n {
			c, err := net.Dial("tcp", strings.TrimPrefix(e2e.hookURL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
			// Authenticated: a request without credentials would be answered at once.
			fmt.Fprintf(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n{", token, length)
		}
		time.Sleep(time.Second) // every one of them in its handler
	}
	overloaded := func(what string, body []byte) {
		t.Helper()
		start := time.Now()
		got := send(t, client, hostile{headers: bearer, body: body})
		if got.code != http.StatusServiceUnavailable || got.resp.Header.Get("Retry-After") != "2" || time.Since(start) < 2*time.Second {
			t.Fatalf("%s: %d %s after %s (Retry-After %q)", what, got.code, got.body, time.Since(start), got.resp.Header.Get("Retry-After"))
		}
	}
	served := func() bool { return send(t, client, hostile{headers: bearer, body: nobody}).code == http.StatusOK }

	hold(128, 1000)
	overloaded("the 129th request", nobody)
	release()
	waitFor(t, 10*time.Second, "served again", served)

	hold(21, 3<<20) // 63 of the 64 MiB
	overloaded("a 3 MiB body", append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), 3<<20-100)...), `"}`...))
	if !served() {
		t.Fatal("a small body that fits was not served")
	}
	release()
	waitFor(t, 10*time.Second, "served again", served)
}
