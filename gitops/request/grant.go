package request

import (
	"context"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/record"
)

// A registered cluster (a tenant's vcluster) follows a push only when the pushed repository
// is public or granted to it (cluster.Cluster.Follows). The grant is enforced where a push is
// accepted, before anything is recorded: a refused cluster's objects are counted in the
// answer, never listed in the push record, so the worker never requests them, no request
// record is written into that cluster, and no status (per object or per cluster, nor a pull
// request summary) is posted under its context. The worker asks again before requesting
// (a grant withdrawn since the push was accepted).

var grantRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_grant_refusals_total",
	Help: "Pushes not requested in a registered cluster whose Flux objects follow them, because their repository is neither public nor granted to the cluster (annotation flux-webhook.openova.io/repositories): once per push and cluster.",
}, []string{"cluster"})

func init() { metrics.Registry.MustRegister(grantRefusals) }

// refuse takes the objects of the clusters that may not follow push out of objs, and
// returns what the answer says of them: per refused cluster, how many objects follow the
// push there. Each refusal is counted and logged once per cluster.
func refuse(ctx context.Context, push gitops.Push, clusters []*cluster.Cluster, refused []bool, objs [][]client.Object) []api.ClusterTargets {
	var out []api.ClusterTargets
	for i, c := range clusters {
		if !refused[i] || len(objs[i]) == 0 {
			continue
		}
		out = append(out, api.ClusterTargets{Cluster: c.Name, Refused: len(objs[i])})
		grantRefusals.WithLabelValues(c.Name).Inc()
		log.FromContext(ctx).Info("push refused in cluster: its repository is neither public nor granted to it",
			"cluster", c.Name, "objects", len(objs[i]), "subject", push.Subject(), "granted", c.GrantString())
		objs[i] = nil
	}
	return out
}

// withdrawn handles a push whose cluster may no longer follow it (its grant changed after
// the push was accepted): nothing is requested there, and the push record forgets the
// cluster, unless its per-cluster status was begun (then it is closed as having no object
// to reconcile: a status is never left pending).
func (w *Worker) withdrawn(ctx context.Context, c *cluster.Cluster, rec *record.Push) error {
	grantRefusals.WithLabelValues(c.Name).Inc()
	// The worker's context names the cluster.
	log.FromContext(ctx).Info("push refused in cluster: its repository is no longer granted to it",
		"subject", rec.Pushed.Subject, "granted", c.GrantString())
	return w.Store.Update(ctx, rec.Key(), func(p *record.Push) error {
		j := slices.IndexFunc(p.Clusters, func(cw record.ClusterWork) bool { return cw.Cluster == c.Name })
		switch {
		case j < 0 || p.Clusters[j].Done:
			return record.ErrNoChange
		case p.Clusters[j].Posted == "" && p.Clusters[j].Intent == nil:
			p.Clusters = slices.Delete(p.Clusters, j, j+1)
		default:
			p.Clusters[j].Done, p.Clusters[j].Requested = true, 0
		}
		return nil
	})
}
