package cluster

import (
	"encoding/json"
	"maps"
	"slices"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/record"
)

// What a cache keeps of a Flux object, whatever its writer put into it: a tenant is
// cluster-admin in its vcluster and writes its Flux objects' metadata, spec and status. The
// cost of one object in memory is bounded by these, not by what the API server accepts
// (256 KiB of annotations, labels without a count limit, 1.5 MiB of object in etcd).
const (
	// maxRequestedAtBytes bounds the requestedAt value kept: an RFC 3339 time as the flux
	// CLI and flux-webhook write it (about 35 bytes). A longer one is kept as its first bytes,
	// which no request of flux-webhook's then matches.
	maxRequestedAtBytes = 128
	// maxRecordAnnotationBytes bounds the request record kept: a record is at most 8 KiB
	// (gitops/record), twice that leaves room; a longer value is no record flux-webhook
	// wrote, and is kept as a short value that fails to open (rejected, counted and recorded).
	maxRecordAnnotationBytes = 16 << 10
	// maxMACAnnotationBytes bounds the record's MAC kept: an HMAC-SHA256 in unpadded base64
	// takes 43 bytes; a longer value fails to verify whole or cut.
	maxMACAnnotationBytes = 64
	// maxLabelBytes bounds the labels kept (keys and values together), taken in key order:
	// platform jobs select by label, and a Flux object carries a handful (its Kustomization's,
	// app.kubernetes.io/*: a few hundred bytes). Beyond it the rest are dropped, and a job's
	// label selector may not match the object.
	maxLabelBytes = 4 << 10
	// maxCachedObjectBytes bounds an object as the cache keeps it (its JSON once slimmed and
	// bounded as above): a Kustomization of a region with a long status message takes about
	// 2 KiB. A larger one keeps only its metadata: flux-webhook then matches nothing through
	// it (no URL, no source), and a request on it times out as an error. With the bounds
	// above, what one object can cost is about 21 KiB of JSON whatever its writer put in
	// (its labels, its record, names), against 300 KiB and more the API server accepts.
	maxCachedObjectBytes = 16 << 10
	// strippedLogged bounds the objects whose stripping was logged: once per object and
	// version of the cache.
	strippedLogged = 1024
)

// keptAnnotations are the annotations flux-webhook reads from a cached Flux object: the
// requestedAt it sets (and that judging compares with Flux's lastHandledReconcileAt), and
// the sealed request record with its MAC. Every other annotation is dropped before the
// object is kept.
var keptAnnotations = map[string]int{
	meta.ReconcileRequestAnnotation: maxRequestedAtBytes,
	record.Annotation:               maxRecordAnnotationBytes,
	record.MACAnnotation:            maxMACAnnotationBytes,
}

var cacheStripped = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_cache_stripped_total",
	Help: "Flux objects (versions of them, as the cache received them) kept with less than their writer put in: labels over the label budget (labels), annotations longer than flux-webhook reads (annotations), or an object larger than the cache keeps, of which only the metadata is kept (object).",
}, []string{"cluster", "reason"})

func init() { metrics.Registry.MustRegister(cacheStripped) }

// Reasons of flux_webhook_cache_stripped_total.
const (
	strippedLabels      = "labels"
	strippedAnnotations = "annotations"
	strippedObject      = "object"
)

// CacheOptions are the cache options of a cluster's Flux objects: each object slimmed to
// what flux-webhook reads, within the bounds above, before the cache keeps it, and a
// read of a kind the cache does not serve is an error, not a new cluster-wide watch.
func CacheOptions(cluster string) cache.Options {
	b := bounds{cluster: cluster, logged: lru.New(strippedLogged)}
	for _, r := range []string{strippedLabels, strippedAnnotations, strippedObject} {
		cacheStripped.WithLabelValues(cluster, r) // 0, not absent, for alerts
	}
	return cache.Options{DefaultTransform: b.transform, ReaderFailOnMissingInformer: true}
}

// bounds is the transform of one cluster's caches.
type bounds struct {
	cluster string
	logged  *lru.Cache // of objectVersion
}

type objectVersion struct {
	uid types.UID
	rv  string
}

func (b bounds) transform(in any) (any, error) {
	out, err := flux.CacheTransform(in)
	if err != nil {
		return out, err
	}
	o, ok := out.(client.Object)
	if !ok {
		return out, nil
	}
	var reasons []string
	if boundMetadata(o) {
		reasons = append(reasons, strippedAnnotations)
	}
	if boundLabels(o) {
		reasons = append(reasons, strippedLabels)
	}
	if stripped, ok := boundObject(o); ok {
		o = stripped
		reasons = append(reasons, strippedObject)
	}
	exactConditions(o)
	shared.share(o)
	for _, r := range reasons {
		cacheStripped.WithLabelValues(b.cluster, r).Inc()
	}
	if len(reasons) > 0 {
		v := objectVersion{o.GetUID(), o.GetResourceVersion()}
		if _, seen := b.logged.Get(v); !seen {
			b.logged.Add(v, struct{}{})
			log.Log.WithName("cache").Info("flux object kept with less than its writer put in", "cluster", b.cluster,
				"kind", flux.KindOf(o), "namespace", o.GetNamespace(), "name", o.GetName(), "what", reasons)
		}
	}
	return o, nil
}

// boundMetadata keeps, of o's metadata, only what flux-webhook reads: the annotations of
// keptAnnotations, each within its bound (a longer value is cut to a short one that reads as
// nothing flux-webhook wrote), no owner references, finalizers or generated-name prefix. It
// reports whether an annotation flux-webhook reads was cut.
func boundMetadata(o client.Object) (cut bool) {
	o.SetOwnerReferences(nil)
	o.SetFinalizers(nil)
	o.SetGenerateName("")
	ann := o.GetAnnotations()
	if len(ann) == 0 {
		return false
	}
	var kept map[string]string
	for k, max := range keptAnnotations {
		v, ok := ann[k]
		if !ok {
			continue
		}
		if len(v) > max {
			// Not a value flux-webhook wrote: kept as its start, which fails to parse or
			// to verify, so that it is rejected as any altered record is.
			v, cut = v[:min(len(v), 64)]+"…", true
		}
		if kept == nil {
			kept = make(map[string]string, len(keptAnnotations))
		}
		kept[k] = v
	}
	o.SetAnnotations(kept)
	return cut
}

// exactConditions keeps o's conditions (those judging reads: flux.CacheTransform) in a slice
// of their own number, not of the number Flux wrote.
func exactConditions(o client.Object) {
	c, ok := o.(interface {
		GetConditions() []metav1.Condition
		SetConditions([]metav1.Condition)
	})
	if !ok {
		return
	}
	if conds := c.GetConditions(); cap(conds) > len(conds) {
		c.SetConditions(slices.Clone(conds))
	}
}

// boundLabels keeps o's labels within maxLabelBytes, in key order, and reports whether it
// dropped any.
func boundLabels(o client.Object) bool {
	labels := o.GetLabels()
	size := 0
	for k, v := range labels {
		size += len(k) + len(v)
	}
	if size <= maxLabelBytes {
		return false
	}
	kept := map[string]string{}
	size = 0
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if n := len(k) + len(labels[k]); size+n <= maxLabelBytes {
			kept[k], size = labels[k], size+n
		}
	}
	o.SetLabels(kept)
	return true
}

// boundObject returns, when o (bounded as above) is larger than maxCachedObjectBytes, an
// object of its kind with its metadata only.
func boundObject(o client.Object) (client.Object, bool) {
	b, err := json.Marshal(o)
	if err == nil && len(b) <= maxCachedObjectBytes {
		return o, false
	}
	k, kerr := flux.KindFor(o)
	if kerr != nil {
		return o, false // not a Flux kind: not a cache of ours
	}
	stripped := k.New()
	stripped.GetObjectKind().SetGroupVersionKind(o.GetObjectKind().GroupVersionKind())
	stripped.SetNamespace(o.GetNamespace())
	stripped.SetName(o.GetName())
	stripped.SetUID(o.GetUID())
	stripped.SetResourceVersion(o.GetResourceVersion())
	stripped.SetGeneration(o.GetGeneration())
	stripped.SetDeletionTimestamp(o.GetDeletionTimestamp())
	stripped.SetLabels(o.GetLabels())
	stripped.SetAnnotations(o.GetAnnotations())
	return stripped, true
}
