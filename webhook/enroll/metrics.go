package enroll

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	giteaCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_webhook_enrollment_forge_calls_total",
		Help: "Calls enrollment made to Gitea's API, by operation (put-secret, list-secrets, get-variable, put-variable, list-hooks, create-hook, edit-hook).",
	}, []string{"op"})
	writes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_webhook_enrollment_writes_total",
		Help: "Writes enrollment made to Gitea (secret, variable, webhook), by result (ok, error).",
	}, []string{"what", "result"})
	scopesGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flux_webhook_enrollment_scopes",
		Help: "Enrolled scopes, by state: current (holds the current key's token), pending (not written yet, or holds an older key's), failing (its last attempt failed), left-alone (a repository found through Flux whose variable names another flux-webhook).",
	}, []string{"state"})
	rotationPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flux_webhook_enrollment_rotation_pending",
		Help: "Enrolled secrets still holding a token of a replaced hook key: while above 0 the replaced key stays valid (at most --enroll-rotation-max).",
	})
	rotationSeconds = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "flux_webhook_enrollment_rotation_seconds",
		Help: "How long the last hook key rotation took to reach every enrolled secret.",
	})
)

func init() {
	metrics.Registry.MustRegister(giteaCalls, writes, scopesGauge, rotationPending, rotationSeconds)
}
