package gitea

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

func hmacHex(key string, body []byte) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func TestVerifySignature(t *testing.T) {
	const key, old = "webhook-key-0123456789abcdef0123456789", "old-webhook-key-0123456789abcdef012345"
	payload := []byte(`{"ref":"refs/heads/main"}`)
	form := []byte("payload=" + url.QueryEscape(string(payload)))
	jsonCT, formCT := "application/json", "application/x-www-form-urlencoded; charset=utf-8"
	tests := []struct {
		name    string
		ct      string
		body    []byte
		headers map[string]string
		keys    []string
		ok      bool
	}{
		{"json, gitea signature", jsonCT, payload, map[string]string{HeaderGiteaSignature: hmacHex(key, payload)}, []string{key}, true},
		{"json, hub signature", jsonCT, payload, map[string]string{HeaderHubSignature: "sha256=" + hmacHex(key, payload)}, []string{key}, true},
		{"json, hub signature without prefix", jsonCT, payload, map[string]string{HeaderHubSignature: hmacHex(key, payload)}, []string{key}, true},
		{"json, signed with the previous key during its grace", jsonCT, payload, map[string]string{HeaderGiteaSignature: hmacHex(old, payload)}, []string{key, old}, true},
		{"form, signed over the JSON payload as Gitea does", formCT, form, map[string]string{HeaderGiteaSignature: hmacHex(key, payload)}, []string{key}, true},
		{"form, signed over the form body", formCT, form, map[string]string{HeaderGiteaSignature: hmacHex(key, form)}, []string{key}, false},
		{"json body, signature of its form encoding", jsonCT, payload, map[string]string{HeaderGiteaSignature: hmacHex(key, form)}, []string{key}, false},
		{"form with two payloads", formCT, append(append(form, '&'), form...), map[string]string{HeaderGiteaSignature: hmacHex(key, payload)}, []string{key}, false},
		{"another key", jsonCT, payload, map[string]string{HeaderGiteaSignature: hmacHex(old, payload)}, []string{key}, false},
		{"no key configured", jsonCT, payload, map[string]string{HeaderGiteaSignature: hmacHex("", payload)}, nil, false},
		{"not hex", jsonCT, payload, map[string]string{HeaderGiteaSignature: "zz"}, []string{key}, false},
		{"truncated", jsonCT, payload, map[string]string{HeaderGiteaSignature: hmacHex(key, payload)[:62]}, []string{key}, false},
		{"sha1 hub signature", jsonCT, payload, map[string]string{HeaderHubSignature: "sha1=" + hmacHex(key, payload)}, []string{key}, false},
		{"no signature", jsonCT, payload, nil, []string{key}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.headers {
				h.Set(k, v)
			}
			var keys [][]byte
			for _, k := range tt.keys {
				keys = append(keys, []byte(k))
			}
			p, err := VerifySignature(h, tt.ct, tt.body, keys)
			if tt.ok && (err != nil || p.Kind != credentials.Webhook) {
				t.Fatalf("refused: %+v %v", p, err)
			}
			if !tt.ok && !errors.Is(err, credentials.ErrUnauthorized) {
				t.Fatalf("got %v, want ErrUnauthorized", err)
			}
		})
	}
}
