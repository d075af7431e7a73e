package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/gitops/flux"
)

// DefaultMaxObjects is the default cap on the Flux objects flux-webhook caches of one
// registered cluster (--cluster-max-objects): a vcluster holds tens, a host cluster's
// platform a few thousand. At most maxCachedObjectBytes each once slimmed (a few KiB in
// memory), one registered cluster then takes a bounded share of a replica's memory whatever
// its tenant creates.
const DefaultMaxObjects = 5000

// countPage bounds the page of metadata read to count a kind's objects when the API server
// gives no estimate of what remains (remainingItemCount): a page of metadata, whose
// annotations a tenant may have filled (256 KiB each at most), costs at most this many.
const countPage = 16

// ErrTooManyObjects: a registered cluster holds more Flux objects than flux-webhook caches of
// one cluster.
var ErrTooManyObjects = errors.New("too many Flux objects")

var clusterObjects = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "flux_webhook_cluster_objects",
	Help: "Flux objects in the cluster's cache (at most --cluster-max-objects for a registered cluster: beyond it the cluster is not cached).",
}, []string{"cluster"})

func init() { metrics.Registry.MustRegister(clusterObjects) }

// objects counts the objects of a cluster's cache, as of the last count (every probe).
type objects struct {
	n       atomic.Int64
	tripped atomic.Bool
}

// Objects returns how many Flux objects the cluster's cache held at the last count.
func (c *Cluster) Objects() int { return int(c.objects.n.Load()) }

// count counts the objects of the cluster's cache, from its informers' stores (their keys:
// nothing copied), and calls TooMany beyond MaxObjects.
func (c *Cluster) count(ctx context.Context) error {
	n := 0
	for _, k := range c.Kinds() {
		inf, err := c.GetCache().GetInformer(ctx, k.New())
		if err != nil {
			return err
		}
		s, ok := inf.(interface{ GetStore() toolscache.Store })
		if !ok {
			return fmt.Errorf("cluster %s: the informer of %s has no store to count", c.Name, k.Name())
		}
		n += len(s.GetStore().ListKeys())
	}
	c.objects.n.Store(int64(n))
	clusterObjects.WithLabelValues(c.Name).Set(float64(n))
	c.tooMany(n)
	return nil
}

// tooMany calls TooMany, once, when n is over MaxObjects.
func (c *Cluster) tooMany(n int) {
	if c.MaxObjects <= 0 || n <= c.MaxObjects || c.TooMany == nil || c.objects.tripped.Swap(true) {
		return
	}
	go c.TooMany(fmt.Errorf("%w: cluster %s holds more than %d (%d counted)", ErrTooManyObjects, c.Name, c.MaxObjects, n))
}

// precount returns how many objects the kinds hold in the cluster, asking the API server
// (the count the cache would hold) before their informers list them: one list of a single
// object's metadata per kind, which says how many remain. It stops counting beyond
// MaxObjects.
func (c *Cluster) precount(ctx context.Context, kinds []flux.Kind) (int, error) {
	cl, err := c.budgetClient(Bookkeeping)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, k := range kinds {
		gvk, err := cl.GroupVersionKindFor(k.New())
		if err != nil {
			return 0, err
		}
		cont := ""
		for limit := int64(1); ; limit = countPage {
			list := &metav1.PartialObjectMetadataList{}
			list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
			if err := cl.List(ctx, list, client.Limit(limit), client.Continue(cont)); err != nil {
				return 0, fmt.Errorf("count %s: %w", k.Name(), err)
			}
			total += len(list.Items)
			if r := list.RemainingItemCount; r != nil {
				total += int(*r)
				break
			}
			if cont = list.Continue; cont == "" || total > c.MaxObjects {
				break
			}
		}
		if total > c.MaxObjects {
			break
		}
	}
	return total, nil
}
