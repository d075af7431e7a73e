// Package benchmarks measures flux-webhook on real API servers (envtest), side by side with
// what it is compared to, in one run: the fan-out of a push against a raw client-go
// merge-patch loop, the cache's memory with and without slimming, and the cost of /hook for
// a push that matches nothing. Everything is in its _test.go files and cmd/cachemem; the
// figures and the commands that produced them are in README.md.
//
//	make bench                                           # the full run
//	FLUX_WEBHOOK_BENCH_OBJECTS=50 go test ./benchmarks -run '^$' -bench . -benchtime 1x
package benchmarks
