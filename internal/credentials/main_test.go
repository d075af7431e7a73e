package credentials_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// One real API server, with the External Secrets CRDs, for the package.
var kube *testenv.Kube

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if testenv.Light() {
		return m.Run()
	}
	testenv.SetLogger()
	dir, err := os.MkdirTemp("", "credentials-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if kube, err = testenv.StartKube(context.Background(), testenv.KubeOptions{Dir: dir + "/kube", CRDs: true}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer kube.Stop()
	return m.Run()
}

func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs the real API server (run without -short)")
	}
}
