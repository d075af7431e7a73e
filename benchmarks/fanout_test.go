package benchmarks

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// storeNamespace holds the push records, on the first API server (the service's own).
const storeNamespace = "flux-webhook"

// fanOut is what BenchmarkFanOut's runs share: the API servers with their objects, the
// push records' store and watch.
type fanOut struct {
	kubes    []*testenv.Kube
	fills    []*filled
	check    []metadata.Interface // unlimited: reads results, never measured
	store    *record.PushStore
	watch    kubernetes.Interface // watches the push records, never measured
	workerCS kubernetes.Interface // the Worker's own client: it watches the push records
	// rawRetries counts the raw loop's patches tried again (the API server did not answer).
	rawRetries atomic.Int64
}

// try runs f up to 5 times while it fails as an API server that could not answer does
// (cluster.Unavailable), counting the retries.
func try(ctx context.Context, retries *atomic.Int64, f func() error) error {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			retries.Add(1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		if err = f(); err == nil || !cluster.Unavailable(err) {
			return err
		}
	}
	return err
}

// BenchmarkFanOut measures a push's fan-out, side by side in one run: the Worker (a push
// accepted by request.Requester, its record written, then requested by request.Worker's
// Start loop) against a raw client-go loop merge-patching requestedAt on the same objects,
// each with the service's client limits (50 QPS, 300 burst) per API server and
// request.DefaultWorkers at once per cluster. Every cluster holds one GitRepository of the
// pushed repository and N-1 Kustomizations built from it: the push feeds N objects per
// cluster.
//
// Each op starts the clusters afresh (as the service after a start) and runs, in this order:
// the Worker's first push; the raw loop (which changes every object, as Flux's status
// updates do after a reconcile); the Worker's next push, on objects that changed since it
// last wrote them. Metrics, over every cluster: worker-obj/s (first push), raw-obj/s,
// ratio = worker/raw, again-obj/s and ratio-again (next push), conflicts and
// conflicts-again (the Worker's patches answered 409), accept-ms (Requester.Accept:
// matching and the record's write); ns/op is the first push's time, from Accept to every
// cluster done.
func BenchmarkFanOut(b *testing.B) {
	needKube(b)
	servers := serverCounts()
	f := &fanOut{kubes: startKubes(b, slices.Max(servers))}
	defer func() {
		for _, k := range f.kubes {
			_ = k.Stop()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	local, err := client.New(limited(f.kubes[0]), client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	if err := local.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: storeNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	f.store = &record.PushStore{Client: local, Reader: local, Namespace: storeNamespace}
	if f.watch, err = kubernetes.NewForConfig(unlimited(f.kubes[0])); err != nil {
		b.Fatal(err)
	}
	if f.workerCS, err = kubernetes.NewForConfig(limited(f.kubes[0])); err != nil {
		b.Fatal(err)
	}
	for _, k := range f.kubes {
		f.fills = append(f.fills, newFilled(k, fanOutObject))
		m, err := metadata.NewForConfig(unlimited(k))
		if err != nil {
			b.Fatal(err)
		}
		f.check = append(f.check, m)
	}
	for _, n := range objectCounts() {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(f.fills))
		for i, fl := range f.fills {
			wg.Go(func() { errs[i] = fl.fill(ctx, n) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("%d API servers filled to %d objects each in %s", len(f.kubes), n, time.Since(start).Round(time.Millisecond))
		for _, s := range servers {
			b.Run(fmt.Sprintf("objects=%d/servers=%d", n, s), func(b *testing.B) { f.run(b, n, s) })
		}
	}
}

var (
	gitRepositories = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
	kustomizations  = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
	events          = schema.GroupVersionResource{Group: "events.k8s.io", Version: "v1", Resource: "events"}
)

// cached waits until c's cache holds the n objects of a fan-out cluster.
func cached(ctx context.Context, c *cluster.Cluster, n int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var got int
		for _, k := range c.Kinds() {
			list := k.NewList()
			if err := c.GetCache().List(ctx, list); err != nil {
				return err
			}
			got += len(flux.Items(list))
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster %s caches %d objects, want %d", c.Name, got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (f *fanOut) run(b *testing.B, n, servers int) {
	total := n * servers
	var first, again, raw, accept time.Duration
	var conflicts, conflictsAgain float64
	f.rawRetries.Store(0)
	b.ResetTimer()
	b.StopTimer()
	for i := range b.N {
		r := f.startWorker(b, n, servers)
		f.settle(b, servers, n)
		c0 := conflictCount(b)
		a, took := f.requestByWorker(b, r, servers, n, i)
		first, accept = first+took, accept+a
		conflicts += conflictCount(b) - c0
		f.settle(b, servers, n)
		raw += f.requestByRaw(b, servers, n)
		f.settle(b, servers, n)
		c0 = conflictCount(b)
		_, took = f.requestByWorker(b, r, servers, n, i)
		again += took
		conflictsAgain += conflictCount(b) - c0
		r.stop()
	}
	rate := func(d time.Duration) float64 { return float64(total*b.N) / d.Seconds() }
	per := func(d time.Duration) time.Duration { return (d / time.Duration(b.N)).Round(time.Millisecond) }
	b.ReportMetric(float64(first.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(rate(first), "worker-obj/s")
	b.ReportMetric(rate(raw), "raw-obj/s")
	b.ReportMetric(rate(first)/rate(raw), "ratio")
	b.ReportMetric(rate(again), "again-obj/s")
	b.ReportMetric(rate(again)/rate(raw), "ratio-again")
	b.ReportMetric(conflicts/float64(b.N), "conflicts")
	b.ReportMetric(conflictsAgain/float64(b.N), "conflicts-again")
	b.ReportMetric(float64(accept.Microseconds())/1000/float64(b.N), "accept-ms")
	b.ReportMetric(float64(f.rawRetries.Load())/float64(b.N), "raw-retries")
	b.Logf("%d objects (%d per cluster, %d clusters): worker %s (%.1f obj/s, accept %s, %.0f conflicts), raw %s (%.1f obj/s): ratio %.3f; "+
		"worker again %s (%.1f obj/s, %.0f conflicts): ratio %.3f",
		total, n, servers, per(first), rate(first), (accept / time.Duration(b.N)).Round(time.Microsecond), conflicts/float64(b.N),
		per(raw), rate(raw), rate(first)/rate(raw), per(again), rate(again), conflictsAgain/float64(b.N), rate(again)/rate(raw))
}

// running is a Worker on freshly started clusters, with its Requester.
type running struct {
	*request.Requester
	stop func()
}

// startWorker starts a cluster on each of the first servers API servers, as the service runs
// one (cluster.NewRemote, 50 QPS / 300 burst), waits until their caches hold the objects,
// and starts a Worker (its Start loop) over them.
func (f *fanOut) startWorker(b *testing.B, n, servers int) running {
	ctx, cancel := context.WithCancel(b.Context())
	var clusters []*cluster.Cluster
	for i, k := range f.kubes[:servers] {
		c, err := startCluster(ctx, fmt.Sprintf("c%d", i), limited(k))
		if err != nil {
			b.Fatal(err)
		}
		clusters = append(clusters, c)
		if err := cached(ctx, c, n); err != nil {
			b.Fatal(err)
		}
	}
	set := cluster.NewSet(clusters...)
	w := &request.Worker{Clusters: set, Store: f.store, Client: f.workerCS, ResultTimeout: 30 * time.Minute}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := w.Start(ctx); err != nil {
			b.Error(err)
		}
	}()
	return running{Requester: &request.Requester{Clusters: set, Store: f.store}, stop: func() {
		cancel()
		<-stopped
		for _, c := range clusters {
			c.Stop()
		}
	}}
}

// conflictCount returns how many requests of this process's clients were answered 409.
func conflictCount(b *testing.B) float64 {
	fams, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != "rest_client_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == "409" {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// settle waits until the API servers are quiet (the Event recorder posts the Worker's
// Events, at its own 50 QPS, a little after the patches), then until a client limited to
// 50 QPS has its burst back.
func (f *fanOut) settle(b *testing.B, servers, n int) {
	ctx := b.Context()
	last := -1
	for {
		count := 0
		for _, m := range f.check[:servers] {
			var l *metav1.PartialObjectMetadataList
			err := try(ctx, new(atomic.Int64), func() (err error) {
				l, err = m.Resource(events).List(ctx, metav1.ListOptions{})
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			count += len(l.Items)
		}
		if count == last {
			break
		}
		last = count
		time.Sleep(time.Second)
	}
	time.Sleep(time.Duration(min(n, burst))*time.Second/qps + 500*time.Millisecond)
}

// requestByWorker accepts a push to the platform repository and waits until the Worker has
// requested it in every cluster (its record says so), then checks every object carries its
// requestedAt. It returns how long Accept took, and how long from Accept to done.
func (f *fanOut) requestByWorker(b *testing.B, r running, servers, n, i int) (accept, took time.Duration) {
	ctx := b.Context()
	push := gitops.Push{
		Delivery: fmt.Sprintf("bench-%d-%d-%d-%d", n, servers, i, time.Now().UnixNano()), Repository: platformRepo,
		URLs: []string{"https://" + forgeHost + "/" + platformRepo + ".git", "git@" + forgeHost + ":" + platformRepo + ".git"},
		Ref:  "refs/heads/main", SHA: commit("push", n, servers, i, time.Now().UnixNano()),
	}
	key := record.Request{Repository: push.Repository, Ref: push.Ref, Before: push.Before, SHA: push.SHA}.PushKey()
	watchRecord := func() watch.Interface {
		var w watch.Interface
		err := try(ctx, new(atomic.Int64), func() (err error) {
			w, err = f.watch.CoreV1().ConfigMaps(storeNamespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + record.RecordName(key)})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		return w
	}
	w := watchRecord()
	b.StartTimer()
	start := time.Now()
	res, err := r.Accept(ctx, push)
	accept = time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	for took == 0 {
		ev, ok := <-w.ResultChan()
		if !ok || ev.Type == watch.Error {
			w.Stop()
			w = watchRecord() // closed by the API server: watched again, from the record as it is
			continue
		}
		cm, ok := ev.Object.(*corev1.ConfigMap)
		if !ok {
			b.Fatalf("watching the push record: %v", ev.Object)
		}
		rec, err := record.Decode(cm)
		if err != nil {
			b.Fatal(err)
		}
		if len(rec.Clusters) == servers && !slices.ContainsFunc(rec.Clusters, func(c record.ClusterWork) bool { return !c.Done }) {
			took = time.Since(start)
		}
	}
	w.Stop()
	b.StopTimer()
	if queued := len(res.Targets); queued != servers*n {
		b.Fatalf("push matched %d objects, want %d", queued, servers*n)
	}
	f.verify(b, servers, n, res.Token)
	return accept, took
}

// requestByRaw merge-patches requestedAt on every object of the push, sources first, with
// a client of the service's limits per API server and request.DefaultWorkers at once per
// cluster, the clusters at once: what the Worker does, without flux-webhook.
func (f *fanOut) requestByRaw(b *testing.B, servers, n int) time.Duration {
	ctx := b.Context()
	token := time.Now().UTC().Format(time.RFC3339Nano)
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, meta.ReconcileRequestAnnotation, token)
	clients := make([]metadata.Interface, servers)
	for i := range servers {
		var err error
		if clients[i], err = metadata.NewForConfig(limited(f.kubes[i])); err != nil {
			b.Fatal(err)
		}
	}
	errs := make([]error, servers)
	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range servers {
		wg.Go(func() { errs[c] = rawPatch(ctx, clients[c], n, patch, &f.rawRetries) })
	}
	wg.Wait()
	took := time.Since(start)
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	f.verify(b, servers, n, token)
	return took
}

// rawPatch patches the n objects of a fan-out cluster; a patch the API server could not
// answer (cluster.Unavailable: 429, 5xx, a timeout) is tried again, up to 5 times, counted
// in retries.
func rawPatch(ctx context.Context, m metadata.Interface, n int, patch []byte, retries *atomic.Int64) error {
	one := func(i int) error {
		o := fanOutObject(i)
		gvr := kustomizations
		if i == 0 {
			gvr = gitRepositories
		}
		return try(ctx, retries, func() error {
			_, err := m.Resource(gvr).Namespace(o.GetNamespace()).Patch(ctx, o.GetName(), types.MergePatchType, patch, metav1.PatchOptions{})
			return err
		})
	}
	// Sources first: the GitRepository, then what is built from it.
	if err := one(0); err != nil {
		return err
	}
	next := make(chan int)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range request.DefaultWorkers {
		wg.Go(func() {
			for i := range next {
				if err := one(i); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
				}
			}
		})
	}
	for i := 1; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// verify checks that every object of the first servers clusters carries requestedAt token.
func (f *fanOut) verify(b *testing.B, servers, n int, token string) {
	for c, m := range f.check[:servers] {
		got := 0
		for _, gvr := range []schema.GroupVersionResource{gitRepositories, kustomizations} {
			var l *metav1.PartialObjectMetadataList
			err := try(b.Context(), new(atomic.Int64), func() (err error) {
				l, err = m.Resource(gvr).List(b.Context(), metav1.ListOptions{})
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			for _, o := range l.Items {
				if o.Annotations[meta.ReconcileRequestAnnotation] == token {
					got++
				}
			}
		}
		if got != n {
			b.Fatalf("cluster c%d: %d objects carry requestedAt %s, want %d", c, got, token, n)
		}
	}
}
