package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// The metrics flux-webhook exports once the Go side implements the contract
// (/tmp/briefs/contract.md, "Metrics the alerts may use"): what the monitoring kit may query.
// A histogram's series are <name>_bucket, _count and _sum.
var contractMetrics = map[string]string{
	"flux_webhook_build_info":                           "gauge",
	"flux_webhook_http_requests_total":                  "counter",
	"flux_webhook_http_request_duration_seconds":        "histogram",
	"flux_webhook_statuses_lost_total":                  "counter",
	"flux_webhook_status_post_errors_total":             "counter",
	"flux_webhook_statuses_posted_total":                "counter",
	"flux_webhook_cluster_up":                           "gauge",
	"flux_webhook_externalsecret_ready":                 "gauge",
	"flux_webhook_secret_last_change_timestamp_seconds": "gauge",
	"flux_webhook_result_seconds":                       "histogram",
	"flux_webhook_records_rejected_total":               "counter",
	"flux_webhook_clusters_refused_total":               "counter",
	"leader_election_master_status":                     "gauge",
}

// The alerts the monitoring kit must raise, by what they watch.
var requiredAlerts = map[string]string{
	"FluxWebhookStatusesLost":         "statuses lost",
	"FluxWebhookClusterDown":          "a cluster down",
	"FluxWebhookTokenSourceNotSynced": "a key's or token's source not synced",
	"FluxWebhookNoLeader":             "no leader",
	"FluxWebhookHookErrors":           "5xx on /hook",
	"FluxWebhookResultsTimingOut":     "results timing out",
}

// The monitoring kit queries only the contract's metrics — every name the alerts and the
// dashboard use, listed in testdata/monitored-metrics.txt (rewritten by -update) for the
// end-to-end check against the real /metrics (testenv.MonitoredMetrics gives the same list) —
// and raises the alerts that matter, each with a severity, a summary and a description.
func TestMonitoringMetricsAndAlerts(t *testing.T) {
	names, err := testenv.MonitoredMetrics(env.root)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "monitored-metrics.txt", []byte(strings.Join(names, "\n")+"\n"))
	suffix := regexp.MustCompile(`_(bucket|count|sum)$`)
	for _, n := range names {
		kind, ok := contractMetrics[n]
		if base := suffix.ReplaceAllString(n, ""); base != n && contractMetrics[base] == "histogram" {
			kind, ok = "histogram series", true
		}
		// A histogram has no series of its bare name.
		if !ok || kind == "histogram" {
			t.Errorf("the monitoring kit queries %s, which is no series of the contract's metrics", n)
		}
	}
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	b, err := os.ReadFile(path(testenv.AlertRulesFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &rules); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Alert == "" || !slices.Contains([]string{"critical", "warning"}, r.Labels["severity"]) ||
				r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("rule %+v: want an alert with severity critical or warning, a summary and a description", r)
			}
			if r.For != "" && !regexp.MustCompile(`^([0-9]+(ms|s|m|h))+$`).MatchString(r.For) {
				t.Errorf("%s: for %q", r.Alert, r.For)
			}
		}
	}
	for a, what := range requiredAlerts {
		if !slices.Contains(alerts, a) {
			t.Errorf("no alert %s (%s)", a, what)
		}
	}
}

// The chart and deploy/components/monitoring ship the same alerts and dashboard: the
// component's PrometheusRule spec is the chart's rules file, its dashboard the same bytes.
func TestMonitoringKitOneSource(t *testing.T) {
	integration(t)
	rules, err := os.ReadFile(path(testenv.AlertRulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := yaml.Unmarshal(rules, &want); err != nil {
		t.Fatal(err)
	}
	var component struct {
		Spec map[string]any `json:"spec"`
	}
	b, err := os.ReadFile(path("deploy/components/monitoring/prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &component); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(component.Spec, want) {
		t.Errorf("deploy/components/monitoring/prometheusrule.yaml's spec is not %s: copy it", testenv.AlertRulesFile)
	}
	dash, err := os.ReadFile(path(testenv.DashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path("deploy/components/monitoring/dashboard.json")); err != nil || !bytes.Equal(b, dash) {
		t.Errorf("deploy/components/monitoring/dashboard.json is not %s: copy it (%v)", testenv.DashboardFile, err)
	}
	// The rendered objects carry them, the dashboard under the Grafana sidecar's label.
	for _, r := range render(t) {
		if r.name != "catalyst-options" && r.name != "chart-options" {
			continue
		}
		objs := decode(t, r.out)
		spec, _, _ := unstructured.NestedMap(find(t, objs, "PrometheusRule", "flux-webhook").Object, "spec")
		if !reflect.DeepEqual(deepCopyJSON(t, spec), deepCopyJSON(t, want)) {
			t.Errorf("%s: the PrometheusRule's spec is not the rules file", r.name)
		}
		cm := find(t, objs, "ConfigMap", "flux-webhook-dashboard")
		if cm.GetLabels()["grafana_dashboard"] != "1" {
			t.Errorf("%s: the dashboard's labels %v", r.name, cm.GetLabels())
		}
		if d, _, _ := unstructured.NestedString(cm.Object, "data", "flux-webhook.json"); d != string(dash) {
			t.Errorf("%s: the dashboard ConfigMap does not hold %s", r.name, testenv.DashboardFile)
		}
	}
}

// Prometheus itself accepts the alerts (promtool check rules), and their unit tests pass
// (deploy/testdata/prometheus-rules.test.yaml: each alert fires on its fault, with its labels
// and annotations, not before its `for`, and not while the service is healthy).
func TestAlertRulesPromtool(t *testing.T) {
	integration(t)
	promtool, err := testenv.RequirePromtool()
	if err != nil {
		t.Fatalf("%v (hack/testbin.sh promtool)", err)
	}
	for _, args := range [][]string{
		{"check", "rules", path(testenv.AlertRulesFile)},
		{"test", "rules", path("deploy/testdata/prometheus-rules.test.yaml")},
	} {
		out, err := exec.CommandContext(t.Context(), promtool, args...).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("SUCCESS")) {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
