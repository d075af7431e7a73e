package testenv

import (
	"context"
	"fmt"
	"os"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// EnvCRDsExtra points at the CRDs of the objects flux-webhook's manifests render only on
// request: the Gateway API's HTTPRoute (with Gateway, GatewayClass, ReferenceGrant),
// prometheus-operator's PodMonitor, ServiceMonitor and PrometheusRule, and Cilium's
// CiliumNetworkPolicy (hack/testbin.sh crds-extra).
const EnvCRDsExtra = "FLUX_WEBHOOK_CRDS_EXTRA"

// RequireCRDsExtra returns the directory of the extra CRD manifests ($FLUX_WEBHOOK_CRDS_EXTRA).
func RequireCRDsExtra() (string, error) {
	return requireFiles(EnvCRDsExtra, os.Getenv(EnvCRDsExtra))
}

// InstallCRDs installs every CRD in dir into the running API server and waits until each is
// served (a few seconds).
func (k *Kube) InstallCRDs(ctx context.Context, dir string) error {
	done := make(chan error, 1)
	go func() {
		_, err := envtest.InstallCRDs(k.Config, envtest.CRDInstallOptions{
			Paths:              []string{dir},
			ErrorIfPathMissing: true,
			MaxTime:            2 * time.Minute,
		})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("install the CRDs of %s: %w", dir, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
