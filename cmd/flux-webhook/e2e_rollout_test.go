package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"
	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// deploymentManifest is a Deployment of replicas pods of image (0: replicas left to others,
// as for a canary's target, which Flagger scales), whose pods kwok makes Ready readyAfter
// after they start ("" at once).
func deploymentManifest(name, image string, replicas int, readyAfter string) string {
	spec := ""
	if replicas > 0 {
		spec = fmt.Sprintf("\n  replicas: %d", replicas)
	}
	annotations := ""
	if readyAfter != "" {
		annotations = fmt.Sprintf("\n      annotations:\n        %s: %q", testenv.ReadyAfterAnnotation, readyAfter)
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  labels:
    app: %[1]s
spec:%[3]s
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s%[4]s
    spec:
      containers:
      - name: %[1]s
        image: %[2]s
        ports:
        - name: http
          containerPort: 9898
`, name, image, spec, annotations)
}

// newWorkloadApp is an app whose repository holds files (deploy/...), applied into a
// namespace of its own by a Kustomization that edit shapes, the push reaching flux-webhook
// by a native webhook.
func newWorkloadApp(t *testing.T, name string, files map[string]string, edit func(*kustomizev1.Kustomization)) (*app, string) {
	t.Helper()
	ctx := t.Context()
	ns := name
	c := e2e.kube.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	repo, err := e2e.gitea.CreateRepo(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	a := &app{name: name, branch: "main", repo: repo}
	for path, content := range files {
		if err := repo.WriteFile(path, content); err != nil {
			t.Fatal(err)
		}
	}
	sha, err := repo.Commit(ctx, "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Push(ctx, "HEAD:refs/heads/main"); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &sourcev1.GitRepository{
		ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name},
		Spec: sourcev1.GitRepositorySpec{URL: repo.CloneURL, Interval: metav1.Duration{Duration: time.Hour},
			Reference: &sourcev1.GitRepositoryRef{Branch: "main"}, SecretRef: &meta.LocalObjectReference{Name: repoAuth}},
	}); err != nil {
		t.Fatal(err)
	}
	ks := &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: fluxNS, Name: name},
		Spec: kustomizev1.KustomizationSpec{
			Interval: metav1.Duration{Duration: time.Hour}, RetryInterval: &metav1.Duration{Duration: time.Hour},
			Path: "./deploy", Prune: true, TargetNamespace: ns,
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: name},
		},
	}
	if edit != nil {
		edit(ks)
	}
	if err := c.Create(ctx, ks); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "first apply of "+name, func() bool { return a.applied(t) == "main@sha1:"+sha })
	if _, err := repo.AddHook(ctx, testenv.Hook{URL: e2e.hookURL + "/hook", Secret: e2e.webhookKey}); err != nil {
		t.Fatal(err)
	}
	return a, ns
}

// rolledOut reports whether a Deployment's controller has rolled its current template out:
// every replica updated, ready and available (what Flux's health check waits for).
func rolledOut(t testing.TB, ns, name string) (bool, *appsv1.Deployment) {
	d := &appsv1.Deployment{}
	if err := e2e.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		return false, nil
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.ObservedGeneration == d.Generation && s.Replicas == want && s.UpdatedReplicas == want &&
		s.ReadyReplicas == want && s.AvailableReplicas == want, d
}

// On the real kustomize-controller with wait: true, the Kustomization's status follows the
// rollout its push made on the real Deployment controller (pods played by kwok): pending
// while the new pods are not ready, success only once the Deployment is rolled out; a push
// whose pods never become ready is a failure, with Flux's health-check message, within the
// Kustomization's timeout.
func TestRolloutHealthChecked(t *testing.T) {
	integration(t)
	name := "rollout-" + randomSuffix()
	a, ns := newWorkloadApp(t, name, map[string]string{
		"deploy/deployment.yaml": deploymentManifest("web", "registry.example/web:v1", 2, "3s"),
	}, func(ks *kustomizev1.Kustomization) {
		ks.Spec.Wait = true
		ks.Spec.Timeout = &metav1.Duration{Duration: 30 * time.Second}
	})
	if ok, _ := rolledOut(t, ns, "web"); !ok {
		t.Fatal("the first apply succeeded before its Deployment rolled out")
	}

	good := a.commit(t, "deploy/deployment.yaml", deploymentManifest("web", "registry.example/web:v2", 2, "3s"), "v2")
	// While Flux waits for the new pods, the status is pending and the Deployment is not
	// rolled out; once it says success, the Deployment is.
	var pendingWhileRolling bool
	var states []string
	var last *gitea.Status
	waitFor(t, resultWindow, "final status of the Kustomization", func() bool {
		states, last = a.states(t, good, a.context("Kustomization"))
		done, d := rolledOut(t, ns, "web")
		if slices.Equal(states, []string{"pending"}) && !done && d != nil && d.Spec.Template.Spec.Containers[0].Image == "registry.example/web:v2" {
			pendingWhileRolling = true
		}
		return len(states) > 0 && states[len(states)-1] != "pending"
	})
	if !slices.Equal(states, []string{"pending", "success"}) || last.Description != "applied main@sha1:"+good[:12] {
		t.Fatalf("Kustomization on the good push: %v %q", states, last.Description)
	}
	done, d := rolledOut(t, ns, "web")
	if !done || d.Spec.Template.Spec.Containers[0].Image != "registry.example/web:v2" {
		t.Fatalf("success posted, Deployment not rolled out: %+v", d.Status)
	}
	if !pendingWhileRolling {
		t.Fatal("never saw the status pending while the new pods were not ready")
	}
	a.waitFinal(t, good, "GitRepository", "success")

	bad := a.commit(t, "deploy/deployment.yaml", deploymentManifest("web", testenv.NeverReadyImage, 2, ""), "never ready")
	fail := a.waitFinal(t, bad, "Kustomization", "failure")
	if !strings.Contains(fail.Description, "Deployment/"+ns+"/web") {
		t.Fatalf("failure without Flux's health-check message naming the Deployment: %q", fail.Description)
	}
	t.Logf("the never-ready push: %q", fail.Description)
	if ok, _ := rolledOut(t, ns, "web"); ok {
		t.Fatal("the never-ready Deployment rolled out")
	}
}

// canaryManifests are a Deployment, its Canary (Flagger's kubernetes provider: blue/green,
// one iteration of 10 s, Flagger's shortest; one failed check rolls back) and the MetricTemplate asking the
// test's Prometheus API for the success rate of the canary's target.
func canaryManifests(image string) map[string]string {
	return map[string]string{
		"deploy/deployment.yaml": deploymentManifest("podinfo", image, 0, ""),
		"deploy/canary.yaml": `apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
spec:
  provider: kubernetes
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 60
  service:
    port: 80
    targetPort: 9898
  analysis:
    interval: 10s
    threshold: 1
    iterations: 1
    metrics:
    # Not Flagger's builtin request-success-rate, which asks the mesh's Prometheus.
    - name: success-rate
      templateRef:
        name: success-rate
      thresholdRange:
        min: 99
      interval: 1m
`,
		"deploy/metrictemplate.yaml": fmt.Sprintf(`apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: success-rate
spec:
  provider:
    type: prometheus
    address: %s
  query: success_rate{namespace="{{ namespace }}",deployment="{{ target }}"}
`, e2e.prometheus.URL),
	}
}

// podinfo is the canary's image of a version.
func podinfo(version string) string { return "example.org/podinfo:" + version }

// The real Flagger's verdict reaches each commit: a push whose metric is good is promoted,
// one whose metric is bad is rolled back, each status on its own commit, under the canary's
// own context, while the Kustomization's own status stays what Flux says (it applied both);
// a push superseded by a newer one before Flagger decided gets a warning.
func TestCanaryVerdictOnEachCommit(t *testing.T) {
	integration(t)
	name := "canary-" + randomSuffix()
	a, ns := newWorkloadApp(t, name, canaryManifests(podinfo("1.0.0")), nil)
	metric := `namespace="` + ns + `"`
	canaryContext := fmt.Sprintf("flux/%s/canary/%s/podinfo", clusterName, ns)
	canaryPhase := func() flaggerv1.CanaryPhase {
		c := &flaggerv1.Canary{}
		if err := e2e.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "podinfo"}, c); err != nil {
			return ""
		}
		return c.Status.Phase
	}
	waitFor(t, 3*time.Minute, "Flagger to initialize the canary", func() bool { return canaryPhase() == flaggerv1.CanaryPhaseInitialized })

	// canaryStatuses waits for the canary's final status on sha: its states and
	// descriptions, oldest first.
	canaryStatuses := func(sha string) ([]string, []string) {
		t.Helper()
		var states, descriptions []string
		waitFor(t, 4*time.Minute, "the canary's final status on "+sha[:12], func() bool {
			all, err := a.repo.Statuses(t.Context(), sha)
			if err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(all, func(x, y *gitea.Status) int { return int(x.ID - y.ID) })
			states, descriptions = nil, nil
			for _, s := range all {
				if s.Context == canaryContext {
					states, descriptions = append(states, string(s.State)), append(descriptions, s.Description)
				}
			}
			return len(states) > 0 && states[len(states)-1] != "pending"
		})
		t.Logf("%s on %s: %q", canaryContext, sha[:12], descriptions)
		for _, s := range states[:len(states)-1] {
			if s != "pending" {
				t.Fatalf("canary states %v: more than one final status", states)
			}
		}
		if len(states) < 2 {
			t.Fatalf("canary states %v: no pending status before the final one", states)
		}
		return states, descriptions
	}

	// A team's Deployment in the same namespace, labelled as the Kustomization's own (which
	// anyone who writes Deployments there can do), with its Canary: the Kustomization's
	// inventory does not list it, so it is never reported on the push's commits.
	intruder := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "intruder",
		Labels: map[string]string{"kustomize.toolkit.fluxcd.io/name": name, "kustomize.toolkit.fluxcd.io/namespace": fluxNS}},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "intruder"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "intruder"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "intruder", Image: "example.org/intruder:1"}}}}}}
	if err := e2e.kube.Client.Create(t.Context(), intruder); err != nil {
		t.Fatal(err)
	}
	if err := e2e.kube.Client.Create(t.Context(), &flaggerv1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "intruder"},
		Spec: flaggerv1.CanarySpec{TargetRef: flaggerv1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "intruder"},
			Service: flaggerv1.CanaryService{Port: 80}, Analysis: &flaggerv1.CanaryAnalysis{Interval: "10s", Iterations: 1}}}); err != nil {
		t.Fatal(err)
	}

	// A good metric: promoted.
	e2e.prometheus.Set(metric, 99.5)
	good := a.commit(t, "deploy/deployment.yaml", deploymentManifest("podinfo", podinfo("2.0.0"), 0, ""), "2.0.0")
	if ks := a.waitFinal(t, good, "Kustomization", "success"); ks.Description != "applied main@sha1:"+good[:12] {
		t.Fatalf("Kustomization: %q", ks.Description)
	}
	states, descriptions := canaryStatuses(good)
	if states[len(states)-1] != "success" || descriptions[len(descriptions)-1] != "promoted "+podinfo("2.0.0") {
		t.Fatalf("good push: %v %q", states, descriptions)
	}
	if !slices.ContainsFunc(descriptions, func(d string) bool { return strings.HasPrefix(d, "analysis ") && strings.HasSuffix(d, "/1") }) {
		t.Fatalf("no analysis progress among the pending statuses: %q", descriptions)
	}
	if e2e.prometheus.Asked(metric) == 0 {
		t.Fatal("Flagger never asked for the metric")
	}
	if got, _ := a.states(t, good, fmt.Sprintf("flux/%s/canary/%s/intruder", clusterName, ns)); len(got) > 0 {
		t.Fatalf("a canary the Kustomization did not apply the target of is reported: %v", got)
	}

	// A bad metric: rolled back, with Flagger's reason; the Kustomization applied it.
	e2e.prometheus.Set(metric, 50)
	bad := a.commit(t, "deploy/deployment.yaml", deploymentManifest("podinfo", podinfo("3.0.0"), 0, ""), "3.0.0")
	a.waitFinal(t, bad, "Kustomization", "success")
	states, descriptions = canaryStatuses(bad)
	if last := descriptions[len(descriptions)-1]; states[len(states)-1] != "failure" ||
		!strings.HasPrefix(last, "rolled back: ") || !strings.Contains(last, "success-rate 50.00 < 99") {
		t.Fatalf("bad push: %v %q", states, descriptions)
	}
	if canaryPhase() != flaggerv1.CanaryPhaseFailed {
		t.Fatalf("Flagger's phase %q after the rollback", canaryPhase())
	}
	// The earlier commit's statuses stand as they were.
	if got, _ := a.states(t, good, canaryContext); got[len(got)-1] != "success" {
		t.Fatalf("the promoted commit's canary status changed: %v", got)
	}

	// A push overtaken by another before Flagger decided: a warning, and the newer one's
	// verdict.
	e2e.prometheus.Set(metric, 99.9)
	overtaken := a.commit(t, "deploy/deployment.yaml", deploymentManifest("podinfo", podinfo("4.0.0"), 0, ""), "4.0.0")
	a.waitFinal(t, overtaken, "Kustomization", "success")
	if got, _ := a.states(t, overtaken, canaryContext); len(got) == 0 || slices.ContainsFunc(got, func(s string) bool { return s != "pending" }) {
		t.Fatalf("the canary on the overtaken push, before the next push: %v", got)
	}
	newer := a.commit(t, "deploy/deployment.yaml", deploymentManifest("podinfo", podinfo("5.0.0"), 0, ""), "5.0.0")
	states, descriptions = canaryStatuses(overtaken)
	if states[len(states)-1] != "warning" || descriptions[len(descriptions)-1] != "superseded by "+newer[:12] {
		t.Fatalf("overtaken push: %v %q", states, descriptions)
	}
	states, descriptions = canaryStatuses(newer)
	if states[len(states)-1] != "success" || descriptions[len(descriptions)-1] != "promoted "+podinfo("5.0.0") {
		t.Fatalf("newer push: %v %q", states, descriptions)
	}
	// Each status on its own commit: none of these commits has another's canary status.
	for _, sha := range []string{good, bad, overtaken, newer} {
		if ks, _ := a.states(t, sha, a.context("Kustomization")); !slices.Equal(ks, []string{"pending", "success"}) {
			t.Fatalf("Kustomization on %s: %v", sha[:12], ks)
		}
	}
	var primary appsv1.Deployment
	if err := e2e.kube.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "podinfo-primary"}, &primary); err != nil ||
		primary.Spec.Template.Spec.Containers[0].Image != podinfo("5.0.0") {
		t.Fatalf("the primary runs %v (%v)", primary.Spec.Template.Spec.Containers, err)
	}
}
