// Package version holds the build's version, stamped at link time:
//
//	-ldflags "-X github.com/openova-io/flux-webhook/internal/version.Version=v1.2.3
//	          -X github.com/openova-io/flux-webhook/internal/version.Commit=<sha>"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	Version = "dev"
	Commit  = ""
)

// RegisterMetric exposes flux_webhook_build_info (1, labelled with the version, commit and Go
// version) in controller-runtime's registry: dashboards tell which build a replica runs.
func RegisterMetric() {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flux_webhook_build_info",
		Help: "1, labelled with the running build's version, commit and Go version.",
	}, []string{"version", "commit", "goversion"})
	if metrics.Registry.Register(g) == nil {
		g.WithLabelValues(Version, commit(), runtime.Version()).Set(1)
	}
}

// String returns "<version> (commit <commit>, <go version>)". Without a stamped commit it
// uses the VCS revision the go command recorded, if any.
func String() string {
	return fmt.Sprintf("%s (commit %s, %s)", Version, commit(), runtime.Version())
}

func commit() string {
	commit := Commit
	if commit == "" {
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return commit
}
