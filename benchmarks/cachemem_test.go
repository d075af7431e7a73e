package benchmarks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// cacheResult mirrors cmd/cachemem's Result.
type cacheResult struct {
	Cache        string `json:"cache"`
	Objects      int    `json:"objects"`
	SyncMillis   int64  `json:"syncMillis"`
	HeapLive     uint64 `json:"heapLiveBytes"`
	HeapObjects  uint64 `json:"heapObjectsBytes"`
	GoTotal      uint64 `json:"goTotalBytes"`
	RSS          uint64 `json:"rssBytes"`
	RSSPeak      uint64 `json:"rssPeakBytes"`
	RSSScavenged uint64 `json:"rssScavengedBytes"`
}

var cachemem struct {
	once sync.Once
	bin  string
	err  error
}

// cachememBin builds cmd/cachemem as the service is built (static, stripped).
func cachememBin(b *testing.B) string {
	b.Helper()
	cachemem.once.Do(func() {
		cachemem.bin = filepath.Join(dir, "cachemem")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", cachemem.bin, "./cmd/cachemem")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			cachemem.err = fmt.Errorf("build cmd/cachemem: %w\n%s", err, out)
		}
	})
	if cachemem.err != nil {
		b.Fatal(cachemem.err)
	}
	return cachemem.bin
}

const mib = 1 << 20

// BenchmarkCacheMemory measures one cluster's cache of Flux objects in a process of its own
// (cmd/cachemem), at 0 objects and at each FLUX_WEBHOOK_BENCH_OBJECTS, side by side: the
// service's cache (slim: flux.CacheTransform) and a plain controller-runtime cache with
// managed fields stripped. The objects are a region cluster's (regionObject): per ten, a
// GitRepository, two HelmReleases (values, 5 releases of history, an inventory of 20) and
// seven Kustomizations (an inventory of 50, a history of 3). Metrics: RSS (after two GCs),
// its peak while the caches filled, RSS once free memory is returned to the OS, the live
// heap, and per object: the growth over the same cache at 0 objects.
func BenchmarkCacheMemory(b *testing.B) {
	needKube(b)
	bin := cachememBin(b)
	base := map[string]cacheResult{}
	for _, n := range append([]int{0}, objectCounts()...) {
		f := regionKube(b, n)
		if f.n != n {
			b.Logf("region API server holds %d objects already: objects=%d skipped (run this benchmark first)", f.n, n)
			continue
		}
		for _, mode := range []string{"slim", "plain"} {
			b.Run(fmt.Sprintf("objects=%d/cache=%s", n, mode), func(b *testing.B) {
				var r cacheResult
				for range b.N {
					args := []string{"-kubeconfig", f.kube.Kubeconfig, "-cache", mode}
					if d := os.Getenv("FLUX_WEBHOOK_BENCH_MEMPROFILES"); d != "" {
						args = append(args, "-memprofile", filepath.Join(d, fmt.Sprintf("cachemem-%d-%s.pprof", n, mode)))
					}
					cmd := exec.Command(bin, args...)
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					out, err := cmd.Output()
					if err != nil {
						b.Fatalf("cachemem: %v\n%s", err, stderr.Bytes())
					}
					if err := json.Unmarshal(out, &r); err != nil {
						b.Fatalf("cachemem answered %q: %v", out, err)
					}
				}
				if r.Objects != n {
					b.Fatalf("cache holds %d objects, want %d", r.Objects, n)
				}
				b.ReportMetric(float64(r.RSS)/mib, "rss-MiB")
				b.ReportMetric(float64(r.RSSPeak)/mib, "rss-peak-MiB")
				b.ReportMetric(float64(r.RSSScavenged)/mib, "rss-scavenged-MiB")
				b.ReportMetric(float64(r.HeapLive)/mib, "heap-live-MiB")
				b.ReportMetric(float64(r.GoTotal)/mib, "go-total-MiB")
				b.ReportMetric(float64(r.SyncMillis), "sync-ms")
				if z, ok := base[mode]; ok && n > 0 {
					b.ReportMetric((float64(r.HeapLive)-float64(z.HeapLive))/float64(n), "heap-B/obj")
					b.ReportMetric((float64(r.RSS)-float64(z.RSS))/float64(n), "rss-B/obj")
				}
				if n == 0 {
					base[mode] = r
				}
				b.Logf("%d objects, %s cache: RSS %.1f MiB (peak %.1f, scavenged %.1f), heap live %.1f MiB, Go total %.1f MiB, synced in %d ms",
					n, mode, float64(r.RSS)/mib, float64(r.RSSPeak)/mib, float64(r.RSSScavenged)/mib, float64(r.HeapLive)/mib, float64(r.GoTotal)/mib, r.SyncMillis)
			})
		}
	}
}
