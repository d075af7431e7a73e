// Command demo runs flux-webhook end to end on this machine: a real Kubernetes API server
// (envtest) with Flux's CRDs and real source-/kustomize-controllers, kube-controller-manager,
// kube-scheduler and kwok (a simulated node) rolling Deployments out, a real Gitea with an
// Actions runner, and the flux-webhook binary. It pushes a commit (a new image of the
// application's Deployment, which the Kustomization health-checks), lets the example workflow
// tell /hook/<owner>/<repo> (the short form), and prints the commit statuses Flux's answer
// becomes; then it does the same with a broken manifest, and with its fix.
//
// It checks what it shows: each push's flux/ statuses are pending first, then exactly one
// final state, the one it announced (the good push success once its Deployment rolled out,
// the broken push failure carrying Flux's own message, the fix success), and the cluster
// holds what was pushed. Anything else
// makes it exit 1, after a table of every step, what it showed and how long it took.
//
//	make demo            (or: eval $(hack/testbin.sh envtest crds gitea runner flux kwok) && go run ./hack/demo [-keep])
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"code.gitea.io/sdk/gitea"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

const (
	// cluster is the demo's --cluster-name; its statuses are flux/<cluster>/<kind>/<ns>/<name>.
	cluster = "demo"
	// fluxMessagePrefix is how much of Flux's own failure message the failure status must
	// carry verbatim: enough to be Flux's words, short of where a status description is cut.
	fluxMessagePrefix = 60
	// statusesWithin bounds the wait for a push's statuses to be final: the Actions runner
	// picks the job up, then Flux fetches and applies (seconds each on a warm machine).
	statusesWithin = 3 * time.Minute
)

func main() {
	keep := flag.Bool("keep", false, "keep everything running after the demo, until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	d := &demo{start: time.Now()}
	err := d.run(ctx, *keep)
	stop()
	d.printTable(err)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demo keeps the table of what was done and shown.
type demo struct {
	start time.Time
	rows  []row
	dir   string
}

// row is one step of the table: what was done, how long it took, what the demo showed of
// it and whether that is what it said it would show.
type row struct {
	step  string
	took  time.Duration
	shown string
	check string
}

func (d *demo) say(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// do runs one setup step, timed, into the table under its label; what says more as it starts.
func (d *demo) do(label, what string, f func() error) error {
	d.say("%s", cmp.Or(what, label))
	t0 := time.Now()
	err := f()
	r := row{step: label, took: time.Since(t0), check: "done"}
	if err != nil {
		r.check = "FAILED"
	}
	d.rows = append(d.rows, r)
	return err
}

func (d *demo) run(ctx context.Context, keep bool) (err error) {
	if d.dir, err = os.MkdirTemp("", "flux-webhook-demo-"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Kept for whoever wants to know why: every process's log is in there.
			fmt.Fprintf(os.Stderr, "demo: the logs of every part are kept in %s\n", d.dir)
			return
		}
		os.RemoveAll(d.dir)
	}()
	dir := d.dir
	testenv.SetLogger()

	var bin string
	if err := d.do("build flux-webhook", "", func() (err error) { bin, err = testenv.BuildFlux(ctx, dir); return err }); err != nil {
		return err
	}
	var kube *testenv.Kube
	if err := d.do("start kube-apiserver + etcd", "start kube-apiserver + etcd with the Flux and External Secrets CRDs", func() (err error) {
		kube, err = testenv.StartKube(ctx, testenv.KubeOptions{Dir: filepath.Join(dir, "kube"), CRDs: true})
		return err
	}); err != nil {
		return err
	}
	defer kube.Stop()
	var g *testenv.Gitea
	var runner *testenv.Runner
	if err := d.do("start Gitea + Actions runner", "start Gitea and its Actions runner", func() (err error) {
		if g, err = testenv.StartGitea(ctx, filepath.Join(dir, "gitea")); err != nil {
			return err
		}
		runner, err = testenv.StartRunner(ctx, g, filepath.Join(dir, "runner"))
		return err
	}); err != nil {
		if g != nil {
			g.Stop()
		}
		return err
	}
	defer g.Stop()
	defer runner.Stop()
	var flux *testenv.Flux
	if err := d.do("start Flux controllers", "start Flux source-controller and kustomize-controller", func() (err error) {
		flux, err = testenv.StartFlux(ctx, kube.Kubeconfig, filepath.Join(dir, "flux"))
		return err
	}); err != nil {
		return err
	}
	defer flux.Stop()
	var workloads *testenv.Workloads
	if err := d.do("start kube-controller-manager, kube-scheduler, kwok", "start kube-controller-manager, kube-scheduler and kwok (a simulated node): Deployments roll out", func() (err error) {
		workloads, err = testenv.StartWorkloads(ctx, kube, filepath.Join(dir, "workloads"))
		return err
	}); err != nil {
		return err
	}
	defer workloads.Stop()

	c := kube.Client
	ports, err := testenv.FreePorts(3)
	if err != nil {
		return err
	}
	hookURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	var svc *testenv.Service
	if err := d.do("start flux-webhook serve", "start flux-webhook serve on "+hookURL+" (its Secrets as External Secrets would write them)", func() error {
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
		for name, data := range map[string]map[string]string{
			"flux-webhook-hook-key":   {"token": fmt.Sprintf("demo-hook-key-%x-0123456789abcdef", time.Now().UnixNano())},
			"flux-webhook-record-key": {"token": fmt.Sprintf("demo-record-key-%x-0123456789abcdef", time.Now().UnixNano())},
			"flux-webhook-gitea":      {"token": giteaToken},
			"gitea-auth":              {"username": g.AdminUser, "password": g.Token},
		} {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "flux-system", Name: name}, StringData: data}
			if err := c.Create(ctx, s); err != nil {
				return err
			}
		}
		svc, err = testenv.StartService(ctx, "flux-webhook", dir, bin, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]),
			"serve", "--kubeconfig", kube.Kubeconfig,
			"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"--health-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
			"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]),
			"--hook-key-secret", "flux-system/flux-webhook-hook-key",
			"--record-key-secret", "flux-system/flux-webhook-record-key",
			"--gitea-url", g.URL, "--gitea-token-secret", "flux-system/flux-webhook-gitea",
			"--cluster-name", cluster, "--log-encoding", "console")
		return err
	}); err != nil {
		return err
	}
	defer svc.Stop()

	var repo *testenv.Repo
	var hookToken string
	if err := d.do("repository + its token", "create repository gitea-admin/demo-app; flux-webhook token --repository gitea-admin/demo-app into its Actions secret", func() error {
		var err error
		if repo, err = g.CreateRepo(ctx, "demo-app"); err != nil {
			return err
		}
		// The token that speaks for that repository only, printed as the README says.
		cmd := exec.CommandContext(ctx, bin, "token", "--kubeconfig", kube.Kubeconfig,
			"--hook-key-secret", "flux-system/flux-webhook-hook-key", "--repository", repo.FullName)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("flux-webhook token: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		hookToken = strings.TrimSpace(string(out))
		if err := repo.SetActionSecret(ctx, "FLUX_WEBHOOK_TOKEN", hookToken); err != nil {
			return err
		}
		return repo.SetActionVariable(ctx, "FLUX_WEBHOOK_URL", hookURL)
	}); err != nil {
		return err
	}
	workflow, err := os.ReadFile("examples/.gitea/workflows/notify-flux.yaml")
	if err != nil {
		return fmt.Errorf("run the demo from the repository root: %w", err)
	}
	commit := func(msg string, files map[string]string) (string, error) {
		for _, path := range slices.Sorted(maps.Keys(files)) {
			var err error
			if content := files[path]; content == "" {
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
	if err := d.do("push app v1, Flux applies it", "push app v1; create GitRepository and Kustomization flux-system/demo-app (interval 1h: only flux-webhook makes them move; a health check on Deployment demo/app); Flux applies it", func() error {
		first, err := commit("app v1", map[string]string{"deploy/configmap.yaml": configMap("app", "v1"), "deploy/deployment.yaml": deployment("app", "v1")})
		if err != nil {
			return err
		}
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
		return waitApplied(ctx, c, "main@sha1:"+first)
	}); err != nil {
		return err
	}

	var failed []string
	for _, p := range pushes(string(workflow)) {
		pushed := time.Now()
		sha, err := commit(p.what, p.files)
		if err != nil {
			return err
		}
		d.say("%s: commit %s; the Actions runner posts to /hook/%s", p.what, sha[:12], repo.FullName)
		d.say("expect: %s", p.expectation())
		seen, err := showStatuses(ctx, repo, sha, pushed)
		r := row{step: p.what, took: time.Since(pushed)}
		if err != nil {
			r.shown, r.check = err.Error(), "FAILED"
			d.rows = append(d.rows, r)
			return err
		}
		ks := &kustomizev1.Kustomization{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "demo-app"}, ks); err != nil {
			return err
		}
		problems := p.check(seen, fluxMessage(ks))
		// The step took from the push to the last of Flux's answers on the commit.
		r.took, r.shown, r.check = seen.final, seen.summary(), "as announced"
		if len(problems) > 0 {
			r.check = "FAILED: " + strings.Join(problems, "; ")
			failed = append(failed, p.what+": "+strings.Join(problems, "; "))
			d.say("NOT as announced: %s", strings.Join(problems, "; "))
		}
		d.rows = append(d.rows, r)
	}

	t0 := time.Now()
	r := row{step: "in the cluster", check: "as announced"}
	cm := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "app"}, cm); err != nil {
		r.shown = err.Error()
	} else {
		r.shown = fmt.Sprintf("demo/app value=%q", cm.Data["value"])
	}
	d2 := &appsv1.Deployment{}
	image := ""
	if err := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "app"}, d2); err != nil {
		r.shown += "; " + err.Error()
	} else {
		image = d2.Spec.Template.Spec.Containers[0].Image
		r.shown += fmt.Sprintf("; Deployment demo/app image %s, %d/%d replicas available", image, d2.Status.AvailableReplicas, d2.Status.Replicas)
	}
	bad := c.Get(ctx, client.ObjectKey{Namespace: "demo", Name: "Bad_Name"}, &corev1.ConfigMap{})
	if cm.Data["value"] != "v2" || !apierrors.IsNotFound(bad) || image != appImage("app", "v2") || d2.Status.AvailableReplicas != 2 {
		r.check = "FAILED"
		failed = append(failed, "the cluster does not hold what was pushed: "+r.shown)
	}
	r.took = time.Since(t0)
	d.say("in the cluster: %s", r.shown)
	d.rows = append(d.rows, r)

	if len(failed) > 0 {
		return fmt.Errorf("what it showed is not what it said: %s", strings.Join(failed, " | "))
	}
	if keep {
		fmt.Printf("\nstill running (Ctrl-C to stop):\n  Gitea       %s (user %s, password %s)\n  kubeconfig  %s\n  /hook       %s/hook (Bearer %s)\n  log         %s\n",
			g.URL, g.AdminUser, g.AdminPassword, kube.Kubeconfig, hookURL, hookToken, svc.Log)
		<-ctx.Done()
	}
	return nil
}

// push is one push of the demo and what it announces its statuses will be.
type push struct {
	what  string
	files map[string]string // path → content; "" removes the file
	// want is each flux/ status's final state, by kind (its context is
	// flux/<cluster>/<kind>/flux-system/demo-app).
	want map[string]gitea.StatusState
	// fluxMessage: the Kustomization's failure carries Flux's own message.
	fluxMessage bool
}

func pushes(workflow string) []push {
	ok := map[string]gitea.StatusState{"gitrepository": gitea.StatusSuccess, "kustomization": gitea.StatusSuccess}
	return []push{
		{what: "push app v2 (with the workflow)", want: ok,
			files: map[string]string{"deploy/configmap.yaml": configMap("app", "v2"), "deploy/deployment.yaml": deployment("app", "v2"),
				".gitea/workflows/notify-flux.yaml": workflow}},
		{what: "push a broken manifest", fluxMessage: true,
			want:  map[string]gitea.StatusState{"gitrepository": gitea.StatusSuccess, "kustomization": gitea.StatusFailure},
			files: map[string]string{"deploy/broken.yaml": configMap("Bad_Name", "x")}},
		{what: "push the fix", want: ok, files: map[string]string{"deploy/broken.yaml": ""}},
	}
}

func statusContext(kind string) string {
	return "flux/" + cluster + "/" + kind + "/flux-system/demo-app"
}

func (p push) expectation() string {
	var parts []string
	for _, kind := range slices.Sorted(maps.Keys(p.want)) {
		s := fmt.Sprintf("%s pending, then %s", statusContext(kind), p.want[kind])
		if p.fluxMessage && p.want[kind] == gitea.StatusFailure {
			s += " with Flux's message"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// check compares what was seen with what the push announced: exactly the announced flux/
// contexts, each pending first and then one final status of the announced state, a failure
// carrying Flux's own message, and the combined status the worst of them.
func (p push) check(s seen, fluxMsg string) []string {
	var problems []string
	want := map[string]gitea.StatusState{}
	for kind, state := range p.want {
		want[statusContext(kind)] = state
	}
	for ctx := range s.history {
		if _, ok := want[ctx]; !ok && strings.HasPrefix(ctx, "flux/") {
			problems = append(problems, "unannounced status "+ctx)
		}
	}
	combined := gitea.StatusSuccess // the worst announced
	for _, ctx := range slices.Sorted(maps.Keys(want)) {
		if want[ctx] == gitea.StatusFailure {
			combined = gitea.StatusFailure
		}
		h := s.history[ctx]
		switch {
		case len(h) == 0:
			problems = append(problems, ctx+": no status")
			continue
		case h[0].State != gitea.StatusPending:
			problems = append(problems, fmt.Sprintf("%s: first %s, not pending", ctx, h[0].State))
		}
		var finals []*gitea.Status
		for _, st := range h {
			if st.State != gitea.StatusPending {
				finals = append(finals, st)
			}
		}
		if len(finals) != 1 {
			problems = append(problems, fmt.Sprintf("%s: %d final statuses, want exactly 1", ctx, len(finals)))
			continue
		}
		final := finals[0]
		if final.State != want[ctx] {
			problems = append(problems, fmt.Sprintf("%s: %s, announced %s", ctx, final.State, want[ctx]))
		}
		if p.fluxMessage && want[ctx] == gitea.StatusFailure {
			prefix := fluxMsg[:min(len(fluxMsg), fluxMessagePrefix)]
			if fluxMsg == "" || !strings.Contains(final.Description, prefix) || !strings.Contains(final.Description, "Bad_Name") {
				problems = append(problems, fmt.Sprintf("%s: %q does not carry Flux's message %q", ctx, final.Description, fluxMsg))
			}
		}
	}
	// The Actions job's own status (its curl) is in the combined status too: success.
	if s.combined != combined {
		problems = append(problems, fmt.Sprintf("combined status %s, announced %s", s.combined, combined))
	}
	return problems
}

// fluxMessage is the Kustomization's Ready message as a status description carries it
// (control characters as spaces), "" unless Ready is False.
func fluxMessage(ks *kustomizev1.Kustomization) string {
	c := apimeta.FindStatusCondition(ks.Status.Conditions, meta.ReadyCondition)
	if c == nil || c.Status != metav1.ConditionFalse {
		return ""
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, c.Message)
}

// seen is what the demo showed of one commit: every status per context, oldest first, the
// combined status, and when the last flux/ status came after the push.
type seen struct {
	history  map[string][]*gitea.Status
	combined gitea.StatusState
	final    time.Duration
}

// summary is the table's "shown" cell: each flux/ context's states and the combined status.
func (s seen) summary() string {
	var parts []string
	for _, ctx := range slices.Sorted(maps.Keys(s.history)) {
		if !strings.HasPrefix(ctx, "flux/") {
			continue
		}
		var states []string
		for _, st := range s.history[ctx] {
			states = append(states, string(st.State))
		}
		kind := strings.Split(ctx, "/")[2]
		last := s.history[ctx][len(s.history[ctx])-1]
		part := kind + " " + strings.Join(states, "→")
		if last.State == gitea.StatusFailure {
			part += fmt.Sprintf(" %q", shorten(last.Description, 36))
		}
		parts = append(parts, part)
	}
	return fmt.Sprintf("%s; combined %s", strings.Join(parts, ", "), s.combined)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func configMap(name, value string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  value: %q\n", name, value)
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
// the time is since the push), until at least two flux/ contexts are there and every
// context is final, then the combined status auditors read.
func showStatuses(ctx context.Context, repo *testenv.Repo, sha string, pushed time.Time) (seen, error) {
	ctx, cancel := context.WithTimeout(ctx, statusesWithin)
	defer cancel()
	s := seen{history: map[string][]*gitea.Status{}}
	known := map[int64]bool{}
	for {
		list, err := repo.Statuses(ctx, sha)
		if err != nil {
			return s, err
		}
		sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
		latest := map[string]*gitea.Status{}
		flux := 0
		for _, st := range list {
			if _, ok := latest[st.Context]; !ok && strings.HasPrefix(st.Context, "flux/") {
				flux++
			}
			latest[st.Context] = st
			if known[st.ID] {
				continue
			}
			known[st.ID] = true
			s.history[st.Context] = append(s.history[st.Context], st)
			at := time.Since(pushed)
			if strings.HasPrefix(st.Context, "flux/") && st.State != gitea.StatusPending {
				s.final = at
			}
			fmt.Printf("           +%5.2fs  %-8s %s  %s\n", at.Seconds(), st.State, st.Context, st.Description)
		}
		done := flux >= 2
		for _, st := range latest {
			done = done && st.State != gitea.StatusPending
		}
		if done {
			cs, err := repo.CombinedStatus(ctx, sha)
			if err != nil {
				return s, err
			}
			s.combined = cs.State
			fmt.Printf("           combined status of %s: %s\n", sha[:12], strings.ToUpper(string(cs.State)))
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("statuses of %s not final within %s", sha[:12], statusesWithin)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// printTable prints every step, how long it took, what it showed and whether that is what
// the demo said it would show.
func (d *demo) printTable(err error) {
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "STEP\tTOOK\tSHOWN\tCHECK")
	for _, r := range d.rows {
		fmt.Fprintf(w, "%s\t%.1fs\t%s\t%s\n", r.step, r.took.Seconds(), r.shown, r.check)
	}
	verdict := "every status as announced"
	if err != nil {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "total\t%.1fs\t\t%s\n", time.Since(d.start).Seconds(), verdict)
	w.Flush()
}

// deployment is the application: two replicas of its image at version, whose pods kwok
// makes Ready 3 s after they start, so a push's rollout is seen pending, then healthy.
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
        image: %[2]s
`, name, appImage(name, version), testenv.ReadyAfterAnnotation)
}

func appImage(name, version string) string { return "registry.example/" + name + ":" + version }
