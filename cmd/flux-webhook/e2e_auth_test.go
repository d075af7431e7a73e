package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// derived remembers every scoped token the suite derived, for the secret sweep.
var derived struct {
	sync.Mutex
	tokens map[string]string // token → what it speaks for
}

// tokenFor returns the scoped token of a repository ("owner/name") or, for a bare owner, of
// an organization, under the current hook key: what `flux-webhook token` prints.
func tokenFor(scope string) string {
	var s credentials.Scope
	var err error
	if strings.Contains(scope, "/") {
		s, err = credentials.RepositoryScope(scope)
	} else {
		s, err = credentials.OrganizationScope(scope)
	}
	if err != nil {
		panic(err)
	}
	tok := credentials.DeriveToken([]byte(e2e.hookKey), s)
	derived.Lock()
	defer derived.Unlock()
	if derived.tokens == nil {
		derived.tokens = map[string]string{}
	}
	derived.tokens[tok] = "the scoped token of " + s.String()
	return tok
}

// token is the app repository's scoped token.
func (a *app) token() string { return tokenFor(a.repo.FullName) }

// unfollowed is a real repository with one commit that no Flux object follows: a push of it
// is verified by Gitea and answered no-match. Its token is derived at each call: a test that
// rotates the hook key (TestTokenRotation, TestEnrollment) makes an earlier one stale.
var unfollowed struct {
	once     sync.Once
	event    []byte
	fullName string
	err      error
}

func unfollowedPush(t testing.TB) (event []byte, token string) {
	t.Helper()
	unfollowed.once.Do(func() {
		ctx := t.Context()
		repo, err := e2e.gitea.CreateRepo(ctx, "unfollowed-"+randomSuffix())
		if err != nil {
			unfollowed.err = err
			return
		}
		if err := repo.WriteFile("README.md", "nobody follows this\n"); err != nil {
			unfollowed.err = err
			return
		}
		sha, err := repo.Commit(ctx, "first")
		if err == nil {
			err = repo.Push(ctx, "main")
		}
		if err != nil {
			unfollowed.err = err
			return
		}
		unfollowed.event = (&app{branch: "main", repo: repo}).pushEvent(sha)
		unfollowed.fullName = repo.FullName
	})
	if unfollowed.err != nil {
		t.Fatal(unfollowed.err)
	}
	return unfollowed.event, tokenFor(unfollowed.fullName)
}

// A native Gitea webhook of content type form, with a secret: Gitea signs the JSON payload,
// not the form body it sends, and the delivery authenticates.
func TestNativeWebhookFormContentType(t *testing.T) {
	integration(t)
	a := newApp(t, "native-form-"+randomSuffix(), "main")
	if _, err := a.repo.AddHook(t.Context(), testenv.Hook{URL: e2e.hookURL + "/hook", Secret: e2e.webhookKey, ContentType: "form"}); err != nil {
		t.Fatal(err)
	}
	sha := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "from-a-form"), "form delivery")
	a.waitFinal(t, sha, "GitRepository", "success")
	a.waitFinal(t, sha, "Kustomization", "success")
	if v := configMapValue(t, a.name); v != "from-a-form" {
		t.Fatalf("ConfigMap value %q", v)
	}
}

// Hundreds of connections without credentials, idle or trickling bodies, take none of the
// room deliveries need: each is answered 401 from its headers (or cut by the header
// timeout). Senders trickling bodies under a made-up signature hold a few places of the
// signed reads' pool each. Real deliveries, Bearer and signed, keep getting their answer.
func TestUnauthenticatedFloodLeavesRoom(t *testing.T) {
	integration(t)
	event, token := unfollowedPush(t)
	lat := floodAndDeliver(t, 400, 60, event, token)
	slices.Sort(lat)
	t.Logf("%d deliveries among 400 unauthenticated connections: p50 %s p99 %s max %s", len(lat),
		lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
}

// floodAndDeliver opens n connections without credentials, from as many addresses (half
// idle after their request line, half trickling a body), and 12 trickling a body under a
// made-up signature from three addresses (each its share of the signed reads); then makes
// deliveries of event, half Bearer with token, half signed with the webhook key, one at a
// time from another address, and returns their latencies. Every delivery must be answered
// 200 or 202.
func floodAndDeliver(t testing.TB, n, deliveries int, event []byte, token string) []time.Duration {
	t.Helper()
	addr := strings.TrimPrefix(e2e.hookURL, "http://")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	open := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		return c
	}
	if n > 0 {
		for i := range n {
			c := open(fmt.Sprintf("127.0.%d.%d", 100+i/250, i%250+1))
			if i%2 == 0 {
				fmt.Fprint(c, "POST /hook HTTP/1.1\r\nHost: x\r\n")
			} else {
				fmt.Fprint(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
			}
		}
		for i := range 12 {
			c := open(fmt.Sprintf("127.0.97.%d", i/4+1))
			fmt.Fprintf(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Gitea-Signature: %s\r\nContent-Length: 100000\r\n\r\n{", strings.Repeat("0", 64))
		}
		time.Sleep(500 * time.Millisecond)
	}
	var lat []time.Duration
	for i := range deliveries {
		h := map[string]string{"Authorization": "Bearer " + token}
		if i%2 == 1 {
			h = map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, event), "X-Gitea-Event": "push"}
		}
		start := time.Now()
		got := send(t, clientFrom("127.0.99.1"), hostile{headers: h, body: event})
		lat = append(lat, time.Since(start))
		if got.code != http.StatusOK && got.code != http.StatusAccepted {
			t.Fatalf("delivery %d among the flood: %d %s", i, got.code, got.body)
		}
	}
	return lat
}

// A caller speaks only for its own repository, and Gitea confirms what it says: forged
// claims are refused and change nothing, on the victim's Flux objects nor on its commits.
func TestForgedClaimsChangeNothing(t *testing.T) {
	integration(t)
	attacker := newApp(t, "attacker-"+randomSuffix(), "main")
	victim := newApp(t, "victim-"+randomSuffix(), "main")
	victimSHA := strings.TrimPrefix(victim.applied(t), "main@sha1:")
	attackerSHA := strings.TrimPrefix(attacker.applied(t), "main@sha1:")
	// A newer victim commit that only a request that got through would apply.
	next := victim.commit(t, "deploy/configmap.yaml", configMap(victim.name, "never"), "never applied")
	before := victim.settled(t)
	forged := strings.Repeat("f", 40)
	edit := func(base []byte, f func(m map[string]any)) []byte {
		var m map[string]any
		_ = json.Unmarshal(base, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	victimEvent := victim.pushEvent(next)
	withToken := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	signed := func(b []byte) map[string]string {
		return map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, b)}
	}
	owner, _, _ := strings.Cut(victim.repo.FullName, "/")
	otherOwnerToken := tokenFor("someone-else")
	victimAsAttackerURLs := edit(victimEvent, func(m map[string]any) {
		r := m["repository"].(map[string]any)
		r["clone_url"], r["html_url"] = attacker.repo.CloneURL, strings.TrimSuffix(attacker.repo.CloneURL, ".git")
	})
	forgedAfter := edit(victimEvent, func(m map[string]any) { m["after"] = forged })
	attackerSHAInVictim := edit(victimEvent, func(m map[string]any) { m["after"] = attackerSHA })
	hugeBefore := edit(victimEvent, func(m map[string]any) { m["before"] = strings.Repeat("0", 250<<10) })
	forgedRef := edit(victimEvent, func(m map[string]any) { m["ref"], m["after"] = "refs/heads/forged", forged })
	noRepo := edit(victimEvent, func(m map[string]any) {
		m["repository"] = map[string]any{"full_name": owner + "/no-such-repository", "clone_url": e2e.gitea.URL + "/" + owner + "/no-such-repository.git"}
	})
	for _, tc := range []struct {
		name    string
		headers map[string]string
		body    []byte
		code    int
		errHas  string
	}{
		{"the attacker's token for the victim's push", withToken(attacker.token()), victimEvent, 403, "may not push for"},
		{"another owner's organization token", withToken(otherOwnerToken), victimEvent, 403, "may not push for"},
		{"the victim's name with the attacker's URLs", withToken(victim.token()), victimAsAttackerURLs, 400, "does not name"},
		{"a commit the victim does not have", withToken(victim.token()), forgedAfter, 403, "has no commit"},
		{"the attacker's commit claimed for the victim", signed(attackerSHAInVictim), attackerSHAInVictim, 403, "has no commit"},
		{"a reference the victim does not have", signed(forgedRef), forgedRef, 403, "has no commit"},
		{"a repository Gitea does not know", signed(noRepo), noRepo, 403, "no repository"},
		{"a before of 250 KiB", withToken(victim.token()), hugeBefore, 400, "before is not a commit id"},
		{"the hook key as a bearer", withToken(e2e.hookKey), victimEvent, 401, ""},
		{"the webhook key as a bearer", withToken(e2e.webhookKey), victimEvent, 401, ""},
		{"signed with the hook key", map[string]string{"X-Gitea-Signature": hmacHex(e2e.hookKey, victimEvent)}, victimEvent, 401, ""},
		{"a derived token of the webhook key", withToken(credentials.DeriveToken([]byte(e2e.webhookKey), mustRepoScope(victim.repo.FullName))), victimEvent, 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := send(t, clientFrom("127.0.98.1"), hostile{headers: tc.headers, body: tc.body})
			if got.code != tc.code || !strings.Contains(got.body, tc.errHas) {
				t.Fatalf("%d %s, want %d saying %q", got.code, got.body, tc.code, tc.errHas)
			}
		})
	}
	if after := victim.fluxState(t); !maps.Equal(before, after) {
		t.Fatalf("the victim's Flux objects changed:\nbefore %+v\nafter  %+v", before, after)
	}
	for _, sha := range []string{next, victimSHA, forged} {
		if all, _ := victim.repo.Statuses(t.Context(), sha); len(all) != 0 {
			t.Fatalf("statuses on the victim's %s: %d", sha[:12], len(all))
		}
	}
}

func mustRepoScope(fullName string) credentials.Scope {
	s, err := credentials.RepositoryScope(fullName)
	if err != nil {
		panic(err)
	}
	return s
}

// untilLimited sends failing requests until one is answered 429 (at most 45) and returns how
// many were answered 401 before it: the budget is 30, and one more every 2 s.
func untilLimited(t *testing.T, fail func(i int) int) int {
	t.Helper()
	for i := range 45 {
		switch code := fail(i); code {
		case http.StatusTooManyRequests:
			return i
		case http.StatusUnauthorized:
		default:
			t.Fatalf("failure %d answered %d", i+1, code)
		}
	}
	t.Fatal("45 failures and no 429")
	return 0
}

// Forty wrong Bearer tokens from one address (a stranger behind the same ingress as Gitea,
// say) spend the Bearer budget of that address only: a correctly signed delivery from it is
// served. Wrong signatures spend their own budget; over it they get 429, and a correct
// signature still passes.
func TestBearerGuessesNeverLockOutSignedDeliveries(t *testing.T) {
	integration(t)
	nobody, _ := unfollowedPush(t)
	shared := clientFrom("127.0.1.20")
	wrong := map[string]string{"Authorization": "Bearer not-the-token"}
	if n := untilLimited(t, func(int) int { return send(t, shared, hostile{headers: wrong, body: nobody}).code }); n < 30 {
		t.Fatalf("limited after %d wrong tokens", n)
	}
	for range 10 {
		send(t, shared, hostile{headers: wrong, body: nobody})
	}
	signed := map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, nobody), "X-Gitea-Event": "push"}
	if got := send(t, shared, hostile{headers: signed, body: nobody}); got.code != http.StatusOK || !strings.Contains(got.body, `"no-match"`) {
		t.Fatalf("a signed delivery after 40 wrong tokens from its address: %d %s", got.code, got.body)
	}
	badSig := map[string]string{"X-Gitea-Signature": hmacHex("not-the-webhook-key-0123456789abcdef", nobody)}
	if n := untilLimited(t, func(int) int { return send(t, shared, hostile{headers: badSig, body: nobody}).code }); n < 30 {
		t.Fatalf("limited after %d wrong signatures", n)
	}
	if got := send(t, shared, hostile{headers: signed, body: nobody}); got.code != http.StatusOK {
		t.Fatalf("a correct signature from an address over its budget of signatures: %d %s", got.code, got.body)
	}
}

// Behind a trusted proxy (--trusted-proxies) each client is the address the proxy wrote
// into X-Forwarded-For: one client's failures never lock out another behind the same proxy,
// what a client writes left of the proxy's entry is not read, and an IPv6 client is its /64,
// however it rotates its addresses. A peer that is no trusted proxy is itself, whatever
// X-Forwarded-For it sends.
func TestClientsBehindTheTrustedProxy(t *testing.T) {
	integration(t)
	nobody, token := unfollowedPush(t)
	proxy := clientFrom(trustedProxy)
	behind := func(client string, h map[string]string) map[string]string {
		out := map[string]string{"X-Forwarded-For": client}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	wrong := map[string]string{"Authorization": "Bearer not-the-token"}
	if n := untilLimited(t, func(int) int {
		return send(t, proxy, hostile{headers: behind("198.51.100.7", wrong), body: nobody}).code
	}); n < 30 {
		t.Fatalf("a client behind the proxy limited after %d failures", n)
	}
	// The same client, forging an entry of its own before the proxy's.
	if got := send(t, proxy, hostile{headers: behind("203.0.113.1, 198.51.100.7", wrong), body: nobody}); got.code != http.StatusTooManyRequests {
		t.Fatalf("a client prepending X-Forwarded-For: %d", got.code)
	}
	// Its neighbours behind the same proxy are not locked out.
	if got := send(t, proxy, hostile{headers: behind("198.51.100.8", wrong), body: nobody}); got.code != http.StatusUnauthorized {
		t.Fatalf("another client behind the same proxy: %d %s", got.code, got.body)
	}
	if got := send(t, proxy, hostile{headers: behind("198.51.100.7", map[string]string{"Authorization": "Bearer " + token}), body: nobody}); got.code != http.StatusOK {
		t.Fatalf("the right token from the limited client: %d %s", got.code, got.body)
	}
	// IPv6: the addresses of one /64 are one client, however many; another /64 is another.
	if n := untilLimited(t, func(i int) int {
		return send(t, proxy, hostile{headers: behind(fmt.Sprintf("2001:db8:51:7:%x:%x::%x", (i*7919)&0xffff, i, i+1), wrong), body: nobody}).code
	}); n < 30 || n > 32 {
		t.Fatalf("addresses of one /64 limited after %d failures", n)
	}
	if got := send(t, proxy, hostile{headers: behind("2001:db8:51:7:ffff:ffff:ffff:fffe", wrong), body: nobody}); got.code != http.StatusTooManyRequests {
		t.Fatalf("yet another address of the /64: %d", got.code)
	}
	if got := send(t, proxy, hostile{headers: behind("2001:db8:51:8::1", wrong), body: nobody}); got.code != http.StatusUnauthorized {
		t.Fatalf("another /64: %d", got.code)
	}
	// An untrusted peer naming a new client each time is still one client.
	other := clientFrom("127.0.1.21")
	if n := untilLimited(t, func(i int) int {
		return send(t, other, hostile{headers: behind(fmt.Sprintf("192.0.2.%d", i+1), wrong), body: nobody}).code
	}); n > 32 {
		t.Fatalf("an untrusted peer rotating X-Forwarded-For limited after %d failures", n)
	}
	// The log names the client the proxy named, never one an untrusted peer claimed.
	found := false
	for _, l := range logLines(t) {
		if l["msg"] == "request" && l["remote"] == "198.51.100.8" {
			found = true
		}
		if l["msg"] == "request" && l["remote"] == "192.0.2.5" {
			t.Fatalf("logged the address an untrusted peer claimed: %v", l)
		}
	}
	if !found {
		t.Fatal("no request logged with the client behind the proxy")
	}
}

// Sixty-four strangers announcing 1 MiB under a made-up signature, from 16 addresses, each
// sending a byte a second, hold next to none of the bodies' budget: Bearer and signed
// deliveries among them are all served (how fast: benchmarks/README.md).
func TestSlowSignedReadsLeaveRoom(t *testing.T) {
	integration(t)
	event, token := unfollowedPush(t)
	addr := strings.TrimPrefix(e2e.hookURL, "http://")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := range 64 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.96.%d", i/4+1))}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Gitea-Signature: %s\r\nContent-Length: %d\r\n\r\n{", strings.Repeat("0", 64), 1<<20)
		wg.Go(func() {
			defer c.Close()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	for i := range 20 {
		h := map[string]string{"Authorization": "Bearer " + token}
		if i%2 == 1 {
			h = map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, event), "X-Gitea-Event": "push"}
		}
		if got := send(t, clientFrom("127.0.99.2"), hostile{headers: h, body: event}); got.code != http.StatusOK {
			t.Fatalf("delivery %d among 64 slow signed reads: %d %s", i, got.code, got.body)
		}
	}
}

// A repository renamed in Gitea answers its old name with its new one: a token of the old
// name, and a push naming it, are told neither the new name nor anything of it, in the
// answer or in the service's log.
func TestRenamedRepositoryKeepsItsNewName(t *testing.T) {
	integration(t)
	ctx := t.Context()
	old := "before-rename-" + randomSuffix()
	repo, err := e2e.gitea.CreateRepo(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.WriteFile("README.md", "renamed soon\n"); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.Commit(ctx, "first")
	if err == nil {
		err = repo.Push(ctx, "main")
	}
	if err != nil {
		t.Fatal(err)
	}
	event := (&app{branch: "main", repo: repo}).pushEvent(sha)
	token := tokenFor(repo.FullName)
	secret := "moved-away-" + randomSuffix()
	c, err := e2e.gitea.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.EditRepo(repo.Owner, old, gitea.EditRepoOption{Name: &secret}); err != nil {
		t.Fatal(err)
	}
	// Gitea does follow the old name to the new one.
	if r, _, err := c.GetRepo(repo.Owner, old); err != nil || !strings.EqualFold(r.Name, secret) {
		t.Fatalf("gitea does not redirect the old name: %v %v", r, err)
	}
	for _, tc := range []struct {
		name string
		h    hostile
		code int
	}{
		{"its push event, with the old name's token", hostile{headers: map[string]string{"Authorization": "Bearer " + token}, body: event}, http.StatusForbidden},
		{"its push event, signed", hostile{headers: map[string]string{"X-Gitea-Signature": hmacHex(e2e.webhookKey, event)}, body: event}, http.StatusForbidden},
		{"the short form of the old name", hostile{path: "/hook/" + repo.FullName, headers: map[string]string{"Authorization": "Bearer " + token}}, http.StatusNotFound},
		{"the short form and a commit", hostile{path: "/hook/" + repo.FullName + "/main?sha=" + sha, headers: map[string]string{"Authorization": "Bearer " + token}}, http.StatusNotFound},
		{"the short form with a stream", hostile{path: "/hook/" + repo.FullName + "?wait=true", headers: map[string]string{"Authorization": "Bearer " + token}}, http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := send(t, clientFrom("127.0.1.22"), tc.h)
			if got.code != tc.code || !strings.Contains(got.body, "no repository "+repo.FullName) {
				t.Fatalf("%d %s, want %d saying Gitea has no repository by that name", got.code, got.body, tc.code)
			}
			if strings.Contains(strings.ToLower(got.body+got.header), strings.ToLower(secret)) {
				t.Fatalf("the answer names the new name: %s %s", got.header, got.body)
			}
		})
	}
	b, err := os.ReadFile(e2e.service.Log)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(string(b)), strings.ToLower(secret)) {
		t.Fatal("the service's log names the new name")
	}
}
