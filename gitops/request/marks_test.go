package request_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/request"
)

// A push that finishes in many clusters at once has their done marks written together: a
// few writes of its record, not one each (200 writers contending for one ConfigMap in a push
// into 200 clusters), and every cluster marked done with its own count.
func TestDoneMarksShareWrites(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	const clusters = 40
	var updates atomic.Int64
	base, err := client.NewWithWatch(fluxtest.Kube.Config, client.Options{Scheme: fluxtest.Kube.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	counting := interceptor.NewClient(base, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			updates.Add(1)
			return c.Update(ctx, o, opts...)
		},
	})
	store := &record.PushStore{Client: counting, Reader: fluxtest.Kube.Client, Namespace: fluxtest.Namespace(t)}
	p := record.Push{Request: record.Request{Repository: "org/marks", Ref: "refs/heads/main", SHA: fluxtest.NewSHA()}}
	for i := range clusters {
		p.Clusters = append(p.Clusters, record.ClusterWork{Cluster: fmt.Sprint("c", i), Matched: i})
	}
	if _, err := store.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	w := &request.Worker{Store: store}
	var wg sync.WaitGroup
	errs := make([]error, clusters)
	for i := range clusters {
		wg.Go(func() { errs[i] = w.MarkDone(ctx, p.Key(), fmt.Sprint("c", i), i) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("c%d: %v", i, err)
		}
	}
	got, err := store.Get(ctx, p.Key())
	if err != nil {
		t.Fatal(err)
	}
	for i, cw := range got.Clusters {
		if !cw.Done || cw.Requested != i {
			t.Errorf("%s: done %v, requested %d; want done, %d", cw.Cluster, cw.Done, cw.Requested, i)
		}
	}
	// One batch, or a few when a mark comes while its predecessor is being written.
	if n := updates.Load(); n > clusters/4 {
		t.Errorf("%d writes of the push record for %d clusters' marks", n, clusters)
	}
}
