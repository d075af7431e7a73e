#!/usr/bin/env bash
# Blueprint acceptance test (docs/RUNBOOKS.md §3.2 tests/, §3.12): the chart installed into a
# real cluster as Flux's helm-controller installs it (`helm install`, the cluster's own API
# versions), then uninstalled.
#
#   platform/flux-webhook/tests/integration.sh [CHART]     (default: this Blueprint's chart/)
#
# Needs: helm, kubectl; a cluster (KUBECONFIG) serving the CRDs of External Secrets (v1beta1)
# and, for the HTTPRoute, the Gateway API. On a cluster serving cilium.io/v2 (Catalyst's) the
# release has CiliumNetworkPolicies, elsewhere Kubernetes NetworkPolicies.
# Environment: RELEASE (default bp-it), NAMESPACE (default bp-it), SOVEREIGN_FQDN (default
# fra1.example.eu). deploy/blueprint_tests_test.go runs it against a real kube-apiserver.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
chart=${1:-$here/../chart}
release=${RELEASE:-bp-it}
ns=${NAMESPACE:-bp-it}
fqdn=${SOVEREIGN_FQDN:-fra1.example.eu}
name=$release-flux-webhook
[[ $release == *flux-webhook* ]] && name=$release

cleanup() { helm uninstall "$release" -n "$ns" --wait >/dev/null 2>&1 || true; }
trap cleanup EXIT

log "install $chart as $release into $ns"
notes=$(helm install "$release" "$chart" -n "$ns" --create-namespace \
	--set global.sovereignFQDN="$fqdn" --set region=fra1 --set clusterName=fra1 \
	--set ingress.enabled=false --set httpRoute.enabled=true)
objs=$(objects "$release" "$ns")
rendered=$(helm get manifest "$release" -n "$ns" | grep -c '^kind:')
log "installed: $(wc -l <<<"$objs") objects of the $rendered rendered"
[[ $(wc -l <<<"$objs") -eq $rendered ]] || fail "the release rendered $rendered objects, the cluster holds: $objs"

# Every object the release rendered exists (objects() read each back from the cluster).
for kind in Deployment Service ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding \
	ExternalSecret PodDisruptionBudget ValidatingAdmissionPolicy ValidatingAdmissionPolicyBinding HTTPRoute Namespace; do
	has "$objs" "$kind" || fail "the release has no $kind: $objs"
done
# The policy flavor follows what the cluster serves.
if serves cilium.io/v2; then
	has "$objs" CiliumNetworkPolicy || fail "the cluster serves cilium.io/v2 and the release has no CiliumNetworkPolicy"
	! has "$objs" NetworkPolicy || fail "a Kubernetes NetworkPolicy on a Cilium cluster"
	cnp=$(kubectl get ciliumnetworkpolicy "$name" -n "$ns" -o jsonpath='{.spec.ingress[*].fromEntities} {.spec.egress[*].toEntities}')
	[[ $cnp == *ingress* && $cnp == *kube-apiserver* ]] || fail "the CiliumNetworkPolicy names no ingress or kube-apiserver entity: $cnp"
else
	has "$objs" NetworkPolicy || fail "no NetworkPolicy"
	! has "$objs" CiliumNetworkPolicy || fail "a CiliumNetworkPolicy on a cluster without cilium.io/v2"
fi

# The platform's defaults: v1beta1 ExternalSecrets from vault-region1, keys under
# catalyst/flux-webhook/; /hook on flux-webhook.<fqdn>; statuses to https://gitea.<fqdn>.
es=$(kubectl get externalsecrets.v1beta1.external-secrets.io -n "$ns" -o jsonpath='{range .items[*]}{.spec.secretStoreRef.kind}/{.spec.secretStoreRef.name} {.spec.data[*].remoteRef.key}{.spec.dataFrom[*].extract.key}{"\n"}{end}')
[[ $(wc -l <<<"$es") -eq 5 ]] || fail "want 5 ExternalSecrets: $es"
while read -r store key; do
	[[ $store == ClusterSecretStore/vault-region1 && $key == catalyst/flux-webhook/* ]] || fail "ExternalSecret from $store, key $key"
done <<<"$es"
host=$(kubectl get httproute "$name" -n "$ns" -o jsonpath='{.spec.hostnames[0]}')
[[ $host == "flux-webhook.$fqdn" ]] || fail "HTTPRoute host $host"
gitea=$(kubectl get deployment "$name" -n "$ns" -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="FLUX_WEBHOOK_GITEA_URL")].value}')
[[ $gitea == "https://gitea.$fqdn" ]] || fail "FLUX_WEBHOOK_GITEA_URL $gitea"
cpu=$(kubectl get deployment "$name" -n "$ns" -o jsonpath='{.spec.template.spec.containers[0].resources.requests.cpu} {.spec.template.spec.containers[0].resources.limits.cpu}')
[[ $cpu =~ ^[^\ ]+\ [^\ ]+$ ]] || fail "CPU request and limit: $cpu"
grep -q "https://flux-webhook.$fqdn/hook" <<<"$notes" || fail "NOTES do not show the hook URL: $notes"

log "uninstall"
helm uninstall "$release" -n "$ns" --wait >/dev/null
trap - EXIT
left=$(helm get manifest "$release" -n "$ns" 2>/dev/null || true)
[[ -z $left ]] || fail "the release is still there"
kubectl get deployment "$name" -n "$ns" >/dev/null 2>&1 && fail "the Deployment outlived the release"
# The kubeconfig Secrets' namespace is kept (helm.sh/resource-policy: keep), with its Secrets.
kubectl get namespace "$ns-clusters" >/dev/null || fail "the clusters' namespace went with the release"
log "PASS"
