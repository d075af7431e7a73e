package benchmarks

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// The service's client limits towards every cluster (--kube-qps/--kube-burst,
// --cluster-qps/--cluster-burst defaults): both sides of a comparison get them.
const (
	qps   = 50
	burst = 300
)

// Settings, from the environment so that CI can run everything small:
//
//	FLUX_WEBHOOK_BENCH_OBJECTS   Flux objects per cluster, a list (default 1000,5000); the
//	                             cache and /hook benchmarks use the largest
//	FLUX_WEBHOOK_BENCH_SERVERS   API servers the fan-out spans, a list (default 1,3)
//	FLUX_WEBHOOK_BENCH_CLUSTERS  registered clusters of BenchmarkBinaryClusters, a list
//	                             (default 10,50,200)
//	FLUX_WEBHOOK_BENCH_IDLE      how long idle requests are counted (default 1m)
//	FLUX_WEBHOOK_BENCH_MEMPROFILES  a directory: the cache benchmark writes a heap profile
//	                             of each cache there (go tool pprof)
func objectCounts() []int { return intList("FLUX_WEBHOOK_BENCH_OBJECTS", []int{1000, 5000}) }
func serverCounts() []int { return intList("FLUX_WEBHOOK_BENCH_SERVERS", []int{1, 3}) }
func maxObjects() int     { return slices.Max(objectCounts()) }

func intList(env string, def []int) []int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			panic(fmt.Sprintf("%s=%q: want a comma-separated list of positive integers", env, v))
		}
		out = append(out, n)
	}
	return out
}

// recordKey seals the request records of every cluster of the benchmarks.
const recordKey = "bench-record-key-0123456789abcdef-0123456"

func recordKeys() *credentials.Keyring {
	k := &credentials.Keyring{}
	if err := k.Set(credentials.RecordKey, recordKey); err != nil {
		panic(err)
	}
	return k
}

var dir string // holds every API server's files; removed after the run

func TestMain(m *testing.M) {
	flag.Parse()
	testenv.SetLogger()
	var err error
	if dir, err = os.MkdirTemp("", "flux-webhook-bench-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	region.stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needKube skips a benchmark when the real parts are not there (go test -short, or no
// KUBEBUILDER_ASSETS): make bench provides them.
func needKube(b *testing.B) {
	b.Helper()
	if testing.Short() {
		b.Skip("needs real API servers (run without -short)")
	}
	if _, err := testenv.Paths().RequireKube(); err != nil {
		b.Skipf("needs real API servers: %v (run make bench)", err)
	}
}

// startKubes starts n API servers with the Flux CRDs, at once.
func startKubes(b *testing.B, n int) []*testenv.Kube {
	b.Helper()
	kubes := make([]*testenv.Kube, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			d, err := os.MkdirTemp(dir, "kube-")
			if err != nil {
				errs[i] = err
				return
			}
			kubes[i], errs[i] = testenv.StartKube(context.Background(), testenv.KubeOptions{Dir: d, CRDs: true})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, k := range kubes {
				if k != nil {
					_ = k.Stop()
				}
			}
			b.Fatalf("API server %d: %v", i, err)
		}
	}
	return kubes
}

// limited returns k's admin config with the service's client limits.
func limited(k *testenv.Kube) *rest.Config {
	cfg := rest.CopyConfig(k.Config)
	cfg.QPS, cfg.Burst = qps, burst
	return cfg
}

// unlimited returns k's admin config without client-side rate limiting: for filling the
// API servers and checking results, never for what is measured.
func unlimited(k *testenv.Kube) *rest.Config {
	cfg := rest.CopyConfig(k.Config)
	cfg.QPS, cfg.Burst = -1, 0
	return cfg
}

// filled is an API server filled with objects by a generator, index after index.
type filled struct {
	kube *testenv.Kube
	gen  func(i int) client.Object
	mu   sync.Mutex
	n    int
	nss  map[string]bool
	cl   client.Client
}

func newFilled(k *testenv.Kube, gen func(int) client.Object) *filled {
	return &filled{kube: k, gen: gen, nss: map[string]bool{}}
}

// fill creates objects until the server holds n of the generator's, each with its status.
func (f *filled) fill(ctx context.Context, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n >= n {
		return nil
	}
	if f.cl == nil {
		var err error
		if f.cl, err = client.New(unlimited(f.kube), client.Options{Scheme: testenv.Scheme()}); err != nil {
			return err
		}
	}
	objs := make([]client.Object, 0, n-f.n)
	for i := f.n; i < n; i++ {
		o := f.gen(i)
		if ns := o.GetNamespace(); !f.nss[ns] {
			err := f.cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
			f.nss[ns] = true
		}
		objs = append(objs, o)
	}
	if err := createAll(ctx, f.cl, objs); err != nil {
		return err
	}
	f.n = n
	return nil
}

// createAll creates objects, then writes each one's status as its controller would, 16 at
// a time.
func createAll(ctx context.Context, cl client.Client, objs []client.Object) error {
	next := make(chan client.Object)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for o := range next {
				withStatus := o.DeepCopyObject().(client.Object)
				// An API server too busy to answer in time may have done it: tried again, a
				// create that finds the object, or a status update that conflicts, is done.
				var retried atomic.Int64
				err := try(ctx, &retried, func() error {
					err := cl.Create(ctx, o)
					if apierrors.IsAlreadyExists(err) && retried.Load() > 0 {
						return cl.Get(ctx, client.ObjectKeyFromObject(o), o)
					}
					return err
				})
				if err == nil {
					withStatus.SetResourceVersion(o.GetResourceVersion())
					retried.Store(0)
					err = try(ctx, &retried, func() error {
						err := cl.Status().Update(ctx, withStatus)
						if apierrors.IsConflict(err) && retried.Load() > 0 {
							return nil
						}
						return err
					})
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("create %T %s/%s: %w", o, o.GetNamespace(), o.GetName(), err):
					default:
					}
				}
			}
		})
	}
	for _, o := range objs {
		select {
		case next <- o:
		case err := <-errs:
			close(next)
			wg.Wait()
			return err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// startCluster runs a registered cluster on cfg, as the service runs one (cluster.NewRemote:
// the cache of the Flux kinds the service keeps, slimmed), until ctx ends, and waits until
// its caches have synced.
func startCluster(ctx context.Context, name string, cfg *rest.Config) (*cluster.Cluster, error) {
	c, err := cluster.NewRemote(name, "", cfg, recordKeys())
	if err != nil {
		return nil, err
	}
	c.Run(ctx)
	return c, waitReady(c)
}

func waitReady(c *cluster.Cluster) error {
	deadline := time.Now().Add(5 * time.Minute)
	for !c.Ready() {
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster %s: caches did not sync", c.Name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// region is the API server of the cache and /hook benchmarks: a cluster of a region, its
// Flux objects as regionObject makes them. Started on first use, stopped after the run.
var region regionServer

type regionServer struct {
	once sync.Once
	f    *filled
	err  error
}

func regionKube(b *testing.B, n int) *filled {
	b.Helper()
	needKube(b)
	region.once.Do(func() {
		d, err := os.MkdirTemp(dir, "region-")
		if err != nil {
			region.err = err
			return
		}
		k, err := testenv.StartKube(context.Background(), testenv.KubeOptions{Dir: d, CRDs: true})
		if err != nil {
			region.err = err
			return
		}
		region.f = newFilled(k, regionObject)
	})
	if region.err != nil {
		b.Fatal(region.err)
	}
	start := time.Now()
	if err := region.f.fill(b.Context(), n); err != nil {
		b.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		b.Logf("region API server filled to %d objects in %s", n, d.Round(time.Millisecond))
	}
	return region.f
}

func (r *regionServer) stop() {
	if r.f != nil {
		_ = r.f.kube.Stop()
	}
}
