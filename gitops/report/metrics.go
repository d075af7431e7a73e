package report

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	statusesPosted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_webhook_statuses_posted_total",
		Help: "Commit statuses posted to Gitea, by cluster, kind and state.",
	}, []string{"cluster", "kind", "state"})
	statusPostErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_webhook_status_post_errors_total",
		Help: "Failed attempts to post a commit status (each is retried).",
	}, []string{"cluster"})
	statusesLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_webhook_statuses_lost_total",
		Help: "Commit statuses given up on: never posted.",
	}, []string{"cluster"})
	resultSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flux_webhook_result_seconds",
		Help:    "Time from the reconcile request to Flux's final answer, by kind and state.",
		Buckets: []float64{0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600},
	}, []string{"kind", "state"})
)

func init() {
	metrics.Registry.MustRegister(statusesPosted, statusPostErrors, statusesLost, resultSeconds)
}

// initMetrics starts a cluster's counters the alerts read at 0, so that the first loss is an
// increase.
func initMetrics(cluster string) {
	statusPostErrors.WithLabelValues(cluster)
	statusesLost.WithLabelValues(cluster)
}
