package enroll_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// One real Gitea and one real API server for the package.
var (
	giteaSrv *testenv.Gitea
	kube     *testenv.Kube
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if testenv.Light() {
		return m.Run()
	}
	testenv.SetLogger()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "enroll-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if giteaSrv, err = testenv.StartGitea(ctx, dir+"/gitea"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer giteaSrv.Stop()
	if kube, err = testenv.StartKube(ctx, testenv.KubeOptions{Dir: dir + "/kube"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer kube.Stop()
	return m.Run()
}

func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the real Gitea and API server (run without -short)")
	}
}
