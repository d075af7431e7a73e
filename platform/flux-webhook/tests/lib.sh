# Shared by integration.sh and upgrade.sh: logging, the release's objects and their UIDs.
# Needs helm and kubectl on PATH and KUBECONFIG (or the current context) pointing at the
# cluster.

log() { printf '[%s %s] %s\n' "$(basename "$0" .sh)" "$(date +%T)" "$*" >&2; }
fail() {
	log "FAIL: $*"
	exit 1
}

# objects RELEASE NAMESPACE: one line per object of the release, of the kinds its manifest
# has, as the cluster holds them (by the release's app.kubernetes.io/instance label, which the
# chart sets on every object): <kind>/<namespace>/<name>=<uid> (namespace empty for
# cluster-scoped objects), sorted.
objects() {
	local kinds
	kinds=$(helm get manifest "$1" -n "$2" | sed -n 's/^kind: //p' | sort -u | paste -sd, -)
	kubectl get "$kinds" -A -l "app.kubernetes.io/instance=$1" \
		-o jsonpath='{range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}={.metadata.uid}{"\n"}{end}' |
		sort
}

# serves GROUP/VERSION: whether the cluster serves it (read whole: a grep -q ending the pipe
# early would fail kubectl under pipefail).
serves() { grep -qx "$1" <<<"$(kubectl api-versions)"; }

# has LINES KIND: whether one of the objects lines is of KIND.
has() { grep -q "^$2/" <<<"$1"; }
