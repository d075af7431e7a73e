# flux-webhook. Every target runs with Go 1.27.4: the go command fetches that toolchain from
# the module proxy on first use (~10 s). The machine's own Go (1.26.8) has known net/http,
# crypto/tls and crypto/x509 vulnerabilities, and the Flux API modules need 1.27.
export GOTOOLCHAIN := go1.27.4
# The module proxy only: its `direct` fallback would try to reach source hosts.
export GOPROXY := $(shell go env GOPROXY | sed 's/,direct$$//')

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
# The Dockerfile builds with exactly these flags.
LDFLAGS := -s -w -X github.com/openova-io/flux-webhook/internal/version.Version=$(VERSION) \
	-X github.com/openova-io/flux-webhook/internal/version.Commit=$(COMMIT)
# grpcnotrace: gRPC (which the OpenTelemetry exporters bring) without golang.org/x/net/trace,
# whose html/template would keep every exported method in the binary (+19 MB).
TAGS := grpcnotrace
# One build configuration for all the Makefile builds: the tests, vet, the demo and the binary
# the end-to-end tests, the demo and the benchmarks run (testenv.BuildFlux) are compiled as
# `make build` compiles the binary, so a dependency compiled for one is reused by the others:
# with the go command's defaults (cgo on, full paths) a cold `make test` compiled every
# dependency twice, once for the test binaries and once for the flux-webhook binary (about 7
# minutes each on 2 cores). -buildvcs=false as the CI machines' go env has it.
export CGO_ENABLED := 0
export GOFLAGS := -trimpath -tags=$(TAGS) -buildvcs=false
FUZZTIME ?= 20s

# The real parts the tests and the demo run against (kube-apiserver, etcd, CRDs, Gitea, the
# Actions runner, Flux controllers), built once into ~/.cache/flux-webhook.
TESTBIN_ENV = $(shell hack/testbin.sh --print)
# The parts `make demo` needs, and only those (hack/testbin.sh's component names): a newcomer's
# first command builds no more than it runs.
DEMO_PARTS := envtest crds gitea runner flux kwok

.PHONY: all build test unit demo bench bench-binary bench-ci testbin fuzz fuzz-keep lint clean

all: lint test build

build:
	CGO_ENABLED=0 go build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/flux-webhook ./cmd/flux-webhook

testbin:
	hack/testbin.sh >/dev/null

## test: everything, against the real parts (cold: 37 min to build them once; then ~20 min;
## cmd/flux-webhook alone 18 min quiet, so each package gets 40)
test: testbin
	$(TESTBIN_ENV) go test -count=1 -timeout 40m ./...

## unit: the tests that need no real part
unit:
	go test -short -count=1 ./...

## demo: real API server, real Gitea and real Flux controllers on loopback: a good push, a
## broken one and its fix, each status checked against what the demo says it shows
demo:
	hack/testbin.sh $(DEMO_PARTS) >/dev/null
	$(TESTBIN_ENV) go run ./hack/demo

## bench: the figures of benchmarks/README.md on real API servers: the flux-webhook binary as
## users run it (fan-out vs a raw client-go loop, memory, API calls, registered clusters) and
## the in-process benchmarks beside it (long: see benchmarks/README.md for smaller runs)
bench: testbin
	$(TESTBIN_ENV) go test -count=1 -timeout 180m -run '^$$' -bench . -benchmem ./benchmarks

## bench-binary: the binary's benchmarks only, the figures the README quotes (BENCH=<regexp> for fewer)
bench-binary: testbin
	$(TESTBIN_ENV) go test -count=1 -timeout 120m -run '^$$' -bench '$(or $(BENCH),BenchmarkBinary)' -benchtime 1x ./benchmarks

## bench-ci: every benchmark once, at 50 objects per cluster and 2 registered clusters: proof that they run
bench-ci: testbin
	$(TESTBIN_ENV) FLUX_WEBHOOK_BENCH_OBJECTS=50 FLUX_WEBHOOK_BENCH_CLUSTERS=2 FLUX_WEBHOOK_BENCH_IDLE=5s go test -count=1 -timeout 30m -run '^$$' -bench . -benchtime 1x -benchmem ./benchmarks

## fuzz: every fuzz target for FUZZTIME each, corpus kept in testdata/fuzz
fuzz:
	hack/fuzz.sh $(FUZZTIME)

## fuzz-keep: copy new interesting inputs from the go command's fuzz cache into testdata/fuzz
fuzz-keep:
	hack/fuzz.sh --keep

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...

clean:
	rm -rf bin
