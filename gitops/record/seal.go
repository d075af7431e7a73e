package record

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// MACAnnotation holds the MAC of the request record (Annotation) under flux-webhook's record
// key: whoever can write a Flux object (a tenant is cluster-admin in its vcluster) can write
// annotations, and only a record flux-webhook wrote may make it post a status. The MAC binds
// the record to the object it is on, so a record copied from another object is no record
// either.
const MACAnnotation = "flux-webhook.openova.io/request-mac"

// ErrNoKey: the record key Secret gives no usable key; nothing can be recorded.
var ErrNoKey = errors.New("no record key")

// Reasons a record is rejected (the label of flux_webhook_records_rejected_total).
const (
	RejectedMAC        = "mac"        // missing, or not made with any valid record key
	RejectedMalformed  = "malformed"  // authentic, but not a record this version reads
	RejectedRepository = "repository" // names another repository than the object's source
	RejectedStale      = "stale"      // older than a record already seen on the object: put back
)

// RejectedReasons lists every reason.
var RejectedReasons = []string{RejectedMAC, RejectedMalformed, RejectedRepository, RejectedStale}

// RejectedError says why a record is not acted on.
type RejectedError struct{ Reason, Detail string }

func (e *RejectedError) Error() string {
	return fmt.Sprintf("record rejected: %s: %s", e.Reason, e.Detail)
}

// ID is what a record's MAC binds it to: the object's cluster, kind, namespace, name and UID.
func ID(cluster, kind, namespace, name, uid string) string {
	return strings.Join([]string{cluster, kind, namespace, name, uid}, "\x00")
}

func mac(key []byte, id, value string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("flux-webhook record v1\x00" + id + "\x00" + value))
	return h.Sum(nil)
}

// Open returns the record in ann, the annotations of the object id names, when one of keys
// made its MAC: a missing record is empty; one no key made, or that does not parse, is a
// *RejectedError.
func Open(keys [][]byte, id string, ann map[string]string) (Record, error) {
	v, ok := ann[Annotation]
	if !ok || v == "" {
		return Record{}, nil
	}
	given, err := base64.RawURLEncoding.DecodeString(ann[MACAnnotation])
	if err != nil || len(given) != sha256.Size {
		return Record{}, &RejectedError{RejectedMAC, "no valid " + MACAnnotation}
	}
	valid := false
	for _, key := range keys {
		valid = hmac.Equal(mac(key, id, v), given) || valid
	}
	if !valid {
		return Record{}, &RejectedError{RejectedMAC, "not made with the record key"}
	}
	rec, err := Parse(ann)
	if err != nil {
		return Record{}, &RejectedError{RejectedMalformed, err.Error()}
	}
	return rec, nil
}

// SealedWith reports whether the record in ann, the annotations of the object id names, was
// sealed with key: after a rotation of the record key, records sealed with the previous key
// are sealed again with the current one before the previous stops opening them.
func SealedWith(key []byte, id string, ann map[string]string) bool {
	given, err := base64.RawURLEncoding.DecodeString(ann[MACAnnotation])
	return key != nil && err == nil && hmac.Equal(mac(key, id, ann[Annotation]), given)
}

// Seal writes rec and its MAC under key into ann, the annotations of the object id names.
func Seal(key []byte, id string, ann map[string]string, rec Record) error {
	if key == nil {
		return ErrNoKey
	}
	v := rec.Encode()
	ann[Annotation] = v
	ann[MACAnnotation] = base64.RawURLEncoding.EncodeToString(mac(key, id, v))
	return nil
}
