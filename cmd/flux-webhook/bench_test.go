package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// BenchmarkPushToSuccessStatus measures, on the real parts, the time from `git push`
// returning to the Kustomization's success status in Gitea: the native webhook delivery,
// flux-webhook's request, source-controller's fetch, kustomize-controller's apply and the
// status post. Results and how they were taken: benchmarks/README.md.
//
//	go test ./cmd/flux-webhook -run '^$' -bench PushToSuccessStatus -benchtime 20x
func BenchmarkPushToSuccessStatus(b *testing.B) {
	if testing.Short() {
		b.Skip("needs the real parts")
	}
	a := newApp(b, fmt.Sprintf("bench-%x", time.Now().UnixNano()&0xffffff), "main")
	if _, err := a.repo.AddHook(b.Context(), testenv.Hook{URL: e2e.hookURL + "/hook", Secret: e2e.webhookKey}); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		sha := a.commit(b, "deploy/configmap.yaml", configMap(a.name, fmt.Sprint(i)), fmt.Sprint(i))
		a.waitFinal(b, sha, "Kustomization", "success")
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Milliseconds()), "p90-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
}

// BenchmarkDeliveryUnderFlood measures a legitimate delivery's latency on the real service
// (Gitea verifying the claim, the cache matching, the answer), side by side: on a quiet
// replica, and among 400 connections that bring no credentials (idle after their request
// line, trickling a body, or trickling one with a made-up signature). Each op is one
// delivery, Bearer and signed alternately.
//
//	go test ./cmd/flux-webhook -run '^$' -bench DeliveryUnderFlood -benchtime 200x
func BenchmarkDeliveryUnderFlood(b *testing.B) {
	if testing.Short() {
		b.Skip("needs the real parts")
	}
	event, token := unfollowedPush(b)
	for _, flood := range []int{0, 400} {
		b.Run(fmt.Sprintf("unauthenticated-%d", flood), func(b *testing.B) {
			lat := floodAndDeliver(b, flood, b.N, event, token)
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
