#!/usr/bin/env bash
# bp-flux-webhook observability-toggle test.
#
# docs/BLUEPRINT-AUTHORING.md §11.2 (openova-io/openova): every observability toggle defaults
# to false, since the monitoring.coreos.com CRDs come with the observability tier, installed
# after the bootstrap kit. For each of the chart's toggles:
#   default render:      no monitoring.coreos.com reference, no PodMonitor, ServiceMonitor or
#                        PrometheusRule, no Grafana dashboard ConfigMap;
#   opt-in render:       succeeds and renders the toggle's object (the toggle is wired);
#   explicit-off render: succeeds and renders none of them.
# deploy/blueprint_test.go (TestObservabilityToggle) runs it, and runs it on broken copies of
# the chart to see it fail.
#
# Usage: bash tests/observability-toggle.sh [CHART_DIR]
# KUBE_VERSION (default 1.30.0): the Kubernetes version rendered for; the chart's kubeVersion
# is above Helm's default (v1.20.0).

set -euo pipefail

CHART_DIR="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
KUBE_VERSION="${KUBE_VERSION:-1.30.0}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

render() { helm template smoke-flux-webhook "$CHART_DIR" --kube-version "$KUBE_VERSION" "$@"; }

# toggle value | what it renders (a line of the rendered YAML)
TOGGLES=(
  "monitoring.podMonitor.enabled|kind: PodMonitor"
  "monitoring.prometheusRule.enabled|kind: PrometheusRule"
  "monitoring.dashboard.enabled|grafana_dashboard: \"1\""
)

observability() {
  grep -nE 'monitoring\.coreos\.com|kind: (PodMonitor|ServiceMonitor|PrometheusRule)|grafana_dashboard' "$1" || true
}

echo "[observability-toggle] Case 1: default render has no observability object"
render >"$TMP/default.yaml"
if [ -n "$(observability "$TMP/default.yaml")" ]; then
  echo "FAIL: the default render of bp-flux-webhook has observability objects:" >&2
  observability "$TMP/default.yaml" | head -5 >&2
  exit 1
fi
echo "  PASS"

for t in "${TOGGLES[@]}"; do
  toggle=${t%%|*} want=${t#*|}
  echo "[observability-toggle] Case 2: opt-in ($toggle=true) renders it"
  if ! render --set "$toggle=true" >"$TMP/optin.yaml" 2>"$TMP/optin.err"; then
    echo "FAIL: opt-in render failed:" >&2
    cat "$TMP/optin.err" >&2
    exit 1
  fi
  if ! grep -qF "$want" "$TMP/optin.yaml"; then
    echo "FAIL: $toggle=true did not render $want: the toggle is not wired." >&2
    exit 1
  fi
  echo "  PASS"

  echo "[observability-toggle] Case 3: explicit off ($toggle=false) renders none"
  if ! render --set "$toggle=false" >"$TMP/off.yaml" 2>"$TMP/off.err"; then
    echo "FAIL: explicit-off render failed:" >&2
    cat "$TMP/off.err" >&2
    exit 1
  fi
  if [ -n "$(observability "$TMP/off.yaml")" ]; then
    echo "FAIL: $toggle=false still renders observability objects." >&2
    exit 1
  fi
  echo "  PASS"
done

echo "[observability-toggle] All bp-flux-webhook observability-toggle gates green."
