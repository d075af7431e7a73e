package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NeverReadyImage is the container image whose pods kwok runs but never makes Ready (the
// stage pod-never-ready): a Deployment of it never becomes available.
const NeverReadyImage = "never-ready"

// The simulated node and how kwok recognises it.
const (
	// KwokNode is the name of the one node kwok simulates.
	KwokNode = "kwok-node-0"
	// kwokNodeAnnotation marks the nodes kwok manages (kwok's own convention).
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
	// kwokPodCIDR is where kwok takes pod IPs from. Nothing ever connects to them: no
	// kubelet, no probes, no endpoints controller, no traffic.
	kwokPodCIDR = "10.244.0.1/24"
)

// kubeControllers are the kube-controller-manager controllers that roll Deployments out:
// Deployments make ReplicaSets, ReplicaSets make Pods, owners' deletions reach what they
// own. No node, cloud, IPAM, service-account or endpoint controller: kwok plays the nodes,
// and no traffic is ever sent.
var kubeControllers = []string{"deployment-controller", "replicaset-controller", "garbage-collector-controller"}

// Workloads makes Deployments roll out on an envtest API server: kube-controller-manager
// (the controllers above), kube-scheduler, and kwok simulating one node (KwokNode) whose
// Pods become Ready at once, except those of NeverReadyImage, which run and stay unready.
// No container ever runs; no Pod IP is ever reached.
type Workloads struct {
	Dir string

	controllers, scheduler, kwok *proc
}

// StartWorkloads starts kube-controller-manager and kube-scheduler from $KUBEBUILDER_ASSETS
// and kwok from $FLUX_WEBHOOK_KWOK against k (as its admin, loopback only), creates the
// node kwok manages and waits until it is Ready. Logs: dir/kube-controller-manager.log,
// dir/kube-scheduler.log, dir/kwok.log.
func StartWorkloads(ctx context.Context, k *Kube, dir string) (*Workloads, error) {
	w, err := startWorkloads(ctx, k, dir)
	if err != nil {
		return nil, fmt.Errorf("start workloads: %w", err)
	}
	return w, nil
}

func startWorkloads(ctx context.Context, k *Kube, dir string) (*Workloads, error) {
	a := Paths()
	bin, err := a.RequireKubeControllers()
	if err != nil {
		return nil, err
	}
	kwokDir, err := a.RequireKwok()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("dir is empty")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	stages, err := writeKwokStages(kwokDir, dir)
	if err != nil {
		return nil, err
	}
	schedConfig := filepath.Join(dir, "kube-scheduler.yaml")
	if err := os.WriteFile(schedConfig, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
leaderElection:
  leaderElect: false
`, k.Kubeconfig)), 0o644); err != nil {
		return nil, err
	}
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	w := &Workloads{Dir: dir}
	// The admin kubeconfig: the controllers need rights over every resource they manage,
	// and the service-account key pair is the API server's own (envtest generates it in
	// its certificate directory), as a real control plane shares it.
	w.controllers, err = startProc("kube-controller-manager", filepath.Join(dir, "kube-controller-manager.log"), dir, nil,
		filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig="+k.Kubeconfig,
		"--controllers="+strings.Join(kubeControllers, ","),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+filepath.Join(k.Dir, "apiserver", "sa-signer.key"),
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[0]),
		"--cert-dir="+filepath.Join(dir, "kube-controller-manager"),
		"--v=1")
	if err != nil {
		return nil, err
	}
	w.scheduler, err = startProc("kube-scheduler", filepath.Join(dir, "kube-scheduler.log"), dir, nil,
		filepath.Join(bin, "kube-scheduler"),
		"--config="+schedConfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[1]),
		"--cert-dir="+filepath.Join(dir, "kube-scheduler"),
		"--v=1")
	if err != nil {
		w.Stop()
		return nil, err
	}
	// kwok: no server of its own (--server-address empty), only the nodes annotated for it.
	w.kwok, err = startProc("kwok", filepath.Join(dir, "kwok.log"), dir, nil,
		filepath.Join(kwokDir, "kwok"),
		"--kubeconfig="+k.Kubeconfig,
		"--config="+stages,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+kwokNodeAnnotation+"=fake",
		"--cidr="+kwokPodCIDR,
		"--node-lease-duration-seconds=0")
	if err != nil {
		w.Stop()
		return nil, err
	}
	waits := []struct {
		p     *proc
		what  string
		ready func(context.Context) error
	}{
		{w.controllers, "kube-controller-manager /healthz", func(ctx context.Context) error { return httpsOK(ctx, ports[0]) }},
		{w.scheduler, "kube-scheduler /healthz", func(ctx context.Context) error { return httpsOK(ctx, ports[1]) }},
		{w.kwok, "node " + KwokNode + " Ready", func(ctx context.Context) error { return nodeReady(ctx, k.Client) }},
	}
	for _, wt := range waits {
		if err := wt.p.waitFor(ctx, wt.what, wt.ready); err != nil {
			w.Stop()
			return nil, err
		}
	}
	return w, nil
}

// kwokStages are the stage files of kwok's own sets that play the node and its pods:
// the node made Ready at once, pods Ready at once (fast), finished Jobs completed,
// deleted pods removed.
var kwokStages = []string{
	"node/fast/node-initialize.yaml",
	"pod/fast/pod-ready.yaml",
	"pod/fast/pod-complete.yaml",
	"pod/fast/pod-delete.yaml",
}

// ReadyAfterAnnotation, on a pod template, makes its pods Ready only after the duration it
// holds ("5s"): a rollout that takes that long (the stage pod-ready-after).
const ReadyAfterAnnotation = "testenv.flux-webhook.io/ready-after"

// Stages of this package's own, beside kwok's. Each has a weight and kwok's pod-ready has
// none, so of the two kwok picks it for the pods it selects; once Running, pod-ready
// (Pending pods only) no longer matches them.
var (
	// neverReadyStage keeps a pending pod whose first container runs NeverReadyImage
	// running and unready.
	neverReadyStage = podStage("pod-never-ready", `    - key: '.spec.containers.[0].image'
      operator: 'In'
      values:
      - '`+NeverReadyImage+`'
`, "", false)
	// readyAfterStage makes a pending pod carrying ReadyAfterAnnotation Running and Ready
	// after that delay.
	readyAfterStage = podStage("pod-ready-after", `    - key: '.metadata.annotations["`+ReadyAfterAnnotation+`"]'
      operator: 'Exists'
`, `  delay:
    durationMilliseconds: 1000
    durationFrom:
      expressionFrom: '.metadata.annotations["`+ReadyAfterAnnotation+`"]'
`, true)
)

// podStage is a kwok Stage that makes the pending pods also matching selector (indented
// matchExpressions items) Running, their containers ready or not, after delay (a spec.delay
// block, or none).
func podStage(name, selector, delay string, ready bool) string {
	status := map[bool]string{true: "True", false: "False"}[ready]
	reason := ""
	if !ready {
		reason = "\n        reason: ContainersNotReady"
	}
	return fmt.Sprintf(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: %s
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  weight: 1
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Pending'
%s%s  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: %q%s
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: %q%s
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: %t
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
`, name, selector, delay, status, reason, status, reason, ready)
}

// writeKwokStages writes kwok's configuration (the stages above) to dir/kwok.yaml.
func writeKwokStages(kwokDir, dir string) (string, error) {
	var b strings.Builder
	for _, s := range kwokStages {
		data, err := os.ReadFile(filepath.Join(kwokDir, "stage", filepath.FromSlash(s)))
		if err != nil {
			return "", fmt.Errorf("kwok stage: %w", err)
		}
		b.WriteString("---\n")
		b.Write(data)
		b.WriteString("\n")
	}
	b.WriteString("---\n" + neverReadyStage + "---\n" + readyAfterStage)
	p := filepath.Join(dir, "kwok.yaml")
	return p, os.WriteFile(p, []byte(b.String()), 0o644)
}

// nodeReady creates the node kwok manages if it is missing, and succeeds once kwok made it
// Ready.
func nodeReady(ctx context.Context, c client.Client) error {
	n := &corev1.Node{}
	err := c.Get(ctx, client.ObjectKey{Name: KwokNode}, n)
	if apierrors.IsNotFound(err) {
		n = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: KwokNode,
			Annotations: map[string]string{kwokNodeAnnotation: "fake"},
			Labels:      map[string]string{"kubernetes.io/hostname": KwokNode, "type": "kwok"}}}
		err = c.Create(ctx, n)
	}
	if err != nil {
		return err
	}
	ready := false
	for _, cond := range n.Status.Conditions {
		ready = ready || cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue
	}
	if !ready {
		return errors.New("node not Ready yet")
	}
	// The API server taints a new node not-ready (admission plugin TaintNodesByCondition);
	// node-lifecycle-controller lifts the taint once the node is Ready. It is not run here
	// (it would also judge the node by leases kwok does not renew): this plays its part, or
	// no pod is ever scheduled.
	taints := slices.DeleteFunc(slices.Clone(n.Spec.Taints), func(t corev1.Taint) bool {
		return t.Key == corev1.TaintNodeNotReady
	})
	if len(taints) == len(n.Spec.Taints) {
		return nil
	}
	patch := client.MergeFrom(n.DeepCopy())
	n.Spec.Taints = taints
	if err := c.Patch(ctx, n, patch); err != nil {
		return err
	}
	return errors.New("node's not-ready taint lifted, checking again")
}

// httpsOK is one GET of https://127.0.0.1:port/healthz, the self-signed serving certificate
// of a kube component accepted (loopback only).
func httpsOK(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), nil)
	if err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // a loopback health check of a self-signed component
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

// NewWorkloads starts the workload controllers for the test in t.TempDir() (see
// StartWorkloads) and stops them in t.Cleanup.
func NewWorkloads(t testing.TB, k *Kube) *Workloads {
	t.Helper()
	w, err := StartWorkloads(t.Context(), k, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, w.Dir, "kube-controller-manager.log", "kube-scheduler.log", "kwok.log")
		}
		w.Stop()
	})
	return w
}

// Stop stops kwok, the scheduler and the controller manager.
func (w *Workloads) Stop() {
	for _, p := range []*proc{w.kwok, w.scheduler, w.controllers} {
		if p != nil {
			p.stop()
		}
	}
}
