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
	if _, err := a.repo.AddHook(b.Context(), testenv.Hook{URL: e2e.hookURL + "/hook", Secret: e2e.token}); err != nil {
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
