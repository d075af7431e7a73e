package testenv

import "os"

// EnvPromtool points at Prometheus' promtool (hack/testbin.sh promtool), which checks and
// unit-tests the monitoring kit's alerts.
const EnvPromtool = "FLUX_WEBHOOK_PROMTOOL"

// RequirePromtool returns the promtool binary ($FLUX_WEBHOOK_PROMTOOL).
func RequirePromtool() (string, error) {
	return requireFiles(EnvPromtool, os.Getenv(EnvPromtool))
}
