package gitops_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/internal/credentials"

	"sigs.k8s.io/controller-runtime/pkg/cluster"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// One real API server (envtest, with the Flux CRDs) for the package; each test works in
// namespaces of its own.
var (
	kube  *testenv.Kube
	local *gitops.Cluster
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if testenv.Light() {
		return m.Run() // the integration tests skip themselves
	}
	testenv.SetLogger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "gitops-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	kube, err = testenv.StartKube(ctx, testenv.KubeOptions{Dir: dir, CRDs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer kube.Stop()
	c, err := cluster.New(kube.Config, func(o *cluster.Options) { o.Scheme = gitops.NewScheme() })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := gitops.SetupIndexes(ctx, c.GetFieldIndexer()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = c.Start(ctx) }()
	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	defer syncCancel()
	if !c.GetCache().WaitForCacheSync(syncCtx) {
		fmt.Fprintln(os.Stderr, "cache did not sync")
		return 1
	}
	local = gitops.NewCluster("local", "", c, recordKeys)
	go local.Watch(ctx)
	for !local.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	return m.Run()
}

// recordKey is the key the package's clusters seal their request records with.
const recordKey = "test-record-key-0123456789abcdef-0123456"

var recordKeys = func() *credentials.Keyring {
	k := &credentials.Keyring{}
	if err := k.Set(credentials.RecordKey, recordKey); err != nil {
		panic(err)
	}
	return k
}()

func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the real API server (run without -short)")
	}
}

// recorder is a StatusPoster and StatusLookup that keeps what it is given. It stands in
// for Gitea in this package, which knows nothing of Gitea; the webhook and cmd packages
// prove the same against a real Gitea.
type recorder struct {
	mu       sync.Mutex
	statuses []gitops.CommitStatus
	fail     error
}

func (r *recorder) PostStatus(_ context.Context, s gitops.CommitStatus) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.statuses = append(r.statuses, s)
	return nil
}

func (r *recorder) LatestStatus(_ context.Context, repository, sha, context string) (*gitops.Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.statuses) - 1; i >= 0; i-- {
		s := r.statuses[i]
		if s.Repository == repository && s.SHA == sha && s.Context == context {
			return &s.Status, nil
		}
	}
	return nil, nil
}

// states returns the states posted for one context of one commit, in order.
func (r *recorder) states(sha, context string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.statuses {
		if s.SHA == sha && s.Context == context {
			out = append(out, s.State)
		}
	}
	return out
}

func (r *recorder) find(sha, context string) *gitops.CommitStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.statuses) - 1; i >= 0; i-- {
		if r.statuses[i].SHA == sha && r.statuses[i].Context == context {
			s := r.statuses[i]
			return &s
		}
	}
	return nil
}

// all returns every status posted, in order.
func (r *recorder) all() []gitops.CommitStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]gitops.CommitStatus(nil), r.statuses...)
}
