package benchmarks

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// requestedWatch follows, through the API, the requestedAt of Flux objects: a metadata watch
// of each kind on each API server, without client limits (it reads the result, it is never
// measured). Await says when the last object got a value.
type requestedWatch struct {
	stop context.CancelFunc

	mu     sync.Mutex
	values map[string]string // server/resource/namespace/name → requestedAt
	want   int
	target func(string) bool
	hits   int
	done   chan struct{}
	doneAt time.Time
	last   time.Time // of the last change seen
}

// watchRequested starts watching the kinds of gvrs on every API server of kubes, and waits
// until the watches have listed what is there.
func watchRequested(b *testing.B, kubes []*testenv.Kube, gvrs ...schema.GroupVersionResource) *requestedWatch {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &requestedWatch{stop: cancel, values: map[string]string{}}
	var synced []toolscache.InformerSynced
	for i, k := range kubes {
		m, err := metadata.NewForConfig(unlimited(k))
		if err != nil {
			b.Fatal(err)
		}
		for _, gvr := range gvrs {
			inf := metadatainformer.NewFilteredMetadataInformer(m, gvr, metav1.NamespaceAll, 0, toolscache.Indexers{}, nil).Informer()
			prefix := fmt.Sprintf("%d/%s/", i, gvr.Resource)
			if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
				AddFunc:    func(o any) { w.seen(prefix, o) },
				UpdateFunc: func(_, o any) { w.seen(prefix, o) },
			}); err != nil {
				b.Fatal(err)
			}
			go inf.RunWithContext(ctx)
			synced = append(synced, inf.HasSynced)
		}
	}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Minute)
	defer scancel()
	if !toolscache.WaitForCacheSync(sctx.Done(), synced...) {
		cancel()
		b.Fatal("watching requestedAt: not synced in 5 minutes")
	}
	return w
}

func (w *requestedWatch) seen(prefix string, o any) {
	m, ok := o.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	key := prefix + m.Namespace + "/" + m.Name
	v := m.Annotations[meta.ReconcileRequestAnnotation]
	w.mu.Lock()
	defer w.mu.Unlock()
	old, had := w.values[key]
	w.values[key] = v
	w.last = time.Now()
	if w.target == nil {
		return
	}
	if had && w.target(old) {
		w.hits--
	}
	if w.target(v) {
		w.hits++
	}
	w.check()
}

func (w *requestedWatch) check() {
	if w.done != nil && w.hits >= w.want && w.doneAt.IsZero() {
		w.doneAt = time.Now()
		close(w.done)
	}
}

// lastChange returns when the watch last saw an object change.
func (w *requestedWatch) lastChange() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// current returns the requestedAt values the objects carry now.
func (w *requestedWatch) current() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]bool{}
	for _, v := range w.values {
		out[v] = true
	}
	return out
}

// expect arms the watch: Await returns once want objects carry a requestedAt for which
// target holds.
func (w *requestedWatch) expect(want int, target func(string) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want, w.target, w.hits, w.done, w.doneAt = want, target, 0, make(chan struct{}), time.Time{}
	for _, v := range w.values {
		if target(v) {
			w.hits++
		}
	}
	w.check()
}

// await waits for what expect armed, and returns when it happened.
func (w *requestedWatch) await(b *testing.B, timeout time.Duration) time.Time {
	b.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.mu.Lock()
		hits, want := w.hits, w.want
		w.mu.Unlock()
		b.Fatalf("%d of %d objects carry the requestedAt awaited after %s", hits, want, timeout)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.target = nil
	return w.doneAt
}

// newValue is a target for the next push whose requestedAt is not known in advance (the
// service's): any value the objects do not carry now.
func (w *requestedWatch) newValue() func(string) bool {
	before := w.current()
	return func(v string) bool { return v != "" && !before[v] }
}
