package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"sigs.k8s.io/yaml"
)

// The monitoring kit's files, relative to the repository root: the alerts (a PrometheusRule's
// spec) and the Grafana dashboard, shipped by the chart and by deploy/components/monitoring.
const (
	AlertRulesFile = "platform/flux-webhook/chart/files/prometheus-rules.yaml"
	DashboardFile  = "platform/flux-webhook/chart/files/dashboard.json"
)

// metricName finds the metric names in a PromQL expression: flux-webhook's own and
// controller-runtime's leader election gauge (the only others the kit may use).
var metricName = regexp.MustCompile(`\b(flux_webhook_[a-z0-9_]+|leader_election_master_status)\b`)

// MonitoredMetrics returns, sorted and once each, the metric names that the alerts and the
// dashboard in the repository at root query, as they appear in a /metrics exposition (a
// histogram's as <name>_bucket, _count or _sum). An end-to-end test can check each against
// the running service's /metrics.
func MonitoredMetrics(root string) ([]string, error) {
	exprs, err := MonitoringExpressions(root)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// MonitoringExpressions returns every PromQL expression of the alerts (each rule's expr) and
// of the dashboard (each panel target's expr), in file order.
func MonitoringExpressions(root string) ([]string, error) {
	var out []string
	b, err := os.ReadFile(filepath.Join(root, AlertRulesFile))
	if err != nil {
		return nil, err
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		return nil, fmt.Errorf("%s: %w", AlertRulesFile, err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	if b, err = os.ReadFile(filepath.Join(root, DashboardFile)); err != nil {
		return nil, err
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		return nil, fmt.Errorf("%s: %w", DashboardFile, err)
	}
	for _, p := range dash.Panels {
		for _, t := range p.Targets {
			out = append(out, t.Expr)
		}
	}
	return out, nil
}
