// Command cachemem builds one cluster's cache of Flux objects, as flux-webhook keeps it for
// every cluster, and prints its process's memory as JSON: run apart from the benchmark that
// spawns it (benchmarks.BenchmarkCacheMemory), so that nothing else is counted.
//
//	cachemem -kubeconfig FILE -cache slim|plain [-memprofile FILE]
//
// slim is the service's cache (cluster.NewRemote: cluster.CacheOptions, flux.CacheTransform,
// the field indexes of every kind served); plain is the same with controller-runtime's
// managed-fields stripping as the only transform.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	ctrlcluster "sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

// Result is what cachemem prints.
type Result struct {
	Cache   string `json:"cache"`
	Objects int    `json:"objects"`
	// SyncMillis is from the start to the caches synced.
	SyncMillis int64 `json:"syncMillis"`
	// HeapLive is the heap the last GC found live; HeapObjects the heap's objects, live or
	// not yet swept (runtime/metrics), both after two GCs.
	HeapLive    uint64 `json:"heapLiveBytes"`
	HeapObjects uint64 `json:"heapObjectsBytes"`
	// GoTotal is all the memory the Go runtime has mapped.
	GoTotal uint64 `json:"goTotalBytes"`
	// RSS and its peak (VmRSS, VmHWM of /proc/self/status) after the GCs; RSSScavenged is
	// VmRSS once the runtime returned free memory to the OS (debug.FreeOSMemory).
	RSS          uint64 `json:"rssBytes"`
	RSSPeak      uint64 `json:"rssPeakBytes"`
	RSSScavenged uint64 `json:"rssScavengedBytes"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	mode := flag.String("cache", "slim", "slim (the service's cache) or plain (managed fields stripped only)")
	settle := flag.Duration("settle", 2*time.Second, "wait after the caches synced, before measuring")
	profile := flag.String("memprofile", "", "also write a heap profile (every 4 KiB allocated sampled) to this file")
	flag.Parse()
	if *profile != "" {
		runtime.MemProfileRate = 4096
	}
	if err := run(*kubeconfig, *mode, *settle, *profile); err != nil {
		fmt.Fprintln(os.Stderr, "cachemem:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, mode string, settle time.Duration, profile string) error {
	log.SetLogger(logr.Discard())
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 50, 300 // the service's --cluster-qps, --cluster-burst
	keys := &credentials.Keyring{}
	if err := keys.Set(credentials.RecordKey, "cachemem-record-key-0123456789abcdef-0123"); err != nil {
		return err
	}
	var c *cluster.Cluster
	switch mode {
	case "slim":
		if c, err = cluster.NewRemote("bench", "", cfg, keys); err != nil {
			return err
		}
	case "plain":
		cc, err := ctrlcluster.New(cfg, func(o *ctrlcluster.Options) {
			o.Scheme = flux.NewScheme()
			o.Cache = cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ReaderFailOnMissingInformer: true}
		})
		if err != nil {
			return err
		}
		c = cluster.New("bench", "", cc, keys)
	default:
		return fmt.Errorf("-cache %q: want slim or plain", mode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	c.Run(ctx)
	for !c.Ready() {
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("caches did not sync")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res := Result{Cache: mode, SyncMillis: time.Since(start).Milliseconds()}
	time.Sleep(settle)
	runtime.GC()
	runtime.GC()
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
	metrics.Read(samples)
	res.HeapLive, res.HeapObjects, res.GoTotal = samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64()
	if res.RSS, res.RSSPeak, err = status(); err != nil {
		return err
	}
	debug.FreeOSMemory()
	if res.RSSScavenged, _, err = status(); err != nil {
		return err
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	// Counted last: listing from the cache copies every object.
	for _, k := range c.Kinds() {
		list := k.NewList()
		if err := c.GetCache().List(ctx, list); err != nil {
			return err
		}
		res.Objects += len(flux.Items(list))
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// status returns VmRSS and VmHWM of /proc/self/status, in bytes.
func status() (rss, peak uint64, err error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok || name != "VmRSS" && name != "VmHWM" {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", line, err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	return rss, peak, nil
}
