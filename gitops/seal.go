package gitops

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

// RecordMACAnnotation holds the MAC of the request record (RecordAnnotation) under
// flux-webhook's record key: whoever can write a Flux object (a tenant is cluster-admin in
// its vcluster) can write annotations, and only a record flux-webhook wrote may make it post
// a status. The MAC binds the record to the object it is on (cluster, kind, namespace,
// name, UID), so a record copied from another object is no record either.
const RecordMACAnnotation = "flux-webhook.openova.io/request-mac"

// Keys holds the record key: the current value seals, every valid one (the previous one
// during a rotation) opens.
type Keys interface {
	Current(p credentials.Purpose) []byte
	Values(p credentials.Purpose) [][]byte
}

var (
	// ErrNoRecordKey: the record key Secret gives no usable key; nothing can be recorded.
	ErrNoRecordKey = errors.New("no record key")
	// errRejected wraps why a record is not acted on.
	errRejected = errors.New("record rejected")
)

// Reasons a record is rejected, the label of flux_webhook_records_rejected_total.
const (
	RejectedMAC        = "mac"        // missing, or not made with any valid record key
	RejectedMalformed  = "malformed"  // authentic, but not a record this version reads
	RejectedRepository = "repository" // names another repository than the object's source
)

var recordsRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_records_rejected_total",
	Help: "Request records on Flux objects not acted on, by cluster and reason: mac (not written by flux-webhook, or altered), malformed, repository (not the object's source).",
}, []string{"cluster", "reason"})

func init() { metrics.Registry.MustRegister(recordsRejected) }

// RejectedError says why a record was not acted on.
type RejectedError struct{ Reason, Detail string }

func (e *RejectedError) Error() string {
	return fmt.Sprintf("%s: %s: %s", errRejected, e.Reason, e.Detail)
}
func (e *RejectedError) Unwrap() error { return errRejected }

// recordID is what a record's MAC binds it to.
func (c *Cluster) recordID(kind string, m metav1.Object) string {
	return strings.Join([]string{c.Name, kind, m.GetNamespace(), m.GetName(), string(m.GetUID())}, "\x00")
}

func recordMAC(key []byte, id, value string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("flux-webhook record v1\x00" + id + "\x00" + value))
	return h.Sum(nil)
}

// openRecord returns the record on m, an object of kind, if flux-webhook wrote it: a
// missing record is empty; one whose MAC does not verify under any valid record key, or
// that does not parse, is a *RejectedError.
func (c *Cluster) openRecord(kind string, m metav1.Object) (Record, error) {
	ann := m.GetAnnotations()
	v, ok := ann[RecordAnnotation]
	if !ok || v == "" {
		return Record{}, nil
	}
	given, err := base64.RawURLEncoding.DecodeString(ann[RecordMACAnnotation])
	if err != nil || len(given) != sha256.Size {
		return Record{}, &RejectedError{RejectedMAC, "no valid " + RecordMACAnnotation}
	}
	id, valid := c.recordID(kind, m), false
	for _, key := range c.keys.Values(credentials.RecordKey) {
		valid = hmac.Equal(recordMAC(key, id, v), given) || valid
	}
	if !valid {
		return Record{}, &RejectedError{RejectedMAC, "not made with the record key"}
	}
	rec, err := ParseRecord(ann)
	if err != nil {
		return Record{}, &RejectedError{RejectedMalformed, err.Error()}
	}
	return rec, nil
}

// sealRecord writes rec and its MAC under the current record key onto m, an object of kind.
func (c *Cluster) sealRecord(kind string, m metav1.Object, rec Record) error {
	key := c.keys.Current(credentials.RecordKey)
	if key == nil {
		return ErrNoRecordKey
	}
	v := rec.Encode()
	ann := m.GetAnnotations()
	ann[RecordAnnotation] = v
	ann[RecordMACAnnotation] = base64.RawURLEncoding.EncodeToString(recordMAC(key, c.recordID(kind, m), v))
	m.SetAnnotations(ann)
	return nil
}

// readRecord returns the record on o, an object of its cluster's cache, when flux-webhook
// can act on it; a rejected record reads as empty, after being counted, logged once, and
// recorded as an Event on the object.
func (c *Cluster) readRecord(ctx context.Context, o client.Object) Record {
	rec, err := c.openRecord(kindOf(o), o)
	if err != nil {
		c.rejected(ctx, kindOf(o), o, err)
		return Record{}
	}
	return rec
}

// rejected counts, logs and records a rejected record on o, an object of kind, once per
// object and record value.
func (c *Cluster) rejected(ctx context.Context, kind string, o client.Object, err error) {
	var rej *RejectedError
	if !errors.As(err, &rej) {
		return
	}
	seen := sha256.Sum256([]byte(c.recordID(kind, o) + "\x00" + rej.Reason + "\x00" +
		o.GetAnnotations()[RecordAnnotation] + "\x00" + o.GetAnnotations()[RecordMACAnnotation]))
	if _, ok := c.rejections.Get(seen); ok {
		return
	}
	c.rejections.Add(seen, struct{}{})
	recordsRejected.WithLabelValues(c.Name, rej.Reason).Inc()
	log.FromContext(ctx).Error(err, "request record not acted on", "cluster", c.Name, "kind", kind,
		"namespace", o.GetNamespace(), "name", o.GetName(), "reason", rej.Reason)
	c.events.Eventf(o, nil, corev1.EventTypeWarning, "RecordRejected", "ReportResult",
		"request record not acted on (%s): flux-webhook did not write it, or it names another repository", rej.Reason)
}
