package cluster

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Budget is a client rate limit of a cluster, and what spends it. A push's patches have
// one of their own, so that nothing else flux-webhook writes makes them wait: the time a
// push takes to be requested is the time the cluster's client limit allows for its
// patches, as for a raw client-go loop at the same limits.
type Budget int

const (
	// Requests is what a push's requests spend, and only they (and the platform jobs', within
	// their own --job-qps): the metadata patch of requestedAt and the request record, and the
	// read that follows a conflict. Its QPS and burst are the cluster's client limits
	// (--kube-qps/--kube-burst, --cluster-qps/--cluster-burst), one token bucket for every
	// kind.
	Requests Budget = iota
	// Bookkeeping is what the reporter spends: its record writes (intent, posted, final) and
	// its reads past the cache, and the clusters' Events. A token bucket of its own, with
	// the same QPS and burst (EventWriter holds Events back while a push is requested, as
	// the reporter does its writes).
	Bookkeeping
	budgets
)

func (b Budget) String() string {
	switch b {
	case Requests:
		return "requests"
	case Bookkeeping:
		return "bookkeeping"
	}
	return fmt.Sprintf("budget(%d)", int(b))
}

// budgetClient returns the client of a budget, built on first use: the cluster's
// configuration with one token bucket shared by every kind it writes (controller-runtime's
// client otherwise makes one per kind), on the cluster's HTTP client and REST mapper.
func (c *Cluster) budgetClient(b Budget) (client.Client, error) {
	if b < 0 || b >= budgets {
		return nil, fmt.Errorf("cluster %s: no client for %s", c.Name, b)
	}
	c.budgetOnce.Do(func() {
		for i := range budgets {
			cfg := rest.CopyConfig(c.GetConfig())
			cfg.RateLimiter = tokenBucket(cfg.QPS, cfg.Burst)
			cl, err := client.New(cfg, client.Options{Scheme: c.GetScheme(), Mapper: c.GetRESTMapper(), HTTPClient: c.GetHTTPClient()})
			if err != nil {
				c.budgetErr = fmt.Errorf("cluster %s: %s client: %w", c.Name, i, err)
				return
			}
			c.budgetClients[i] = cl
		}
	})
	if c.budgetErr != nil {
		return nil, c.budgetErr
	}
	return c.budgetClients[b], nil
}

// tokenBucket is client-go's limiter for a configuration's QPS and burst, as rest.RESTClientFor
// would make it (its defaults for zero), nil (unlimited) for a negative QPS.
func tokenBucket(qps float32, burst int) flowcontrol.RateLimiter {
	if qps == 0 {
		qps = rest.DefaultQPS
	}
	if burst == 0 {
		burst = rest.DefaultBurst
	}
	if qps < 0 {
		return nil
	}
	return flowcontrol.NewTokenBucketRateLimiter(qps, burst)
}

const (
	// bookkeepingRetry is how long the reporter's bookkeeping waits, with jitter, while a
	// push is being requested in its cluster.
	bookkeepingRetry = time.Second
	// maxBookkeepingWait bounds that wait: a cluster requested without a pause for longer
	// (pushes back to back) gets its bookkeeping done meanwhile.
	maxBookkeepingWait = 30 * time.Second
)

// requesting counts the pushes being requested in a cluster, and since when.
type requesting struct {
	n     atomic.Int32
	since atomic.Int64 // unix nanoseconds the count last left zero
}

// Requesting marks a push being requested in the cluster until done is called: meanwhile
// the reporter's bookkeeping there waits (Busy). Its writes have a client limit of their
// own (Bookkeeping), and this keeps them off the API server too while a push's patches go
// out: a push is requested as fast as its client limit (or the API server) allows.
func (c *Cluster) Requesting() (done func()) {
	if c.requesting.n.Add(1) == 1 {
		c.requesting.since.Store(time.Now().UnixNano())
	}
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			c.requesting.n.Add(-1)
		}
	}
}

// Busy returns how long the reporter's bookkeeping should wait before writing to the
// cluster: zero unless a push is being requested there (for less than maxBookkeepingWait).
func (c *Cluster) Busy() time.Duration {
	if c.requesting.n.Load() == 0 {
		return 0
	}
	if time.Since(time.Unix(0, c.requesting.since.Load())) > maxBookkeepingWait {
		return 0
	}
	return bookkeepingRetry/2 + rand.N(bookkeepingRetry)
}
