#!/usr/bin/env bash
# Blueprint upgrade test (docs/RUNBOOKS.md §3.11, §3.12: upgrade tests against the previous
# version): the previous chart installed with its values, then `helm upgrade` to this chart
# with the values the upgrade notes give (platform/flux-webhook/README.md, Upgrading), on a
# real cluster. Holds when:
#   - 0.2's sovereignDomain and locationCode are refused, saying what to set, and nothing
#     changes;
#   - every object both versions render keeps its UID (nothing deleted and created again:
#     the Service keeps its address, the ExternalSecrets and the Secrets they own stay), and
#     the only objects gone are those the new version no longer renders (on a Cilium cluster,
#     the Kubernetes NetworkPolicies giving way to CiliumNetworkPolicies);
#   - the Deployment's selector is unchanged (it is immutable: a change would fail the
#     upgrade, or need the Deployment recreated);
#   - the ExternalSecrets keep their store and keys as the new values say.
#
#   platform/flux-webhook/tests/upgrade.sh PREVIOUS_CHART [CHART]
#
# PREVIOUS_CHART: a packaged chart (deploy/testdata/bp-flux-webhook-0.2.0.tgz) or
# oci://ghcr.io/openova-io/bp-flux-webhook with PREVIOUS_VERSION set. Environment:
# PREVIOUS_VALUES, CURRENT_VALUES (default: values-0.2.yaml, values-0.3.yaml here: one
# Catalyst configuration before and after), RELEASE (default bp-upgrade), NAMESPACE (default
# bp-upgrade). Needs helm, kubectl and a cluster (KUBECONFIG) serving External Secrets' CRDs
# (v1beta1 and, for the previous defaults, v1). deploy/blueprint_tests_test.go runs it against
# a real kube-apiserver.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
[[ $# -ge 1 ]] || {
	echo "usage: $0 PREVIOUS_CHART [CHART]" >&2
	exit 2
}
previous=$1
chart=${2:-$here/../chart}
prev_values=${PREVIOUS_VALUES:-$here/values-0.2.yaml}
cur_values=${CURRENT_VALUES:-$here/values-0.3.yaml}
release=${RELEASE:-bp-upgrade}
ns=${NAMESPACE:-bp-upgrade}
name=$release-flux-webhook
[[ $release == *flux-webhook* ]] && name=$release
version=()
[[ -n ${PREVIOUS_VERSION:-} ]] && version=(--version "$PREVIOUS_VERSION")

cleanup() { helm uninstall "$release" -n "$ns" --wait >/dev/null 2>&1 || true; }
trap cleanup EXIT

log "install the previous chart $previous ${version[*]} as $release into $ns"
helm install "$release" "$previous" "${version[@]}" -n "$ns" --create-namespace -f "$prev_values" >/dev/null
before=$(objects "$release" "$ns")
selector=$(kubectl get deployment "$name" -n "$ns" -o jsonpath='{.spec.selector}')
log "previous: $(helm list -n "$ns" -f "^$release\$" -o json | tr -d '\n'), $(wc -l <<<"$before") objects"

if grep -q '^\(sovereignDomain\|locationCode\):' "$prev_values"; then
	log "upgrade with the previous values as they are: refused, saying what to set"
	if out=$(helm upgrade "$release" "$chart" -n "$ns" -f "$prev_values" 2>&1); then
		fail "the upgrade took 0.2's sovereignDomain and locationCode"
	fi
	grep -q 'global.sovereignFQDN' <<<"$out" || fail "the refusal does not say what to set: $out"
	[[ $(objects "$release" "$ns") == "$before" ]] || fail "a refused upgrade changed objects"
fi

log "upgrade to $chart with $cur_values"
helm upgrade "$release" "$chart" -n "$ns" -f "$cur_values" >/dev/null
after=$(objects "$release" "$ns")

# Objects of both versions: the same UID. Gone: only what the new version does not render.
declare -A uid
while IFS='=' read -r key id; do uid[$key]=$id; done <<<"$after"
kept=0
while IFS='=' read -r key id; do
	if [[ -n ${uid[$key]:-} ]]; then
		[[ ${uid[$key]} == "$id" ]] || fail "$key was recreated (uid $id, now ${uid[$key]})"
		kept=$((kept + 1))
	elif [[ $key != NetworkPolicy/* ]] || ! serves cilium.io/v2; then
		fail "$key is gone after the upgrade"
	else
		log "gone, as it should on Cilium: $key"
	fi
done <<<"$before"
log "kept $kept objects with their UIDs; new: $(comm -13 <(cut -d= -f1 <<<"$before" | sort) <(cut -d= -f1 <<<"$after" | sort) | tr '\n' ' ')"
has "$before" ExternalSecret || fail "the previous release has no ExternalSecret"

now=$(kubectl get deployment "$name" -n "$ns" -o jsonpath='{.spec.selector}')
[[ $now == "$selector" ]] || fail "the Deployment's selector changed: $selector -> $now"

# The ExternalSecrets: the store and keys of the new values.
store=$(helm get values "$release" -n "$ns" -a -o json | sed -n 's/.*"storeName":"\([^"]*\)".*/\1/p')
while read -r es ref; do
	[[ $ref == "ClusterSecretStore/$store" ]] || fail "ExternalSecret $es reads $ref, want ClusterSecretStore/$store"
done < <(kubectl get externalsecrets.v1beta1.external-secrets.io -n "$ns" -o jsonpath='{range .items[*]}{.metadata.name} {.spec.secretStoreRef.kind}/{.spec.secretStoreRef.name}{"\n"}{end}')
log "PASS"
