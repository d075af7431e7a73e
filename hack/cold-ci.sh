#!/usr/bin/env bash
# hack/cold-ci.sh [DIR]: run .ci/run as a fresh machine would, and time it: a clone of this
# repository's HEAD in DIR (default /tmp/flux-webhook-cold), with empty module, build and parts
# caches (GOMODCACHE, GOCACHE, FLUX_WEBHOOK_CACHE under DIR); the machine's go env is kept.
# .ci/run prints each step's time ("ci: ... took N s"); the last line is the whole run's.
# Cold, it takes over an hour (benchmarks/README.md, "A cold CI run"): give it the machine.
set -euo pipefail
dir=${1:-/tmp/flux-webhook-cold}
repo=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$dir"
mkdir -p "$dir"
export GOMODCACHE=$dir/gomod GOCACHE=$dir/gocache FLUX_WEBHOOK_CACHE=$dir/parts
git clone -q "$repo" "$dir/src"
cd "$dir/src"
echo "cold-ci: $(git log --oneline -1), start $(date -u +%T) UTC"
start=$SECONDS
rc=0
.ci/run || rc=$?
echo "cold-ci: exit $rc after $((SECONDS - start)) s, end $(date -u +%T) UTC"
exit $rc
