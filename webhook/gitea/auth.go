package gitea

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"mime"
	"net/http"
	"strings"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

// Headers a native Gitea webhook is signed with: both carry the hex HMAC-SHA256 of the JSON
// payload under the webhook's secret.
const (
	HeaderGiteaSignature = "X-Gitea-Signature"   // hex
	HeaderHubSignature   = "X-Hub-Signature-256" // "sha256=" + hex
)

// Signed reports whether a request carries a webhook signature header: only such a request
// is read before it is authenticated (the signature covers the body).
func Signed(h http.Header) bool {
	return h.Get(HeaderGiteaSignature) != "" || h.Get(HeaderHubSignature) != ""
}

// VerifySignature checks a native Gitea webhook's signature against each of keys (the
// webhook key, and during a rotation the one it replaced) in constant time. Gitea signs the
// JSON payload: for a delivery of content type form that is the decoded value of its
// "payload" field, not the body itself. It returns credentials.ErrUnauthorized unless a
// signature header holds the MAC under one of the keys.
func VerifySignature(h http.Header, contentType string, body []byte, keys [][]byte) (credentials.Principal, error) {
	signed := body
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && mt == "application/x-www-form-urlencoded" {
		p, err := formPayload(body)
		if err != nil {
			return credentials.Principal{}, credentials.ErrUnauthorized
		}
		signed = p
	}
	ok := false
	for _, sig := range []string{h.Get(HeaderGiteaSignature), strings.TrimPrefix(h.Get(HeaderHubSignature), "sha256=")} {
		want, err := hex.DecodeString(sig)
		if sig == "" || err != nil || len(want) != sha256.Size {
			continue
		}
		for _, k := range keys {
			m := hmac.New(sha256.New, k)
			m.Write(signed)
			ok = hmac.Equal(m.Sum(nil), want) || ok
		}
	}
	if !ok {
		return credentials.Principal{}, credentials.ErrUnauthorized
	}
	return credentials.Principal{Kind: credentials.Webhook}, nil
}
