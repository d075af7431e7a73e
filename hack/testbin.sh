#!/usr/bin/env bash
# hack/testbin.sh — provision the real parts the tests and the demo run against.
#
#   hack/testbin.sh [COMPONENT...]    build what is missing, then print KEY=VALUE lines
#   hack/testbin.sh --print           print the KEY=VALUE lines only (no build)
#
# COMPONENT is any of: envtest crds gitea runner flux tools crds-extra promtool eso kwok flagger
# (default: all of them).
# Everything is built from the Go module proxy at pinned versions (nothing else is reachable
# on our machines) into a cache outside the work tree, one directory per component and
# version, so a second run costs about a second:
#
#   $FLUX_WEBHOOK_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/flux-webhook)
#
# Printed lines (the Makefile exports them; the test helpers in internal/testenv read them):
#   KUBEBUILDER_ASSETS        kube-apiserver + etcd (+ kubectl) for controller-runtime envtest, and
#                             kube-controller-manager + kube-scheduler (Deployments roll out)
#   FLUX_WEBHOOK_CRDS         Flux (source, kustomize, helm) and External Secrets CRDs
#   FLUX_WEBHOOK_GITEA        gitea binary; its templates/options/public sit in ../static
#   FLUX_WEBHOOK_GITEA_RUNNER gitea act runner (host mode)
#   FLUX_WEBHOOK_FLUX_BIN     source-controller + kustomize-controller
#   FLUX_WEBHOOK_TOOLS        helm, kustomize (for rendering the deploy manifests)
#   FLUX_WEBHOOK_CRDS_EXTRA   Gateway API (HTTPRoute), prometheus-operator (PodMonitor,
#                             ServiceMonitor, PrometheusRule) and Cilium (CiliumNetworkPolicy)
#                             CRDs, for the deploy tests' optional objects; module zips only
#                             (Cilium's: 38 MB), under a minute cold
#   FLUX_WEBHOOK_PROMTOOL     promtool (check and unit-test the alerts)
#   FLUX_WEBHOOK_ESO          External Secrets Operator's controller (the real ESO syncing the
#                             keys; its kubernetes and fake providers only), its CRDs beside it
#                             in crds/; 5m37s of CPU cold
#   FLUX_WEBHOOK_KWOK         kwok and its stage files: simulated nodes, so Pods become Ready
#   FLUX_WEBHOOK_FLAGGER      Flagger's controller and its CRDs (canary analysis)
#
# Cold cost on 2 quiet cores: 37 min in all (2026-12-07, benchmarks/README.md: the joint build
# 10 min, the Kubernetes commands 11, Gitea 6.5, External Secrets 3, Flagger 2.5);
# with the cache present: about a second. Logs of each build: $CACHE/build/*.log.
set -euo pipefail
shopt -s inherit_errexit

K8S_VERSION=1.37.2            # k8s.io/kubernetes; staging modules at v0.37.2
ETCD_VERSION=3.7.3            # go.etcd.io/etcd/server/v3 (k8s 1.37 pins 3.7.x)
FLUX_VERSION=1.9.6            # source-/kustomize-controller (v1.10+ declare go 1.27)
HELM_API_VERSION=1.7.1        # helm-controller/api, as go.mod (its root module is not served)
CONTROLLER_TOOLS_VERSION=0.23.0
GO_TOOLCHAIN=go1.27.4         # the project's Go; helm-controller/api v1.7 declares go 1.27
ESO_VERSION=0.16.2            # external-secrets root module (carries config/crds)
GITEA_VERSION=1.26.0          # v1.27+ moved to gitea.dev, whose dependencies are not served
RUNNER_VERSION=1.0.8          # gitea.com/gitea/runner
HELM_VERSION=3.22.0
KUSTOMIZE_VERSION=5.8.2
GATEWAY_API_VERSION=1.7.0     # sigs.k8s.io/gateway-api (its zip carries config/crd/standard)
PROM_OPERATOR_VERSION=0.85.0  # prometheus-operator (its zip carries example/prometheus-operator-crd)
CILIUM_VERSION=1.20.2         # github.com/cilium/cilium (its zip carries the cilium.io/v2 CRDs)
PROMETHEUS_VERSION=0.316.0    # github.com/prometheus/prometheus (Prometheus 3), for promtool
KWOK_VERSION=0.8.0            # sigs.k8s.io/kwok
FLAGGER_VERSION=1.36.1        # github.com/fluxcd/flagger (the newest served)

CACHE=${FLUX_WEBHOOK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flux-webhook}
ENVTEST_DIR=$CACHE/envtest-k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION
CRD_DIR=$CACHE/crds-flux-v$FLUX_VERSION-helm-v$HELM_API_VERSION-eso-v$ESO_VERSION
GITEA_DIR=$CACHE/gitea-v$GITEA_VERSION
RUNNER_DIR=$CACHE/gitea-runner-v$RUNNER_VERSION
# "-joint": built in one `go build` with kwok, helm and promtool (build_joint), on the
# dependency versions they agree on (an older cache holds them built one by one)
FLUX_DIR=$CACHE/flux-v$FLUX_VERSION-joint
# "-k8s": helm stamped with its Kubernetes version (an older cache holds an unstamped helm)
TOOLS_DIR=$CACHE/tools-helm-v$HELM_VERSION-k8s-joint-kustomize-v$KUSTOMIZE_VERSION
CRDS_EXTRA_DIR=$CACHE/crds-extra-gateway-v$GATEWAY_API_VERSION-promop-v$PROM_OPERATOR_VERSION-cilium-v$CILIUM_VERSION
PROMTOOL_DIR=$CACHE/promtool-prometheus-v$PROMETHEUS_VERSION-joint
ESO_DIR=$CACHE/eso-v$ESO_VERSION-kubernetes
KWOK_DIR=$CACHE/kwok-v$KWOK_VERSION-joint
FLAGGER_DIR=$CACHE/flagger-v$FLAGGER_VERSION
BUILD=$CACHE/build

print_env() {
	cat <<EOT
KUBEBUILDER_ASSETS=$ENVTEST_DIR
FLUX_WEBHOOK_CRDS=$CRD_DIR
FLUX_WEBHOOK_GITEA=$GITEA_DIR/gitea
FLUX_WEBHOOK_GITEA_RUNNER=$RUNNER_DIR/gitea-runner
FLUX_WEBHOOK_FLUX_BIN=$FLUX_DIR
FLUX_WEBHOOK_TOOLS=$TOOLS_DIR
FLUX_WEBHOOK_CRDS_EXTRA=$CRDS_EXTRA_DIR
FLUX_WEBHOOK_PROMTOOL=$PROMTOOL_DIR/promtool
FLUX_WEBHOOK_ESO=$ESO_DIR/external-secrets
FLUX_WEBHOOK_KWOK=$KWOK_DIR
FLUX_WEBHOOK_FLAGGER=$FLAGGER_DIR
EOT
}

if [ "${1:-}" = --print ]; then
	print_env
	exit 0
fi

# The module proxy alone: its `direct` fallback would try source hosts and hang here.
GOPROXY=$(go env GOPROXY | sed 's/,direct$//')
export GOPROXY
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=mod -buildvcs=false"
export GONOSUMDB= GOFLAGS
unset GOOS GOARCH

log() { printf '[testbin %s] %s\n' "$(date +%T)" "$*" >&2; }
mkdir -p "$CACHE" "$BUILD"

# moddir MODULE@VERSION: the extracted module directory in the module cache.
moddir() { (cd "$BUILD" && go mod download -json "$1") | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'; }
modfile() { (cd "$BUILD" && go mod download -json "$1") | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'; }

# gobuild DIR OUT PKG [go build args...]: build into OUT atomically, timing into $BUILD/NAME.log.
gobuild() {
	local dir=$1 out=$2 pkg=$3 t0=$SECONDS
	shift 3
	log "building $(basename "$out") from $pkg (cold: minutes)"
	(cd "$dir" && go build -trimpath "$@" -o "$out.tmp" "$pkg")
	mv -f "$out.tmp" "$out"
	log "built $(basename "$out") in $((SECONDS - t0))s"
	echo "$(basename "$out") $((SECONDS - t0))s" >>"$BUILD/timings.log"
}

# replaces_of GOMOD NEWVERSION: turn each local-path replace (staging/sibling modules) that
# GOMOD also requires into a replace with the published NEWVERSION.
replaces_of() {
	local gomod=$1 ver=$2 m
	sed -n -E 's/^(replace[[:space:]]+)?[[:space:]]*([^[:space:]]+)[[:space:]]+=>[[:space:]]+\.\.?\/.*$/\2/p' "$gomod" |
		while read -r m; do
			if grep -qE "^[[:space:]]*(require[[:space:]]+)?${m//./\\.}[[:space:]]+v" "$gomod"; then
				printf '\t%s => %s v%s\n' "$m" "$m" "$ver"
			fi
		done
}

# wrapper NAME: a fresh module directory for one build.
wrapper() { rm -rf "${BUILD:?}/$1"; mkdir -p "$BUILD/$1"; echo "$BUILD/$1"; }

build_envtest() {
	local kube_cmds=(kube-apiserver kubectl kube-controller-manager kube-scheduler) c missing=()
	for c in "${kube_cmds[@]}" etcd; do
		[ -x "$ENVTEST_DIR/$c" ] || missing+=("$c")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	mkdir -p "$ENVTEST_DIR"
	local gomod d minor ld p
	# k8s.io/kubernetes cannot be `go install`ed (replace lines to ./staging): a wrapper
	# module requires it and replaces every staging module with its published version.
	gomod=$(modfile "k8s.io/kubernetes@v$K8S_VERSION")
	d=$(wrapper k8s)
	{
		printf 'module testbin/k8s\n\n'
		grep -E '^go [0-9.]+$' "$gomod"
		grep -E '^godebug ' "$gomod" || true
		printf '\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
		replaces_of "$gomod" "0.${K8S_VERSION#*.}"
		printf ')\n'
	} >"$d/go.mod"
	minor=$(echo "$K8S_VERSION" | cut -d. -f2)
	ld="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	# The four commands in one `go build`: the packages they share compile once.
	local kube_missing=0
	for c in "${kube_cmds[@]}"; do [ -x "$ENVTEST_DIR/$c" ] || kube_missing=1; done
	if [ $kube_missing = 1 ]; then
		local t0=$SECONDS out=$ENVTEST_DIR/.kube.tmp
		log "building ${kube_cmds[*]} from k8s.io/kubernetes v$K8S_VERSION in one go build (cold: ~11 min on 2 cores)"
		rm -rf "$out"
		mkdir -p "$out"
		(cd "$d" && go build -trimpath -ldflags "$ld" -o "$out/" $(printf 'k8s.io/kubernetes/cmd/%s ' "${kube_cmds[@]}"))
		for c in "${kube_cmds[@]}"; do mv -f "$out/$c" "$ENVTEST_DIR/$c"; done
		rmdir "$out"
		log "built ${kube_cmds[*]} in $((SECONDS - t0))s"
		echo "kube-apiserver+kubectl+kube-controller-manager+kube-scheduler $((SECONDS - t0))s" >>"$BUILD/timings.log"
	fi
	[ -x "$ENVTEST_DIR/etcd" ] && return 0

	gomod=$(modfile "go.etcd.io/etcd/server/v3@v$ETCD_VERSION")
	d=$(wrapper etcd)
	{
		printf 'module testbin/etcd\n\n'
		grep -E '^go [0-9.]+$' "$gomod"
		printf '\nrequire go.etcd.io/etcd/server/v3 v%s\n\nreplace (\n' "$ETCD_VERSION"
		replaces_of "$gomod" "$ETCD_VERSION"
		printf ')\n'
	} >"$d/go.mod"
	gobuild "$d" "$ENVTEST_DIR/etcd" go.etcd.io/etcd/server/v3 -ldflags "-s -w"
}

build_crds() {
	[ -f "$CRD_DIR/.complete" ] && return 0
	local tmp=$CRD_DIR.tmp d g
	rm -rf "$tmp"
	mkdir -p "$tmp"
	# Flux: straight out of the controllers' module zips (config/crd/bases). kustomize-controller
	# watches every source kind, so all of source-controller's CRDs are installed.
	d=$(moddir "github.com/fluxcd/source-controller@v$FLUX_VERSION")
	cp "$d"/config/crd/bases/*.yaml "$tmp/"
	d=$(moddir "github.com/fluxcd/kustomize-controller@v$FLUX_VERSION")
	cp "$d"/config/crd/bases/*.yaml "$tmp/"
	# helm-controller's root module (with config/crd) is not served: generate the HelmRelease
	# CRD from its api module with controller-gen, as helm-controller's own Makefile does, at
	# the api version the code compiles against (v1.7 reshaped spec.chart).
	g=$(wrapper crdgen)
	printf 'module testbin/crdgen\n\ngo %s\n' "${GO_TOOLCHAIN#go}" >"$g/go.mod"
	printf '//go:build tools\n\npackage crdgen\n\nimport (\n\t_ "github.com/fluxcd/helm-controller/api/v2"\n\t_ "sigs.k8s.io/controller-tools/cmd/controller-gen"\n)\n' >"$g/tools.go"
	(cd "$g" && export GOTOOLCHAIN=$GO_TOOLCHAIN &&
		go get "github.com/fluxcd/helm-controller/api@v$HELM_API_VERSION" "sigs.k8s.io/controller-tools@v$CONTROLLER_TOOLS_VERSION" &&
		go mod tidy &&
		go build -o controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen &&
		./controller-gen crd:crdVersions=v1 paths=github.com/fluxcd/helm-controller/api/v2 output:crd:dir="$tmp")
	# External Secrets: the CRDs from the root module's zip (the split apis module is not served).
	d=$(moddir "github.com/external-secrets/external-secrets@v$ESO_VERSION")
	for k in externalsecrets secretstores clustersecretstores; do
		cp "$d/config/crds/bases/external-secrets.io_$k.yaml" "$tmp/"
	done
	chmod 0644 "$tmp"/*.yaml
	touch "$tmp/.complete"
	rm -rf "$CRD_DIR"
	mv "$tmp" "$CRD_DIR"
	log "CRDs: $(cd "$CRD_DIR" && ls -- *.yaml | tr '\n' ' ')"
}

build_gitea() {
	[ -x "$GITEA_DIR/gitea" ] && [ -d "$GITEA_DIR/static/templates" ] && return 0
	mkdir -p "$GITEA_DIR"
	local gomod src d tags="sqlite sqlite_unlock_notify"
	gomod=$(modfile "code.gitea.io/gitea@v$GITEA_VERSION")
	# `go install` refuses Gitea (replace lines): a wrapper with Gitea's own go, godebug and
	# replace lines. cgo for sqlite.
	d=$(wrapper gitea)
	{
		printf 'module testbin/gitea\n\n'
		grep -m1 -E '^go ' "$gomod"
		echo
		awk '/^(godebug|replace) *\($/{blk=1} blk{print; if($0 ~ /^\)/){blk=0; print ""}; next} /^(godebug|replace) /{print}' "$gomod"
		printf '\nrequire code.gitea.io/gitea v%s\n' "$GITEA_VERSION"
	} >"$d/go.mod"
	(cd "$d" && go get "code.gitea.io/gitea@v$GITEA_VERSION")
	if [ ! -x "$GITEA_DIR/gitea" ]; then
		# main.Version must be a release, or the Gitea SDK refuses the server as "development".
		CGO_ENABLED=1 gobuild "$d" "$GITEA_DIR/gitea" code.gitea.io/gitea -tags "$tags" \
			-ldflags "-s -w -X main.Version=$GITEA_VERSION -X 'main.Tags=$tags'"
	fi
	# Without the bindata tag Gitea reads templates/, options/ and public/ from disk.
	src=$(moddir "code.gitea.io/gitea@v$GITEA_VERSION")
	rm -rf "$GITEA_DIR/static.tmp"
	mkdir -p "$GITEA_DIR/static.tmp"
	cp -r "$src/templates" "$src/options" "$src/public" "$GITEA_DIR/static.tmp/"
	chmod -R u+w "$GITEA_DIR/static.tmp"
	rm -rf "$GITEA_DIR/static"
	mv "$GITEA_DIR/static.tmp" "$GITEA_DIR/static"
}

build_runner() {
	[ -x "$RUNNER_DIR/gitea-runner" ] && return 0
	mkdir -p "$RUNNER_DIR"
	local src d
	# Served by exact version only (its version list is refused, so `go install` fails):
	# build inside a copy of the module.
	src=$(moddir "gitea.com/gitea/runner@v$RUNNER_VERSION")
	d=$(wrapper runner)
	cp -r "$src/." "$d/"
	chmod -R u+w "$d"
	CGO_ENABLED=0 gobuild "$d" "$RUNNER_DIR/gitea-runner" . \
		-ldflags "-s -w -X gitea.com/gitea/runner/internal/pkg/ver.version=v$RUNNER_VERSION"
}

build_flux() {
	build_joint $(joint_of flux)
}

# The Kubernetes clients among the parts (source-controller, kustomize-controller, kwok, helm,
# promtool) share most of what they compile (k8s.io/api, client-go, apimachinery,
# controller-runtime, gRPC, OpenTelemetry, ...), but each module pins its own versions, so
# built one by one they compiled three versions of the Kubernetes libraries: 3,861 packages.
# One wrapper module requires all five and `go build` links them together from one
# dependency set (Go's minimal version selection: each dependency at the newest version any
# of them asks for): 2,642 packages instead of 4,519 one by one; 544 s cold on 2 cores
# (2026-12-07, an empty build cache), where one by one they took 1,619-2,042 s on the fresh
# machines of that day (benchmarks/README.md).
# The wrapper is the same whichever binaries a run asks for, so a later run (make demo's
# parts first, make test's next) compiles only what the earlier one did not. Flagger (its
# Kubernetes libraries predate autoscaling/v2beta2's removal), External Secrets (an older
# controller-runtime) and the kustomize CLI (a newer kustomize/api than kustomize-controller
# pins) do not build on that set and stay on their own.
# joint_of COMPONENT: the joint build's binaries a component of this script is made of.
joint_of() {
	case $1 in
	flux) echo source-controller kustomize-controller ;;
	tools) echo helm ;;
	kwok | promtool) echo "$1" ;;
	esac
}
joint_pkg() {
	case $1 in
	source-controller) echo github.com/fluxcd/source-controller ;;
	kustomize-controller) echo github.com/fluxcd/kustomize-controller ;;
	kwok) echo sigs.k8s.io/kwok/cmd/kwok ;;
	helm) echo helm.sh/helm/v3/cmd/helm ;;
	promtool) echo github.com/prometheus/prometheus/cmd/promtool ;;
	esac
}
joint_dir() {
	case $1 in
	source-controller | kustomize-controller) echo "$FLUX_DIR" ;;
	kwok) echo "$KWOK_DIR" ;;
	helm) echo "$TOOLS_DIR" ;;
	promtool) echo "$PROMTOOL_DIR" ;;
	esac
}

# build_joint BINARY...: build the named binaries (of joint_pkg's) that are missing, in one
# `go build`, under a lock of its own (components share it).
build_joint() {
	(
		flock 8
		build_joint_locked "$@"
	) 8>"$CACHE/.lock.joint"
}
build_joint_locked() {
	local b missing=() pkgs=() d f hv p ld="-s -w" t0=$SECONDS out
	for b in "$@"; do
		[ -x "$(joint_dir "$b")/$b" ] || missing+=("$b")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	for b in "${missing[@]}"; do pkgs+=("$(joint_pkg "$b")"); done
	d=$(wrapper joint)
	{
		printf 'module testbin/joint\n\n'
		grep -m1 -E '^go ' "$(modfile "github.com/fluxcd/source-controller@v$FLUX_VERSION")"
		printf '\nrequire (\n'
		printf '\tgithub.com/fluxcd/source-controller v%s\n' "$FLUX_VERSION"
		printf '\tgithub.com/fluxcd/kustomize-controller v%s\n' "$FLUX_VERSION"
		printf '\tsigs.k8s.io/kwok v%s\n' "$KWOK_VERSION"
		printf '\thelm.sh/helm/v3 v%s\n' "$HELM_VERSION"
		printf '\tgithub.com/prometheus/prometheus v%s\n' "$PROMETHEUS_VERSION"
		printf ')\n\n'
		# The Flux controllers' own non-local replace lines (the `./api` ones dropped: the
		# root requires the published api module), once each.
		for f in source-controller kustomize-controller; do
			awk '/^replace *\($/{blk=1; next} blk{ if($0 ~ /^\)/){blk=0; next}; if($0 ~ /^[[:space:]]*(\/\/.*)?$/) next; print "replace " $0; next} /^replace /{print}' \
				"$(modfile "github.com/fluxcd/$f@v$FLUX_VERSION")" | grep -vE '=>[[:space:]]+\.' || true
		done | sed -E 's/^replace[[:space:]]+/replace /' | sort -u
		# The proxy refuses the zip of github.com/fluxcd/pkg/artifact v0.18.2/v0.18.3, which
		# source-controller v1.9.6 wants; v0.18.1 differs only by dependency bumps.
		printf 'replace github.com/fluxcd/pkg/artifact => github.com/fluxcd/pkg/artifact v0.18.1\n'
	} >"$d/go.mod"
	# As helm's own Makefile does for a release: the Kubernetes version it assumes (Capabilities
	# and lint's deprecation rules) is the client-go it is built with, not the v1.20 of an
	# unstamped build, which fails kubeVersion: ">=1.30.0-0". Harmless for the others.
	hv=$(cd "$d" && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
	[ -n "$hv" ] || { echo "testbin: no client-go version in the joint module" >&2; return 1; }
	for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$hv"
	done
	out=$BUILD/joint.out
	rm -rf "$out"
	mkdir -p "$out"
	log "building ${missing[*]} in one go build (cold, all five: ~10 min on 2 cores)"
	# remove_all_sd leaves out promtool's service discovery plugins (it never uses them here);
	# always set, so that every run compiles the shared packages alike.
	(cd "$d" && go build -tags remove_all_sd -trimpath -ldflags "$ld" -o "$out/" "${pkgs[@]}")
	for b in "${missing[@]}"; do
		mkdir -p "$(joint_dir "$b")"
		mv -f "$out/$b" "$(joint_dir "$b")/$b"
	done
	rm -rf "$out"
	log "built ${missing[*]} in $((SECONDS - t0))s"
	echo "joint(${missing[*]}) $((SECONDS - t0))s" >>"$BUILD/timings.log"
}

build_tools() {
	build_joint $(joint_of tools)
	[ -x "$TOOLS_DIR/kustomize" ] && return 0
	CGO_ENABLED=0 GOBIN="$TOOLS_DIR" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@v$KUSTOMIZE_VERSION"
}

# crds-extra: the CRDs of objects flux-webhook's manifests render only on request (an
# HTTPRoute instead of the Ingress, the monitoring kit, the CiliumNetworkPolicy on Cilium),
# straight out of the projects' module zips: no build. Only the kinds rendered and what they
# refer to, so that envtest starts fast.
build_crds-extra() {
	[ -f "$CRDS_EXTRA_DIR/.complete" ] && return 0
	local tmp=$CRDS_EXTRA_DIR.tmp d k
	rm -rf "$tmp"
	mkdir -p "$tmp"
	# gateway-api v1.7 declares go 1.27: the project's toolchain reads its zip.
	d=$(GOTOOLCHAIN=$GO_TOOLCHAIN moddir "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION")
	for k in gatewayclasses gateways httproutes referencegrants; do
		cp "$d/config/crd/standard/gateway.networking.k8s.io_$k.yaml" "$tmp/"
	done
	d=$(moddir "github.com/prometheus-operator/prometheus-operator@v$PROM_OPERATOR_VERSION")
	for k in podmonitors servicemonitors prometheusrules; do
		cp "$d/example/prometheus-operator-crd/monitoring.coreos.com_$k.yaml" "$tmp/"
	done
	d=$(moddir "github.com/cilium/cilium@v$CILIUM_VERSION")
	cp "$d/pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml" "$tmp/cilium.io_ciliumnetworkpolicies.yaml"
	chmod 0644 "$tmp"/*.yaml
	touch "$tmp/.complete"
	rm -rf "$CRDS_EXTRA_DIR"
	mv "$tmp" "$CRDS_EXTRA_DIR"
	log "extra CRDs: $(cd "$CRDS_EXTRA_DIR" && ls -- *.yaml | tr '\n' ' ')"
}

# promtool: from the joint build (build_joint).
build_promtool() {
	build_joint $(joint_of promtool)
}

# eso: External Secrets Operator's controller. `go install` refuses the root module (a replace
# line for sprig); building inside a copy of the module, as its main module, works. Cold:
# 5m37s of CPU, a 54 MB binary with the providers the tests use (18.7 CPU-minutes and 153 MB
# with every provider).
build_eso() {
	[ -x "$ESO_DIR/external-secrets" ] && [ -f "$ESO_DIR/crds/.complete" ] && return 0
	mkdir -p "$ESO_DIR"
	local src d
	src=$(moddir "github.com/external-secrets/external-secrets@v$ESO_VERSION")
	# Every CRD of the module beside the binary, in crds/: the controller watches them all
	# (generator states, push secrets, the cluster-wide kinds) and does not start without.
	if [ ! -f "$ESO_DIR/crds/.complete" ]; then
		rm -rf "$ESO_DIR/crds"
		mkdir -p "$ESO_DIR/crds"
		cp "$src"/config/crds/bases/*.yaml "$ESO_DIR/crds/"
		rm -f "$ESO_DIR/crds/kustomization.yaml"
		chmod 0644 "$ESO_DIR"/crds/*.yaml
		touch "$ESO_DIR/crds/.complete"
	fi
	[ -x "$ESO_DIR/external-secrets" ] && return 0
	d=$(wrapper eso)
	cp -r "$src/." "$d/"
	chmod -R u+w "$d"
	# Only the providers and generators the tests use are registered: ESO's register
	# packages import every cloud's SDK (AWS, Azure, GCP, Oracle, IBM, ...), most of its
	# build. The tests' stores are ESO's kubernetes provider; the controllers are ESO's own.
	cat >"$d/pkg/provider/register/register.go" <<-'GO'
		// Package register: the providers this test build of ESO serves (hack/testbin.sh).
		package register

		import (
			_ "github.com/external-secrets/external-secrets/pkg/provider/fake"
			_ "github.com/external-secrets/external-secrets/pkg/provider/kubernetes"
		)
	GO
	cat >"$d/pkg/generator/register/register.go" <<-'GO'
		// Package register: the generators this test build of ESO serves (hack/testbin.sh).
		package register

		import (
			_ "github.com/external-secrets/external-secrets/pkg/generator/fake"
			_ "github.com/external-secrets/external-secrets/pkg/generator/password"
		)
	GO
	# ESO v0.16 declares an older go: the project's toolchain builds it.
	GOTOOLCHAIN=$GO_TOOLCHAIN CGO_ENABLED=0 gobuild "$d" "$ESO_DIR/external-secrets" . -ldflags "-s -w"
	rm -rf "${d:?}"
}

# kwok: simulated nodes and pods against any API server, and its stage files (how a pod
# becomes Ready, or not), straight from its module.
build_kwok() {
	build_joint $(joint_of kwok)
	[ -d "$KWOK_DIR/stage" ] && return 0
	local src
	src=$(moddir "sigs.k8s.io/kwok@v$KWOK_VERSION")
	rm -rf "$KWOK_DIR/stage.tmp"
	cp -r "$src/kustomize/stage" "$KWOK_DIR/stage.tmp"
	chmod -R u+w "$KWOK_DIR/stage.tmp"
	rm -rf "$KWOK_DIR/stage"
	mv "$KWOK_DIR/stage.tmp" "$KWOK_DIR/stage"
}

# flagger: the canary controller (kubernetes provider: blue/green without a mesh) and its CRDs.
build_flagger() {
	[ -x "$FLAGGER_DIR/flagger" ] && [ -f "$FLAGGER_DIR/crd.yaml" ] && return 0
	mkdir -p "$FLAGGER_DIR"
	local t0=$SECONDS src
	log "building flagger from github.com/fluxcd/flagger (cold: ~3 min)"
	CGO_ENABLED=0 GOBIN="$FLAGGER_DIR" go install -trimpath -ldflags "-s -w" "github.com/fluxcd/flagger/cmd/flagger@v$FLAGGER_VERSION"
	echo "flagger $((SECONDS - t0))s" >>"$BUILD/timings.log"
	src=$(moddir "github.com/fluxcd/flagger@v$FLAGGER_VERSION")
	install -m 0644 "$src/artifacts/flagger/crd.yaml" "$FLAGGER_DIR/crd.yaml"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(envtest crds gitea runner flux tools crds-extra promtool eso kwok flagger)
export CGO_ENABLED=0
# The joint build's binaries of every component asked for, first and together.
joint=()
for c in "${components[@]}"; do
	joint+=($(joint_of "$c"))
done
[ ${#joint[@]} -eq 0 ] || build_joint "${joint[@]}" >&2
for c in "${components[@]}"; do
	case $c in
	envtest | crds | gitea | runner | flux | tools | crds-extra | promtool | eso | kwok | flagger)
		# one lock per component: two runs (two test packages, CI and a shell) build it once
		(
			flock 9
			"build_$c" >&2
		) 9>"$CACHE/.lock.$c"
		;;
	*)
		echo "testbin: unknown component $c (want envtest crds gitea runner flux tools crds-extra promtool eso kwok flagger)" >&2
		exit 2
		;;
	esac
done
print_env
