#!/usr/bin/env bash
# hack/fuzz.sh [DURATION]: run every fuzz target of the module for DURATION each (default
# 20s). A failing input is written by the go command to the package's testdata/fuzz/<Target>/,
# where it stays as a regression case that plain `go test` runs.
#
# hack/fuzz.sh --keep [N]: copy up to N (default 10) inputs per target that the go command
# found interesting (new coverage) during earlier runs, smallest first, from its fuzz cache
# ($GOCACHE/fuzz) into <package>/testdata/fuzz/<Target>/, to be committed: plain `go test`
# then runs them as seeds, and every fuzzing run starts from them.
#
# FUZZMINIMIZETIME (default 3s) bounds how long a new interesting input is minimized: the
# go command's default, 60s, would spend most of a short run minimizing.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.4}
module=$(go list -m)

# targets prints "<package dir> <Target>" for every fuzz target, found in the sources (no
# build needed).
targets() {
	grep -rhoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+' --with-filename . |
		sed -E 's#^\./(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)$#\1 \2#' | sort -u
}

if [[ ${1:-} == --keep ]]; then
	keep=${2:-10}
	cache=$(go env GOCACHE)/fuzz
	targets | while read -r dir target; do
		src=$cache/$module/$dir/$target
		dst=$dir/testdata/fuzz/$target
		[[ -d $src ]] || continue
		mkdir -p "$dst"
		have=$(find "$dst" -type f | wc -l)
		added=0
		# Entries are named by their content's hash: a name already kept is the same input.
		while read -r _ f; do
			((have < keep)) || break
			name=$(basename "$f")
			[[ -e $dst/$name ]] && continue
			cp "$f" "$dst/$name"
			have=$((have + 1)) added=$((added + 1))
		done < <(find "$src" -type f -printf '%s %p\n' | sort -n)
		echo "fuzz: $dir $target: $added new inputs kept ($have in testdata)"
	done
	exit 0
fi

dur=${1:-20s}
minimize=${FUZZMINIMIZETIME:-3s}
status=0
while read -r dir target; do
	echo "fuzz: $dir $target for $dur"
	start=$(date +%s)
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$dur" -fuzzminimizetime "$minimize" "./$dir" || status=1
	echo "fuzz: $dir $target took $(($(date +%s) - start))s"
done < <(targets)
exit $status
