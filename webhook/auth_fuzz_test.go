package webhook

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
)

// Tokens.Authenticate over arbitrary headers and bodies never accepts a request that does
// not carry the token: as the bearer, or as an HMAC of that very body under it. And the
// token, presented correctly, is always accepted.
func FuzzAuthenticate(f *testing.F) {
	body := []byte(`{"ref":"refs/heads/main"}`)
	f.Add("s3cret", "Authorization: Bearer s3cret\r\n", body)
	f.Add("s3cret", "X-Gitea-Signature: "+sign("s3cret", body)+"\r\n", body)
	f.Add("s3cret", "X-Hub-Signature-256: sha256="+sign("s3cret", body)+"\r\n", body)
	f.Add("s3cret", "X-Gitea-Signature: "+sign("s3cret", []byte("other"))+"\r\n", body)
	f.Add("s3cret", "Authorization: Basic czNjcmV0Og==\r\nAuthorization: Bearer s3cret\r\n", body)
	f.Add(" s3cret\n", "Authorization: bearer   s3cret  \r\n", body)
	f.Add("", "Authorization: Bearer \r\n", []byte{})
	f.Add("\t", "X-Gitea-Signature: "+sign("", body)+"\r\n", body)
	f.Add("s3cret", "X-Hub-Signature-256: sha256="+strings.ToUpper(sign("s3cret", body))+"\r\n", body)
	f.Fuzz(func(t *testing.T, token, rawHeaders string, body []byte) {
		tokens := &Tokens{}
		tokens.Set(token)
		key := strings.TrimSpace(token)
		h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(rawHeaders + "\r\n\r\n"))).ReadMIMEHeader()
		if err != nil {
			h = textproto.MIMEHeader{}
		}
		header := http.Header(h)
		accepted := accepts(tokens, header, body)

		mac := hmac.New(sha256.New, []byte(key))
		mac.Write(body)
		want := mac.Sum(nil)
		bearer, hasBearer := bearerToken(header)
		sigOK := func(s string) bool {
			got, err := hex.DecodeString(s)
			return err == nil && hmac.Equal(got, want)
		}
		carries := key != "" && (hasBearer && bearer == key ||
			sigOK(header.Get(HeaderGiteaSignature)) || sigOK(strings.TrimPrefix(header.Get(HeaderHubSignature), "sha256=")))
		if accepted && !carries {
			t.Fatalf("accepted without the token %q: headers %q, body %q", key, rawHeaders, body)
		}
		if !accepted && carries {
			t.Fatalf("refused the token %q: headers %q", key, rawHeaders)
		}
		// The right bearer is accepted whatever else the request carries.
		if key != "" && !strings.ContainsAny(key, "\r\n") {
			header.Set("Authorization", "Bearer "+key)
			if !accepts(tokens, header, body) {
				t.Fatalf("refused the bearer %q with headers %q", key, rawHeaders)
			}
			header.Del("Authorization")
			header.Set(HeaderGiteaSignature, hex.EncodeToString(want))
			if !accepts(tokens, header, body) || !bytes.Equal(want, mustHex(t, header.Get(HeaderGiteaSignature))) {
				t.Fatalf("refused the signature of %q with headers %q", key, rawHeaders)
			}
		}
	})
}

// accepts reports whether t accepts the request.
func accepts(t *Tokens, h http.Header, body []byte) bool { return t.Authenticate(h, body) == nil }

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
