package jobs_test

import (
	"os"
	"testing"

	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
)

// One real API server for the package (fluxtest.Kube), with its local cluster; each test
// works in namespaces of its own.
func TestMain(m *testing.M) { os.Exit(fluxtest.Main(m)) }
