// Command demo runs flux-webhook end to end on this machine: a real Kubernetes API server
// (envtest) with Flux's CRDs and real source-/kustomize-controllers, kube-controller-manager,
// kube-scheduler and kwok (a simulated node) rolling Deployments out, a real Gitea with an
// Actions runner, and the flux-webhook binary. It pushes a commit (a new image of the
// application's Deployment, which the Kustomization health-checks), lets the example workflow
// tell /hook/<owner>/<repo> (the short form), and prints the commit statuses Flux's answer
// becomes; then it does the same with a broken manifest.
//
//	make demo            (or: eval $(hack/testbin.sh) && go run ./hack/demo [-keep])
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"code.gitea.io/sdk/gitea"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

func main() {
	keep := flag.Bool("keep", false, "keep everything running after the demo, until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *keep)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var t0 = time.Now()

func step(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, keep bool) error {
	dir, err := os.MkdirTemp("", "flux-webhook-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	testenv.SetLogger()

	step("building flux-webhook")
	bin, err := testenv.BuildFlux(ctx, dir)
	if err != nil {
		return err
	}
	step("starting kube-apiserver + etcd with the Flux and External Secrets CRDs")
	kube, err := testenv.StartKube(ctx, testenv.KubeOptions{Dir: filepath.Join(dir, "kube"), CRDs: true})
	if err != nil {
		return err
	}
	defer kube.Stop()
	step("starting Gitea and its Actions runner")
	g, err := testenv.StartGitea(ctx, filepath.Join(dir, "gitea"))
	if err != nil {
		return err
	}
	defer g.Stop()
	runner, err := testenv.StartRunner(ctx, g, filepath.Join(dir, "runner"))
	if err != nil {
		return err
	}
	defer runner.Stop()
	step("starting Flux source-controller and kustomize-controller")
	flux, err := testenv.StartFlux(ctx, kube.Kubeconfig, filepath.Join(dir, "flux"))
	if err != nil {
		return err
	}
	defer flux.Stop()
	step("starting kube-controller-manager, kube-scheduler and kwok (a simulated node): Deployments roll out")
	workloads, err := testenv.StartWorkloads(ctx, kube, filepath.Join(dir, "workloads"))
	if err != nil {
		return err
	}
	defer workloads.Stop()

	c := kube.Client
	for _, ns := range []string{"flux-system", "demo"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	giteaToken, err := g.CreateToken(ctx, "flux-webhook", "write:repository", "write:issue", "read:user", "read:package")
	if err != nil {
		return err
	}
	// What External Secrets would sync from OpenBao (each at least 32 bytes, one purpose
	// each), and Flux's credentials for the repo.
	hookKey := fmt.Sprintf("demo-hook-key-%x-0123456789abcdef", time.Now().UnixNano())
	for name, data := range map[string]map[string]string{
		"flux-webhook-hook-key": {"token": hookKey},
		"flux-webhook-record":   {"token": fmt.Sprintf("demo-record-key-%x-0123456789abcdef", time.Now().UnixNano())},
		"flux-webhook-gitea":    {"token": giteaToken},
		"gitea-auth":            {"username": g.AdminUser, "password": g.Token},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: name}, StringData: data}
		if err := c.Create(ctx, s); err != nil {
			return err
		}
	}

	ports, err := testenv.FreePorts(3)
	if err != nil {
		return err
	}
	hookURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	step("starting flux-webhook serve on %s", hookURL)
	svc, err := testenv.StartService(ctx, "flux-webhook", dir, bin, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]),
		"serve", "--kubeconfig", kube.Kubeconfig,
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--hook-key-secret", "flux-system/flux-webhook-hook-key",
		"--record-key-secret", "flux-system/flux-webhook-record",
		"--gitea-url", g.URL, "--gitea-token-secret", "flux-system/flux-webhook-gitea",
		"--cluster-name", "demo", "--log-encoding", "console")
	if err != nil {
		return err
	}
	defer svc.Stop()

	step("creating repository gitea-admin/demo-app with deploy/configmap.yaml and the example workflow")
	repo, err := g.CreateRepo(ctx, "demo-app")
	if err != nil {
		return err
	}
	step("flux-webhook token --repository %s: the token that speaks for that repository only, as its Actions secret", repo.FullName)
	out, err := exec.CommandContext(ctx, bin, "token", "--kubeconfig", kube.Kubeconfig,
		"--hook-key-secret", "flux-system/flux-webhook-hook-key",
		"--record-key-secret", "flux-system/flux-webhook-record", "--repository", repo.FullName).Output()
	if err != nil {
		return fmt.Errorf("flux-webhook token: %w", err)
	}
	hookToken := strings.TrimSpace(string(out))
	if err := repo.SetActionSecret(ctx, "FLUX_WEBHOOK_TOKEN", hookToken); err != nil {
		return err
	}
	if err := repo.SetActionVariable(ctx, "FLUX_WEBHOOK_URL", hookURL); err != nil {
		return err
	}
	workflow, err := os.ReadFile("examples/.gitea/workflows/notify-flux.yaml")
	if err != nil {
		return fmt.Errorf("run the demo from the repository root: %w", err)
	}
	commit := func(msg string, files map[string]string) (string, error) {
		for path, content := range files {
			var err error
			if content == "" {
				err = repo.Remove(path)
			} else {
				err = repo.WriteFile(path, content)
			}
			if err != nil {
				return "", err
			}
		}
		sha, err := repo.Commit(ctx, msg)
		if err != nil {
			return "", err
		}
		return sha, repo.Push(ctx, "main")
	}
	first, err := commit("app v1", map[string]string{"deploy/configmap.yaml": configMap("app", "v1"), "deploy/deployment.yaml": deployment("app", "v1")})
	if err != nil {
		return err
	}
	step("creating GitRepository and Kustomization flux-system/demo-app (interval: 1h, so only flux-webhook makes them move; a health check on Deployment demo/app)")
	if err := c.Create(ctx, &sourcev1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "demo-app"},
		Spec: sourcev1.GitRepositorySpec{URL: repo.CloneURL, Interval: metav1.Duration{Duration: time.Hour},
			Reference: &sourcev1.GitRepositoryRef{Branch: "main"}, SecretRef: &meta.LocalObjectReference{Name: "gitea-auth"}},
	}); err != nil {
		return err
	}
	if err := c.Create(ctx, &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: "demo-app"},
		Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Hour}, Path: "./deploy", Prune: true,
			TargetNamespace: "demo", SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: "GitRepository", Name: "demo-app"},
			HealthChecks: []meta.NamespacedObjectKindReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "app", Namespace: "demo"}},
			Timeout:      &metav1.Duration{Duration: time.Minute}},
	}); err != nil {
		return err
	}
	if err := waitApplied(ctx, c, "main@sha1:"+first); err != nil {
		return err
	}
	step("Flux applied the first commit %s on its own", first[:12])

	for _, change := range []struct {
		what  string
		files map[string]string
	}{
		{"push app v2 (with the workflow)", map[string]string{"deploy/configmap.yaml": configMap("app", "v2"), "deploy/deployment.yaml": deployment("app", "v2"), ".gitea/workflows/notify-flux.yaml": string(workflow)}},
		{"push a broken manifest", map[string]string{"deploy/broken.yaml": configMap("Bad_Name", "x")}},
		{"push the fix", map[string]string{"deploy/broken.yaml": ""}},
	} {
		pushed := time.Now()
		sha, err := commit(change.what, change.files)
		if err != nil {
			return err
		}
		step("%s: commit %s; the Actions runner posts to /hook/%s", change.what, sha[:12], repo.FullName)
		if err := showStatuses(ctx, repo, sha, pushed); err != nil {
			return err
		}
	}
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "app"}, cm); err == nil {
		step("in the cluster: ConfigMap demo/app value=%q", cm.Data["value"])
	}
	d := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "app"}, d); err == nil {
		step("in the cluster: Deployment demo/app image %s, %d/%d replicas available", d.Spec.Template.Spec.Containers[0].Image,
			d.Status.AvailableReplicas, d.Status.Replicas)
	}
	if keep {
		fmt.Printf("\nstill running (Ctrl-C to stop):\n  Gitea       %s (user %s, password %s)\n  kubeconfig  %s\n  /hook       %s/hook (Bearer %s)\n  log         %s\n",
			g.URL, g.AdminUser, g.AdminPassword, kube.Kubeconfig, hookURL, hookToken, svc.Log)
		<-ctx.Done()
	}
	return nil
}

func configMap(name, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  value: %q\n", name, value)
}

// deployment is the application: two replicas of image version, whose pods kwok makes
// Ready 3 s after they start, so a push's rollout is seen pending, then healthy.
func deployment(name, version string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: 2
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s
      annotations:
        %[3]s: 3s
    spec:
      containers:
      - name: %[1]s
        image: registry.example/%[1]s:%[2]s
`, name, version, testenv.ReadyAfterAnnotation)
}

func waitApplied(ctx context.Context, c client.Client, revision string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		ks := &kustomizev1.Kustomization{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "demo-app"}, ks); err == nil &&
			apimeta.IsStatusConditionTrue(ks.Status.Conditions, meta.ReadyCondition) && ks.Status.LastAppliedRevision == revision {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("flux did not apply the first commit within 2 minutes")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// showStatuses prints each commit status when it is first seen (polling Gitea every 200 ms;
// the time is since the push), until every flux/ context is final, then the combined status
// auditors read.
func showStatuses(ctx context.Context, repo *testenv.Repo, sha string, pushed time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	seen := map[int64]bool{}
	for {
		list, err := repo.Statuses(ctx, sha)
		if err != nil {
			return err
		}
		sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
		latest := map[string]*gitea.Status{}
		for _, s := range list {
			latest[s.Context] = s
			if !seen[s.ID] {
				seen[s.ID] = true
				fmt.Printf("           +%5.2fs  %-8s %s  %s\n", time.Since(pushed).Seconds(), s.State, s.Context, s.Description)
			}
		}
		done := len(latest) >= 2
		for _, s := range latest {
			done = done && s.State != gitea.StatusPending
		}
		if done {
			cs, err := repo.CombinedStatus(ctx, sha)
			if err != nil {
				return err
			}
			fmt.Printf("           combined status of %s: %s\n", sha[:12], strings.ToUpper(string(cs.State)))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("statuses of %s not final within 3 minutes", sha[:12])
		case <-time.After(200 * time.Millisecond):
		}
	}
}
