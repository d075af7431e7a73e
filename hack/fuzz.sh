#!/usr/bin/env bash
# hack/fuzz.sh [DURATION]: run every fuzz target of the module for DURATION each (default
# 20s). A failing input is written by the go command to the package's testdata/fuzz/<Target>/,
# where it stays as a regression case that plain `go test` runs.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${1:-20s}
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}
status=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz: $pkg $target for $dur"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$dur" "$pkg" || status=1
	done
done
exit $status
