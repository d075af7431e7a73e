package cluster

import (
	"context"
	"crypto/sha256"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

var recordsRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_records_rejected_total",
	Help: "Request records on Flux objects not acted on, by cluster and reason: mac (not written by flux-webhook, or altered), malformed, repository (not the object's source).",
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
// it (record.Open); a *record.RejectedError otherwise.
func (c *Cluster) OpenRecord(kind string, m metav1.Object) (record.Record, error) {
	return record.Open(c.keys.Values(credentials.RecordKey), c.recordID(kind, m), m.GetAnnotations())
}

// SealRecord writes rec onto m, an object of kind, sealed with the current record key.
func (c *Cluster) SealRecord(kind string, m metav1.Object, rec record.Record) error {
	ann := m.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	if err := record.Seal(c.keys.Current(credentials.RecordKey), c.recordID(kind, m), ann, rec); err != nil {
		return err
	}
	m.SetAnnotations(ann)
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
		"request record not acted on (%s): flux-webhook did not write it, or it names another repository", rej.Reason)
}
