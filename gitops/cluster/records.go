package cluster

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

var recordsRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_records_rejected_total",
	Help: "Request records on Flux objects not acted on, by cluster and reason: mac (not written by flux-webhook, or altered), malformed, repository (not the object's source), stale (older than one already seen on the object: put back).",
}, []string{"cluster", "reason"})

func init() { metrics.Registry.MustRegister(recordsRejected) }

// initMetrics makes a cluster's counters that alerts rate() start at 0, not absent.
func initMetrics(cluster string) {
	for _, reason := range record.RejectedReasons {
		recordsRejected.WithLabelValues(cluster, reason)
	}
}

// recordID is what the MAC of a record on m, an object of kind, binds it to.
func (c *Cluster) recordID(kind string, m metav1.Object) string {
	return record.ID(c.Name, kind, m.GetNamespace(), m.GetName(), string(m.GetUID()))
}

// OpenRecord returns the request record on m, an object of kind, when flux-webhook wrote
// it (record.Open) and no newer record was seen on the object since (Witness); a
// *record.RejectedError otherwise: RejectedStale for an older record at a newer version of
// the object, which someone put back. An older record at a version that is not newer is a
// view behind one already seen (a cache lagging behind a write): returned as it is.
func (c *Cluster) OpenRecord(kind string, m metav1.Object) (record.Record, error) {
	rec, err := record.Open(c.keys.Values(credentials.RecordKey), c.recordID(kind, m), m.GetAnnotations())
	if err != nil || m.GetAnnotations()[record.Annotation] == "" {
		return rec, err
	}
	if c.older(kind, m, rec) {
		return record.Record{}, &record.RejectedError{Reason: record.RejectedStale,
			Detail: "older than the record already seen on the object: put back by someone"}
	}
	c.witness(kind, m, rec)
	return rec, nil
}

// sealMark is the newest record seen on an object: when it was sealed, and the first version
// of the object seen carrying it.
type sealMark struct {
	sealed time.Time
	rv     string
}

// markOf returns the mark of the object m is, if any.
func (c *Cluster) markOf(kind string, m metav1.Object) (sealMark, bool) {
	v, ok := c.seals.Get(sha256.Sum256([]byte(c.recordID(kind, m))))
	if !ok {
		return sealMark{}, false
	}
	return v.(sealMark), true
}

// older reports whether rec, on m, was sealed before a record already seen on the object
// while m is a later version of it than the one that carried that record: only a write of an
// old record makes that. Resource versions compare as Kubernetes defines them (etcd's
// revisions); one that does not parse compares as not newer.
func (c *Cluster) older(kind string, m metav1.Object, rec record.Record) bool {
	mark, ok := c.markOf(kind, m)
	if !ok || !rec.Sealed.Before(mark.sealed) {
		return false
	}
	cmp, err := resourceversion.CompareResourceVersion(m.GetResourceVersion(), mark.rv)
	return err == nil && cmp > 0
}

// witness remembers rec, on m, as the newest record of the object if it is.
func (c *Cluster) witness(kind string, m metav1.Object, rec record.Record) {
	key := sha256.Sum256([]byte(c.recordID(kind, m)))
	c.sealsMu.Lock()
	defer c.sealsMu.Unlock()
	mark, ok := c.markOf(kind, m)
	switch {
	case !ok || mark.sealed.Before(rec.Sealed):
		c.seals.Add(key, sealMark{sealed: rec.Sealed, rv: m.GetResourceVersion()})
	case mark.sealed.Equal(rec.Sealed):
		// The same record at an earlier version than the one first seen (a cache catching up
		// with a write read from the API server): the earliest version counts.
		if cmp, err := resourceversion.CompareResourceVersion(m.GetResourceVersion(), mark.rv); err == nil && cmp < 0 {
			c.seals.Add(key, sealMark{sealed: rec.Sealed, rv: m.GetResourceVersion()})
		}
	}
}

// Witness remembers the record on o, an object of kind as a cache sees it, when flux-webhook
// wrote it: every replica does, as its caches see each change (report.Witnesses), so the one
// that takes the lead knows an old record put back for what it is.
func (c *Cluster) Witness(kind string, o metav1.Object) {
	if o.GetAnnotations()[record.Annotation] == "" {
		return
	}
	rec, err := record.Open(c.keys.Values(credentials.RecordKey), c.recordID(kind, o), o.GetAnnotations())
	if err == nil && !c.older(kind, o, rec) {
		c.witness(kind, o, rec)
	}
}

// SealedWithCurrentKey reports whether the record on m, an object of kind, was sealed with
// the current record key (record.SealedWith).
func (c *Cluster) SealedWithCurrentKey(kind string, m metav1.Object) bool {
	return record.SealedWith(c.keys.Current(credentials.RecordKey), c.recordID(kind, m), m.GetAnnotations())
}

// RecordKeyID identifies the current record key (a digest of it, "" for none): it changes
// when the key rotates.
func (c *Cluster) RecordKeyID() string {
	k := c.keys.Current(credentials.RecordKey)
	if k == nil {
		return ""
	}
	sum := sha256.Sum256(k)
	return string(sum[:])
}

// SealRecord writes rec onto m, an object of kind, sealed with the current record key, and
// stamped later than any record seen on the object (record.Record.Stamp).
func (c *Cluster) SealRecord(kind string, m metav1.Object, rec record.Record) error {
	ann := m.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	mark, _ := c.markOf(kind, m)
	rec.Stamp(mark.sealed, time.Now())
	if err := record.Seal(c.keys.Current(credentials.RecordKey), c.recordID(kind, m), ann, rec); err != nil {
		return err
	}
	m.SetAnnotations(ann)
	return nil
}

// Retire seals the record on o, an object of kind, again with every request in it final
// and nothing left to report, when it is an old record put back (RejectedStale): nothing in
// it is reported, by this replica or by one that never saw the newer record. The requests
// of the newer record it replaced, if any were pending, are lost with it: only the object's
// writer could remove it, and only its own statuses go with it.
func (c *Cluster) Retire(ctx context.Context, kind string, o client.Object) error {
	m, err := c.PatchMetadata(ctx, Bookkeeping, o, nil, func(m *metav1.PartialObjectMetadata) error {
		rec, err := record.Open(c.keys.Values(credentials.RecordKey), c.recordID(kind, m), m.Annotations)
		if err != nil || !c.older(kind, m, rec) {
			return ErrNoChange // not (or no longer) the old record: nothing of ours to retire
		}
		if q := rec.Current; q != nil && !q.Final {
			q.Final, q.Lost, q.Intent, q.PatchAt = true, true, nil, nil
		}
		rec.Superseded = nil
		return c.SealRecord(kind, m, rec)
	})
	if err != nil {
		return err
	}
	if m != nil {
		if rec, err := record.Open(c.keys.Values(credentials.RecordKey), c.recordID(kind, m), m.Annotations); err == nil {
			c.witness(kind, m, rec)
		}
		log.FromContext(ctx).Info("old request record retired", "cluster", c.Name, "kind", kind, "namespace", o.GetNamespace(), "name", o.GetName())
	}
	return nil
}

// ReadRecord returns the record on o, an object of the cluster's cache, when flux-webhook
// can act on it; a rejected record reads as empty, after being counted, logged once, and
// recorded as an Event on the object.
func (c *Cluster) ReadRecord(ctx context.Context, o client.Object) record.Record {
	kind := flux.KindOf(o)
	rec, err := c.OpenRecord(kind, o)
	if err != nil {
		c.Rejected(ctx, kind, o, err)
		return record.Record{}
	}
	return rec
}

// Rejected counts, logs and records a rejected record on o, an object of kind, once per
// object and record value.
func (c *Cluster) Rejected(ctx context.Context, kind string, o client.Object, err error) {
	var rej *record.RejectedError
	if !errors.As(err, &rej) {
		return
	}
	ann := o.GetAnnotations()
	seen := sha256.Sum256([]byte(c.recordID(kind, o) + "\x00" + rej.Reason + "\x00" + ann[record.Annotation] + "\x00" + ann[record.MACAnnotation]))
	if _, ok := c.rejections.Get(seen); ok {
		return
	}
	c.rejections.Add(seen, struct{}{})
	recordsRejected.WithLabelValues(c.Name, rej.Reason).Inc()
	log.FromContext(ctx).Error(err, "request record not acted on", "cluster", c.Name, "kind", kind,
		"namespace", o.GetNamespace(), "name", o.GetName(), "reason", rej.Reason)
	c.events.Eventf(o, nil, corev1.EventTypeWarning, "RecordRejected", "ReportResult",
		"request record not acted on (%s): flux-webhook did not write it, it names another repository, or it is an older one put back", rej.Reason)
}
