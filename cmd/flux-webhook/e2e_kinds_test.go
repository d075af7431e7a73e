package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// The service on a cluster whose Flux was installed without helm-controller (no HelmRelease
// CRD): it starts, is ready, serves the kinds the cluster has, and picks the HelmRelease
// CRD up when it is installed, without a restart.
func TestServeWithoutHelmReleaseCRD(t *testing.T) {
	integration(t)
	ctx := t.Context()
	k := testenv.NewKube(t, testenv.KubeOptions{CRDs: true, WithoutCRDs: []string{"helm.toolkit.fluxcd.io_helmreleases"}})
	if err := k.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fluxNS}}); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{hookKeySecret: firstHookKey, recordKeySecret: recordKey} {
		if err := k.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name},
			Data: map[string][]byte{"token": []byte(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	ports, err := testenv.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	health := fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	svc := testenv.NewService(t, "no-helm", e2e.bin, health+"/readyz", "serve", "--kubeconfig", k.Kubeconfig,
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--platform-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", ports[3]),
		"--namespace", fluxNS, "--hook-key-secret", fluxNS+"/"+hookKeySecret, "--record-key-secret", fluxNS+"/"+recordKeySecret,
		"--cluster-name", "no-helm", "--leader-elect=false", "--kind-discovery-interval", "1s")
	logHas := func(s string) bool { b, _ := os.ReadFile(svc.Log); return bytes.Contains(b, []byte(s)) }
	metric := func(series string) bool {
		resp, err := httpClient.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[3]))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return bytes.Contains(b, []byte(series))
	}
	waitFor(t, time.Minute, "caches synced without HelmRelease", func() bool {
		return logHas(`"cluster caches synced"`) && logHas(`"kinds":["GitRepository","OCIRepository","HelmRepository","HelmChart","Kustomization"]`)
	})
	if resp, err := httpClient.Get(health + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %v %v", resp, err)
	}
	if !metric(`flux_webhook_kind_served{cluster="no-helm",kind="Kustomization"} 1`) || metric(`kind="HelmRelease"`) {
		t.Fatal("flux_webhook_kind_served does not say which kinds the cluster serves")
	}
	file, err := testenv.CRDFile("helm.toolkit.fluxcd.io_helmreleases")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.InstallCRDs(ctx, file); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "HelmRelease picked up", func() bool {
		return logHas(`"flux kind picked up"`) && metric(`flux_webhook_kind_served{cluster="no-helm",kind="HelmRelease"} 1`)
	})
	if b, _ := os.ReadFile(svc.Log); strings.Contains(string(b), `"level":"error"`) && !strings.Contains(string(b), "leader") {
		t.Logf("log:\n%s", b)
	}
}
