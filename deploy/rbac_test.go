package deploy_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"
	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/jobs"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// The RBAC of deploy/base (which the chart renders identically, TestChartMatchesKustomize)
// is sufficient and minimal, shown with the real binary as the rendered ServiceAccount:
//
//   - sufficient: configured as the rendered Deployment configures it, its key and token
//     Secrets written as External Secrets writes them (owned by the rendered ExternalSecrets,
//     whose status says Ready as ESO's does), a kubeconfig Secret it must refuse in the
//     namespace of registered clusters, and the rendered admission policy in force, the
//     service becomes ready, records the refusal of the kubeconfig Secret as an Event, and
//     again as a series of it when the Secret comes again unchanged (a relist: the test's API
//     proxy expires the watch), and carries two pushes (native Gitea webhooks, signed with
//     the webhook key) through the whole pipeline — /hook, a reconcile request on a
//     GitRepository, a HelmChart, a Kustomization and a HelmRelease (each patch made to
//     conflict, so that the re-read happens), pending statuses in Gitea, Flux's answer written
//     as Flux writes it, success statuses in Gitea — then a push delivered only once the
//     branch moved on (superseded: a push record, worked by the leader's backlog, warning
//     statuses in Gitea), then one
//     platform reconcile of the same objects and of an OCIRepository and the Kustomization
//     built from it (POST /api/v1/reconcile on the platform port with the platform token,
//     each patch made to conflict, an hour-old job pruned, Flux's answer, GET
//     /api/v1/reconcile/<id> until every target succeeded), and nothing it does is refused
//     (the admission policy included: its patches are only the annotations the policy
//     allows);
//   - minimal: for every permission the rules grant (each verb of each resource, each
//     resource name apart), the same run without just that permission has the service
//     refused exactly that, observably: its log shows the API server's "cannot <verb>
//     resource <resource>" for it, or, where the service does not log it (the pruning of
//     old platform jobs), the API server's answer to it does and the pipeline fails (the
//     old job stays). (Where the pipeline needs it, it also stalls there: not ready, no
//     leader and so no status, a target of /hook in error, a platform request answered
//     500.)
//
// The chart without the platform API (platformApi.enabled=false) grants less; the hook
// pipeline is shown to need no more.
func TestRBACSufficientAndMinimal(t *testing.T) {
	integration(t)
	proxy := startAPIProxy(t, env.kube.Config)
	giteaToken, err := env.gitea.CreateToken(t.Context(), "rbac-"+randomHex(3), "write:repository", "write:issue")
	if err != nil {
		t.Fatal(err)
	}
	r := newRBACRun(t, decode(t, kustomize(t, "deploy/base")), proxy, giteaToken)
	rules := r.rules(t)
	atoms := atomsOfAll(rules)
	t.Cleanup(func() { r.removeAdmission(t) })

	// Streaming lists (client-go's WatchListClient, on by default) need only watch; list is
	// what a client falls back to without them (an API server before 1.32, a failed
	// watch-list), so both ways are shown sufficient, and list necessary in the second.
	for _, streaming := range []bool{true, false} {
		name := "sufficient/streaming-lists"
		if !streaming {
			name = "sufficient/list-then-watch"
		}
		t.Run(name, func(t *testing.T) {
			res := r.run(t, rules, nil, streaming)
			res.sufficient(t)
			t.Logf("a refused cluster's Event series, three pushes (one overtaken) of 4 objects and a platform reconcile of 6, to success in %s", res.took.Round(time.Millisecond))
		})
		if t.Failed() {
			return
		}
	}
	t.Run("sufficient/chart-without-platform-api", func(t *testing.T) {
		values := valuesFile(t, `{"platformApi": {"enabled": false}}`)
		off := newRBACRun(t, decode(t, helmTemplate(t, catalystNS, values)), proxy, giteaToken)
		if _, ok := off.container.environment(t, "x")[platformTokenEnv]; ok {
			t.Fatalf("the chart without the platform API sets %s", platformTokenEnv)
		}
		offRules := off.rules(t)
		res := off.run(t, offRules, nil, true)
		res.sufficient(t)
		t.Logf("three pushes (one overtaken), 4 objects each, to success in %s, with %d permissions instead of %d",
			res.took.Round(time.Millisecond), len(atomsOfAll(offRules)), len(atoms))
	})

	for _, a := range atoms {
		t.Run("without/"+a.String(), func(t *testing.T) {
			streaming := a.verb != "list"
			less := maps.Clone(rules)
			less[a.role] = rulesWithout(atomsOf(a.role, rules[a.role]), a)
			res := r.run(t, less, &a, streaming)
			if !res.refused {
				t.Fatalf("the service was never refused %s (pipeline: %v): the rule is not needed", a, errOrOK(res.err))
			}
			outcome := "stopped there"
			if res.finished {
				outcome = fmt.Sprint("pipeline: ", errOrOK(res.err))
			}
			t.Logf("refused after %s: %s (%s)", res.took.Round(time.Millisecond), res.refusal, outcome)
		})
	}
}

func errOrOK(err error) any {
	if err == nil {
		return "succeeded"
	}
	return err
}

// sufficient fails t unless the run succeeded without the service being refused anything.
func (res runResult) sufficient(t *testing.T) {
	t.Helper()
	if res.err != nil {
		t.Fatalf("pipeline as the rendered ServiceAccount: %v", res.err)
	}
	if loc := regexp.MustCompile(`(?i)forbidden`).FindIndex(res.log); loc != nil {
		t.Fatalf("the service was refused something: %s", lineAt(res.log, loc[0]))
	}
	if len(res.apiRefusals) > 0 {
		t.Fatalf("the API server refused the service: %q", res.apiRefusals)
	}
}

// atom is one permission: a verb on a resource (of one name, where the rule names some),
// granted by one of the rendered roles.
type atom struct {
	role                        string // the role's key: ClusterRole, or Role/<name>
	group, resource, verb, name string
}

func (a atom) String() string {
	s := a.verb + "-" + a.resource
	if a.group != "" {
		s += "." + a.group
	}
	if a.name != "" {
		s += "-" + a.name
	}
	if a.role != "ClusterRole" {
		s += "-in-" + strings.TrimPrefix(a.role, "Role/")
	}
	return s
}

func rulesOf(t *testing.T, o *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	var r struct {
		Rules []rbacv1.PolicyRule `json:"rules"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
		t.Fatal(err)
	}
	return r.Rules
}

// atomsOfAll returns the atoms of every role, in a stable order.
func atomsOfAll(rules map[string][]rbacv1.PolicyRule) []atom {
	var out []atom
	for _, k := range sortedKeys(rules) {
		out = append(out, atomsOf(k, rules[k])...)
	}
	return out
}

func atomsOf(role string, rules []rbacv1.PolicyRule) []atom {
	var out []atom
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					for _, n := range names {
						out = append(out, atom{role, g, res, v, n})
					}
				}
			}
		}
	}
	return out
}

// rulesWithout grants every atom but one, one rule each.
func rulesWithout(atoms []atom, drop atom) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, a := range atoms {
		if a == drop {
			continue
		}
		r := rbacv1.PolicyRule{APIGroups: []string{a.group}, Resources: []string{a.resource}, Verbs: []string{a.verb}}
		if a.name != "" {
			r.ResourceNames = []string{a.name}
		}
		out = append(out, r)
	}
	return out
}

// refusal is the API server's message when it refuses a, as it appears in the service's log
// (quotes escaped or not).
func refusal(a atom, user string) *regexp.Regexp {
	q := func(s string) string { return `\\?"` + regexp.QuoteMeta(s) + `\\?"` }
	re := ""
	if a.name != "" {
		re = q(a.name) + ` is forbidden: `
	}
	re += `User ` + q(user) + ` cannot ` + a.verb + ` resource ` + q(a.resource) + ` in API group ` + q(a.group)
	return regexp.MustCompile(re)
}

// container is what the rendered Deployment runs.
type container struct {
	args []string
	env  []corev1.EnvVar
}

func containerOf(t *testing.T, dep *unstructured.Unstructured) container {
	t.Helper()
	var d struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(dep.Object, &d); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	return container{args: c.Args, env: c.Env}
}

// environment resolves the container's environment in namespace ns as the kubelet does:
// the downward API's metadata.namespace, and $(VAR) of the variables before.
func (c container) environment(t *testing.T, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			v = ns
		default:
			t.Fatalf("env %s: the test resolves only metadata.namespace", e.Name)
		}
		out[e.Name] = ref.ReplaceAllStringFunc(v, func(s string) string {
			if x, ok := out[s[2:len(s)-1]]; ok {
				return x
			}
			return s
		})
	}
	return out
}

// The Deployment's settings naming the key and token Secrets (NAMESPACE/NAME), the service's
// namespace and the registered clusters' (the contract's flags, as FLUX_WEBHOOK_<FLAG>).
const (
	hookKeyEnv       = "FLUX_WEBHOOK_HOOK_KEY_SECRET"
	webhookKeyEnv    = "FLUX_WEBHOOK_WEBHOOK_KEY_SECRET"
	giteaTokenEnv    = "FLUX_WEBHOOK_GITEA_TOKEN_SECRET"
	recordKeyEnv     = "FLUX_WEBHOOK_RECORD_KEY_SECRET"
	platformTokenEnv = "FLUX_WEBHOOK_PLATFORM_TOKEN_SECRET"
	namespaceEnv     = "FLUX_WEBHOOK_NAMESPACE"
	clustersNSEnv    = "FLUX_WEBHOOK_CLUSTER_SECRETS_NAMESPACE"
)

// coalesceWindow is gitops' (record.go): a push within it of an object's last patch is
// coalesced with that one, requested later by the leader.
const coalesceWindow = 2 * time.Second

// rbacRun runs the service as the rendered ServiceAccount, one namespace per run.
type rbacRun struct {
	proxy           *apiProxy
	rbac            []*unstructured.Unstructured
	admission       []*unstructured.Unstructured // the policy and its binding, cluster-wide
	externalSecrets []*unstructured.Unstructured
	sa              string
	container       container
	giteaToken      string

	mu sync.Mutex
}

// rbacRuns numbers the runs' namespaces.
var rbacRuns atomic.Int32

// newRBACRun runs what objs render: their Deployment's container, RBAC and ExternalSecrets.
func newRBACRun(t *testing.T, objs []*unstructured.Unstructured, proxy *apiProxy, giteaToken string) *rbacRun {
	t.Helper()
	dep := findKind(t, objs, "Deployment")
	sa, _, _ := unstructured.NestedString(dep.Object, "spec", "template", "spec", "serviceAccountName")
	r := &rbacRun{proxy: proxy, sa: sa, container: containerOf(t, dep), giteaToken: giteaToken}
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			r.rbac = append(r.rbac, o)
		case "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			r.admission = append(r.admission, o)
		case "ExternalSecret":
			r.externalSecrets = append(r.externalSecrets, o)
		}
	}
	return r
}

// rules are the rendered roles' rules, by key: ClusterRole, Role/<name> (the service's
// namespace's and the registered clusters' namespace's).
func (r *rbacRun) rules(t *testing.T) map[string][]rbacv1.PolicyRule {
	t.Helper()
	out := map[string][]rbacv1.PolicyRule{}
	for _, o := range r.rbac {
		switch o.GetKind() {
		case "ClusterRole":
			out["ClusterRole"] = rulesOf(t, o)
		case "Role":
			out["Role/"+o.GetName()] = rulesOf(t, o)
		}
	}
	if len(out) != 3 {
		t.Fatalf("rendered roles %v: want the ClusterRole, the service's Role and the registered clusters' Role", sortedKeys(out))
	}
	return out
}

// roleNamespace is where a role's atoms are granted: the run's namespace, or the run's
// registered clusters' namespace for the Role that lives there.
func (r *rbacRun) roleNamespace(key, ns, clustersNS string) string {
	for _, o := range r.rbac {
		if o.GetKind() == "Role" && "Role/"+o.GetName() == key && o.GetNamespace() != "" {
			return clustersNS
		}
	}
	if key == "ClusterRole" {
		return ""
	}
	return ns
}

// removeAdmission deletes the admission policy the runs applied.
func (r *rbacRun) removeAdmission(t *testing.T) {
	for _, o := range r.admission {
		if err := env.kube.Client.Delete(context.Background(), o); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete %s: %v", o.GetKind(), err)
		}
	}
}

type runResult struct {
	err         error         // the pipeline's, nil when it succeeded
	finished    bool          // the pipeline ended (else the run was stopped at the refusal)
	refused     bool          // the log, or the API server's answer, shows the refusal of the removed atom
	refusal     string        // where, and that line
	took        time.Duration // until success or the refusal
	log         []byte
	apiRefusals []string // every refusal the API server answered the service
}

// run applies the RBAC with the given rules and drives the pipeline. With removed, it
// stops as soon as the service's log shows that atom refused.
func (r *rbacRun) run(t *testing.T, rules map[string][]rbacv1.PolicyRule, removed *atom, streaming bool) runResult {
	t.Helper()
	n := rbacRuns.Add(1)
	ns, apps, clustersNS := fmt.Sprintf("rbac-%02d", n), fmt.Sprintf("rbac-apps-%02d", n), fmt.Sprintf("rbac-%02d-clusters", n)
	user := "system:serviceaccount:" + ns + ":" + r.sa
	c := env.kube.Client
	ctx := t.Context()
	for _, name := range []string{ns, apps, clustersNS} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}

	// The rendered RBAC in this run's namespaces, with the rules of this run: the registered
	// clusters' Role and RoleBinding in their namespace, the rest in the service's.
	for _, o := range r.rbac {
		o = o.DeepCopy()
		if namespaced(t, o) {
			if o.GetNamespace() != "" {
				o.SetNamespace(clustersNS)
			} else {
				o.SetNamespace(ns)
			}
		}
		switch o.GetKind() {
		case "Role":
			setRules(t, o, rules["Role/"+o.GetName()])
		case "ClusterRole":
			setRules(t, o, rules["ClusterRole"])
		case "RoleBinding", "ClusterRoleBinding":
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			for _, s := range subjects {
				s.(map[string]any)["namespace"] = ns
			}
			_ = unstructured.SetNestedSlice(o.Object, subjects, "subjects")
		}
		apply(t, c, o, false)
	}
	// The admission policy, judging the ServiceAccount by its name in every run's namespace.
	for _, o := range r.admission {
		apply(t, c, o, false)
	}
	r.waitAuthorized(t, ns, clustersNS, user, rules)

	// The service's settings, as the rendered Deployment makes them in ns, the registered
	// clusters in this run's namespace of them.
	envs := r.container.environment(t, ns)
	if _, ok := envs[clustersNSEnv]; !ok || envs[namespaceEnv] != ns {
		t.Fatalf("the Deployment sets %s=%q and %s=%q (set: %v)", namespaceEnv, envs[namespaceEnv], clustersNSEnv, envs[clustersNSEnv], ok)
	}
	envs[clustersNSEnv] = clustersNS
	// The keys and tokens as External Secrets writes them, from the rendered ExternalSecrets:
	// each at least 32 bytes, no two alike.
	webhookKey, platformToken := "webhook-"+randomHex(24), "platform-"+randomHex(24)
	r.syncedSecret(t, envs[hookKeyEnv], "hook-"+randomHex(24))
	r.syncedSecret(t, envs[webhookKeyEnv], webhookKey)
	r.syncedSecret(t, envs[recordKeyEnv], "record-"+randomHex(24))
	r.syncedSecret(t, envs[giteaTokenEnv], r.giteaToken)
	// A kubeconfig Secret registering a cluster through an exec plugin, which the service
	// refuses by default (--insecure-kubeconfig) and records an Event on.
	refusedCluster(t, clustersNS)
	p := newPipeline(t, apps, envs["FLUX_WEBHOOK_CLUSTER_NAME"])
	p.webhookKey = webhookKey
	p.serviceNS, p.clustersNS = envs[namespaceEnv], clustersNS
	defer p.cleanup(t)
	if ref, ok := envs[platformTokenEnv]; ok {
		r.syncedSecret(t, ref, platformToken)
		p.platformToken = platformToken
		// Jobs are kept in the service's namespace; one is an hour old.
		p.jobsNS = envs[namespaceEnv]
		p.oldJob = oldJob(t, p.jobsNS)
	}

	dir := t.TempDir()
	kubeconfig := r.proxy.kubeconfig(t, dir, user)
	ports, err := testenv.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	p.hookURL = fmt.Sprintf("http://127.0.0.1:%d/hook", ports[0])
	if p.platformToken != "" {
		p.platformURL = fmt.Sprintf("http://127.0.0.1:%d/api/v1/reconcile", ports[3])
	}
	args := append(slices.Clone(r.container.args),
		"--kubeconfig", kubeconfig,
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--metrics-listen", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--platform-listen", fmt.Sprintf("127.0.0.1:%d", ports[3]),
		"--gitea-url", env.gitea.URL)
	for k, v := range envs {
		t.Setenv(k, v)
	}
	if !streaming {
		t.Setenv("KUBE_FEATURE_WatchListClient", "false")
	}
	logPath := filepath.Join(dir, "flux-webhook.log")
	bin := imageBinary(t)

	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	var svc *testenv.Service
	go func() {
		s, err := testenv.StartService(runCtx, "flux-webhook", dir, bin, fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[1]), args...)
		if err != nil {
			done <- fmt.Errorf("not ready: %w", err)
			return
		}
		r.mu.Lock()
		svc = s
		r.mu.Unlock()
		done <- p.run(runCtx, r.proxy)
	}()
	defer func() {
		cancel()
		r.mu.Lock()
		defer r.mu.Unlock()
		if svc != nil {
			svc.Stop()
		}
	}()

	var res runResult
	var want *regexp.Regexp
	if removed != nil {
		want = refusal(*removed, user)
	}
	// refused says whether the log shows the refusal; answered, whether the API server's
	// answer to the service does (the log may follow, or, where the service does not log
	// the failure, not).
	var answeredAt time.Time
	refused := func() bool {
		res.log, _ = os.ReadFile(logPath)
		res.apiRefusals = r.proxy.refusalsOf(user)
		if want == nil {
			return false
		}
		if loc := want.FindIndex(res.log); loc != nil {
			res.refused, res.refusal, res.took = true, "log: "+lineAt(res.log, loc[0]), time.Since(start)
			return true
		}
		for _, m := range res.apiRefusals {
			if want.MatchString(m) && answeredAt.IsZero() {
				answeredAt = time.Now()
				res.refused, res.refusal, res.took = true, "the API server's answer (not logged): "+m, time.Since(start)
			}
		}
		return false
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case res.err = <-done:
			res.finished = true
			if !res.refused {
				res.took = time.Since(start)
			}
			if removed != nil && res.err == nil {
				// What fails without the atom may be asynchronous (an Event, a retried
				// watch): a moment more.
				deadline := time.Now().Add(5 * time.Second)
				for !refused() && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
			}
			refused()
			if res.err != nil && !res.refused {
				t.Logf("service log:\n%s", tailBytes(res.log, 6000))
			}
			return res
		case <-tick.C:
			// Refused in the log; or in an answer only, and not logged within 2 s: the
			// pipeline, which goes on meanwhile, may yet show what that broke.
			if refused() || !answeredAt.IsZero() && time.Since(answeredAt) > 2*time.Second {
				cancel()
				<-done
				return res
			}
		}
	}
}

// syncedSecret does what External Secrets does for the Secret ref (NAMESPACE/NAME) the
// Deployment reads: the rendered ExternalSecret whose target it is, in that namespace,
// syncs (status Ready=True, SecretSynced, refreshTime, through the status subresource)
// and writes the Secret, owned by it as its controller, with the token under "token".
func (r *rbacRun) syncedSecret(t *testing.T, ref, token string) {
	t.Helper()
	ctx, c := t.Context(), env.kube.Client
	ns, name, _ := strings.Cut(ref, "/")
	var es *unstructured.Unstructured
	for _, o := range r.externalSecrets {
		if target, _, _ := unstructured.NestedString(o.Object, "spec", "target", "name"); target == name {
			es = o.DeepCopy()
		}
	}
	if es == nil {
		t.Fatalf("no rendered ExternalSecret writes the Secret %s the Deployment reads", name)
	}
	es.SetNamespace(ns)
	apply(t, c, es, false)
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(es.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(es), live); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	status := map[string]any{
		"binding": map[string]any{"name": name},
		"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "SecretSynced",
			"message": "secret synced", "lastTransitionTime": now}},
		"refreshTime":           now,
		"syncedResourceVersion": fmt.Sprintf("%d-%s", live.GetGeneration(), randomHex(16)),
	}
	if err := unstructured.SetNestedField(live.Object, status, "status"); err != nil {
		t.Fatal(err)
	}
	if err := c.Status().Update(ctx, live); err != nil {
		t.Fatalf("ExternalSecret %s status: %v", name, err)
	}
	yes := true
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{"reconcile.external-secrets.io/managed": "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: live.GetAPIVersion(), Kind: live.GetKind(),
				Name: live.GetName(), UID: live.GetUID(), Controller: &yes, BlockOwnerDeletion: &yes}}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"token": []byte(token)},
	}
	if err := c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
}

// oldJob stores a platform job created two hours ago in ns, as the service stores jobs
// (jobs.JobStore): a reconcile after an hour prunes it.
func oldJob(t *testing.T, ns string) string {
	t.Helper()
	created := time.Now().Add(-2 * time.Hour).UTC()
	job := api.Job{ID: randomHex(8), Token: created.Format(time.RFC3339Nano), Created: created, Deadline: created.Add(10 * time.Minute)}
	b, _ := json.Marshal(job)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "flux-webhook-job-" + job.ID,
			Labels: map[string]string{jobs.JobLabel: randomHex(16), "app.kubernetes.io/managed-by": "flux-webhook"}},
		Data: map[string]string{"job.json": string(b)},
	}
	if err := env.kube.Client.Create(t.Context(), cm); err != nil {
		t.Fatal(err)
	}
	return cm.Name
}

func setRules(t *testing.T, o *unstructured.Unstructured, rules []rbacv1.PolicyRule) {
	t.Helper()
	b, _ := json.Marshal(rules)
	var v []any
	_ = json.Unmarshal(b, &v)
	if err := unstructured.SetNestedSlice(o.Object, v, "rules"); err != nil {
		t.Fatal(err)
	}
}

// waitAuthorized waits until the API server's authorizer agrees with the rules just applied:
// every atom of the rendered RBAC allowed exactly when the run's rules grant it, in its
// namespace (the service's, or the registered clusters').
func (r *rbacRun) waitAuthorized(t *testing.T, ns, clustersNS, user string, rules map[string][]rbacv1.PolicyRule) {
	t.Helper()
	granted := atomsOfAll(rules)
	all := atomsOfAll(r.rules(t))
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range all {
		want := slices.Contains(granted, a)
		attrs := &authorizationv1.ResourceAttributes{Group: a.group, Resource: a.resource, Verb: a.verb, Name: a.name,
			Namespace: r.roleNamespace(a.role, ns, clustersNS)}
		for {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: attrs}}
			if err := env.kube.Client.Create(t.Context(), sar); err != nil {
				t.Fatal(err)
			}
			if sar.Status.Allowed == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: allowed %v, want %v (%s)", a, sar.Status.Allowed, want, sar.Status.Reason)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// refusedCluster writes, in ns, a kubeconfig Secret registering a cluster whose credential is
// an exec plugin: a category the service refuses unless --insecure-kubeconfig names it.
func refusedCluster(t *testing.T, ns string) {
	t.Helper()
	kubeconfig := `apiVersion: v1
kind: Config
clusters:
  - name: exec
    cluster:
      server: https://127.0.0.1:1
contexts:
  - name: exec
    context: {cluster: exec, user: exec}
current-context: exec
users:
  - name: exec
    user:
      exec:
        apiVersion: client.authentication.k8s.io/v1
        command: /bin/true
        interactiveMode: Never
`
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "exec-cluster", Labels: map[string]string{"flux-webhook.openova.io/cluster": "exec"}},
		Data:       map[string][]byte{"kubeconfig": []byte(kubeconfig)},
	}
	if err := env.kube.Client.Create(t.Context(), secret); err != nil {
		t.Fatal(err)
	}
}

func findKind(t *testing.T, objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind {
			return o
		}
	}
	t.Fatalf("no %s", kind)
	return nil
}

// pipeline is one Gitea repository feeding a GitRepository, and built from it a HelmChart,
// a Kustomization and a HelmRelease of the chart, in namespace ns (sources first); the
// Kustomization applies a Deployment whose Canary is followed.
type pipeline struct {
	ns, cluster string
	repo        *testenv.Repo
	objs        []client.Object // source first
	// workload are the Deployment the Kustomization applies (its inventory says so), its
	// primary and its Canary, whose status the test writes as Flagger does.
	workload []client.Object
	// oci are an OCIRepository and a Kustomization built from it, which only the platform
	// reconcile selects (no push feeds them).
	oci        []client.Object
	webhookKey string // pushes come as native Gitea webhooks, signed with it
	hookURL    string
	// serviceNS holds the push records; clustersNS the refused kubeconfig Secret.
	serviceNS, clustersNS string

	// The platform API's, when the service serves it: its URL and token, the namespace
	// of its jobs, and an hour-old job it must prune.
	platformURL, platformToken string
	jobsNS, oldJob             string

	accepted     time.Time // when /hook last accepted a push
	sha, version string    // the last push's commit and chart version
}

func newPipeline(t *testing.T, ns, cluster string) *pipeline {
	t.Helper()
	ctx := t.Context()
	repo, err := env.gitea.CreateRepo(ctx, ns+"-"+randomHex(3))
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeline{ns: ns, cluster: cluster, repo: repo}
	if _, err := p.commit(ctx, "v0"); err != nil {
		t.Fatal(err)
	}
	hour := metav1.Duration{Duration: time.Hour}
	p.objs = []client.Object{
		&sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}, Spec: sourcev1.GitRepositorySpec{
			URL: repo.CloneURL, Interval: hour, Reference: &sourcev1.GitRepositoryRef{Branch: "main"}}},
		&sourcev1.HelmChart{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-chart"}, Spec: sourcev1.HelmChartSpec{
			Chart: "./chart", Interval: hour, SourceRef: sourcev1.LocalHelmChartSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "app"}}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}, Spec: kustomizev1.KustomizationSpec{
			Interval: hour, Path: "./deploy", Prune: true,
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "app"}}},
		&helmv2.HelmRelease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app"}, Spec: helmv2.HelmReleaseSpec{
			Interval: hour, ChartRef: &helmv2.CrossNamespaceSourceReference{Kind: sourcev1.HelmChartKind, Name: "app-chart"}}},
	}
	p.oci = []client.Object{
		&sourcev1.OCIRepository{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-oci"}, Spec: sourcev1.OCIRepositorySpec{
			URL: "oci://registry.example.invalid/org/app", Interval: &hour, Reference: &sourcev1.OCIRepositoryRef{Tag: "latest"}}},
		&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-oci"}, Spec: kustomizev1.KustomizationSpec{
			Interval: hour, Path: "./", Prune: true,
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.OCIRepositoryKind, Name: "app-oci"}}},
	}
	deployment := func(name string) *appsv1.Deployment {
		labels := map[string]string{"app": name}
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:v0"}}}}}}
	}
	p.workload = []client.Object{deployment("web"), deployment("web-primary"),
		&flaggerv1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: flaggerv1.CanarySpec{
			TargetRef: flaggerv1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"},
			Service:   flaggerv1.CanaryService{Port: 80},
			Analysis:  &flaggerv1.CanaryAnalysis{Interval: "10s", Iterations: 1, Threshold: 2}}}}
	for _, o := range slices.Concat(p.objs, p.oci, p.workload) {
		if err := env.kube.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.flagger(ctx, "s0", "s0", flaggerv1.CanaryPhaseSucceeded, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// canaryContext is the status context of the pipeline's canary.
func (p *pipeline) canaryContext() string {
	return api.Target{Cluster: p.cluster, Kind: flux.CanaryKind, Namespace: p.ns, Name: "web"}.Context()
}

// flagger writes the Canary's status as Flagger does (through the status subresource).
func (p *pipeline) flagger(ctx context.Context, applied, promoted string, phase flaggerv1.CanaryPhase, failedChecks int) error {
	c := &flaggerv1.Canary{}
	if err := env.kube.Client.Get(ctx, client.ObjectKeyFromObject(p.workload[2]), c); err != nil {
		return err
	}
	now := metav1.Now()
	status := map[flaggerv1.CanaryPhase]corev1.ConditionStatus{flaggerv1.CanaryPhaseSucceeded: corev1.ConditionTrue, flaggerv1.CanaryPhaseProgressing: corev1.ConditionUnknown}[phase]
	c.Status = flaggerv1.CanaryStatus{Phase: phase, LastAppliedSpec: applied, LastPromotedSpec: promoted, FailedChecks: failedChecks,
		Iterations: 1, LastTransitionTime: now,
		Conditions: []flaggerv1.CanaryCondition{{Type: flaggerv1.PromotedType, Status: status, Reason: string(phase), LastUpdateTime: now, LastTransitionTime: now}}}
	return env.kube.Client.Status().Update(ctx, c)
}

// canary plays Flagger on the template push i applied: an analysis with a failed check
// (and the Event saying why, which the pending status quotes), then the promotion (the
// primary runs the target's image), and waits for the canary's status on sha to say so.
func (p *pipeline) canary(ctx context.Context, sha string, i int) error {
	c := env.kube.Client
	spec, image := fmt.Sprintf("s%d", i), fmt.Sprintf("registry.example/web:v%d", i)
	if err := p.flagger(ctx, spec, fmt.Sprintf("s%d", i-1), flaggerv1.CanaryPhaseProgressing, 1); err != nil {
		return err
	}
	canary := &flaggerv1.Canary{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(p.workload[2]), canary); err != nil {
		return err
	}
	now := metav1.Now()
	halt := fmt.Sprintf("Halt web.%s advancement success-rate 98.00 < 99", p.ns)
	if err := c.Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: fmt.Sprintf("web.halt-%d", i)},
		InvolvedObject: corev1.ObjectReference{APIVersion: "flagger.app/v1beta1", Kind: flux.CanaryKind, Namespace: p.ns, Name: "web", UID: canary.UID},
		Type:           corev1.EventTypeWarning, Reason: "Synced", Message: halt, Source: corev1.EventSource{Component: "flagger"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1}); err != nil {
		return err
	}
	if err := p.waitCanary(ctx, sha, "pending", "analysis 1/1, 1/2 failed checks: "+halt); err != nil {
		return err
	}
	for _, d := range p.workload[:2] {
		dep := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(d), dep); err != nil {
			return err
		}
		dep.Spec.Template.Spec.Containers[0].Image = image
		if err := c.Update(ctx, dep); err != nil {
			return err
		}
	}
	if err := p.flagger(ctx, spec, spec, flaggerv1.CanaryPhaseSucceeded, 0); err != nil {
		return err
	}
	return p.waitCanary(ctx, sha, "success", "promoted "+image)
}

// waitCanary waits until the canary's latest status on sha has state and description.
func (p *pipeline) waitCanary(ctx context.Context, sha, state, description string) error {
	var last *gitea.Status
	return poll(ctx, time.Minute, fmt.Sprintf("%s %q on %s", p.canaryContext(), description, sha[:12]), func() (bool, error) {
		all, err := p.repo.Statuses(ctx, sha)
		if err != nil {
			return false, err
		}
		for _, s := range all {
			if s.Context == p.canaryContext() && (last == nil || s.ID > last.ID) {
				last = s
			}
		}
		return last != nil && string(last.State) == state && last.Description == description, nil
	})
}

// cleanup deletes the Flux objects, so later runs' services find nothing of this one.
func (p *pipeline) cleanup(t *testing.T) {
	for _, o := range slices.Concat(p.objs, p.oci, p.workload) {
		if err := env.kube.Client.Delete(context.Background(), o); err != nil {
			t.Errorf("delete %s: %v", o.GetName(), err)
		}
	}
}

func (p *pipeline) commit(ctx context.Context, value string) (string, error) {
	if err := p.repo.WriteFile("deploy/configmap.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  value: "+value+"\n"); err != nil {
		return "", err
	}
	sha, err := p.repo.Commit(ctx, value)
	if err != nil {
		return "", err
	}
	return sha, p.repo.Push(ctx, "HEAD:refs/heads/main")
}

// contexts are the status contexts of the objects, in the order of p.objs.
func (p *pipeline) contexts() []string {
	var out []string
	for _, o := range p.objs {
		out = append(out, api.Target{Cluster: p.cluster, Kind: flux.KindOf(o), Namespace: o.GetNamespace(), Name: o.GetName()}.Context())
	}
	return out
}

// run sees the refused kubeconfig Secret's Event become a series, carries two pushes
// through the pipeline, the second onto objects that already carry a request record and
// Flux's answer to it, as in a running cluster, then the first push again, overtaken; then,
// when the service serves the platform API, one platform reconcile of the same objects and
// the OCI ones.
func (p *pipeline) run(ctx context.Context, proxy *apiProxy) error {
	if err := p.refusalSeries(ctx, proxy); err != nil {
		return fmt.Errorf("refused cluster: %w", err)
	}
	for i := 1; i <= 2; i++ {
		if err := p.push(ctx, proxy, i); err != nil {
			return fmt.Errorf("push %d: %w", i, err)
		}
	}
	if err := p.overtaken(ctx); err != nil {
		return fmt.Errorf("overtaken push: %w", err)
	}
	if p.platformURL != "" {
		if err := p.platform(ctx, proxy); err != nil {
			return fmt.Errorf("platform reconcile: %w", err)
		}
	}
	return nil
}

// refusalSeries waits for the Event on the refused kubeconfig Secret, then has the service's
// watch of that namespace expire: the relist hands it the same Secret again, refused again,
// and the same Event becomes a series (events.k8s.io: a patch of the first).
func (p *pipeline) refusalSeries(ctx context.Context, proxy *apiProxy) error {
	event := func() (*eventsv1.Event, error) {
		var list eventsv1.EventList
		if err := env.kube.Client.List(ctx, &list, client.InNamespace(p.clustersNS)); err != nil {
			return nil, err
		}
		for i, e := range list.Items {
			if e.Reason == "ClusterRefused" && e.Regarding.Name == "exec-cluster" {
				return &list.Items[i], nil
			}
		}
		return nil, nil
	}
	if err := poll(ctx, time.Minute, "the ClusterRefused Event", func() (bool, error) {
		e, err := event()
		return e != nil, err
	}); err != nil {
		return err
	}
	proxy.expireWatch("/api/v1/namespaces/" + p.clustersNS + "/secrets")
	return poll(ctx, time.Minute, "the ClusterRefused Event as a series", func() (bool, error) {
		e, err := event()
		return e != nil && e.Series != nil && e.Series.Count >= 2, err
	})
}

// overtaken pushes two commits and delivers the first only after both landed: the intake
// finds the branch moved on, the push is answered superseded and recorded in a push record
// of the service's namespace, which the leader's backlog works (a warning on each object's
// context) and saves back until the repeat window ends.
func (p *pipeline) overtaken(ctx context.Context) error {
	first, err := p.commit(ctx, "v3")
	if err != nil {
		return err
	}
	if _, err := p.commit(ctx, "v4"); err != nil {
		return err
	}
	answer, err := p.deliver(ctx, first)
	if err != nil {
		return err
	}
	if err := expectTargets(answer, len(p.objs), "superseded"); err != nil {
		return err
	}
	if err := p.waitStates(ctx, first, "warning"); err != nil {
		return err
	}
	return p.pushRecord(ctx, first, "worked", func(rec record.Push) bool {
		done := len(rec.Owed) == len(p.objs)
		for _, u := range rec.Owed {
			done = done && u.Done
		}
		return done
	})
}

// pushRecord waits up to a minute for the push record of sha to satisfy cond.
func (p *pipeline) pushRecord(ctx context.Context, sha, what string, cond func(record.Push) bool) error {
	return poll(ctx, time.Minute, "the push record of "+sha+" "+what, func() (bool, error) {
		var cms corev1.ConfigMapList
		if err := env.kube.Client.List(ctx, &cms, client.InNamespace(p.serviceNS), client.HasLabels{record.PushLabel}); err != nil {
			return false, err
		}
		for _, cm := range cms.Items {
			var rec record.Push
			if err := json.Unmarshal([]byte(cm.Data["push.json"]), &rec); err != nil {
				return false, fmt.Errorf("push record %s: %w", cm.Name, err)
			}
			if rec.Request.SHA == sha {
				return cond(rec), nil
			}
		}
		return false, nil
	})
}

// poll calls cond every 100 ms until it is true, fails, or d has passed.
func poll(ctx context.Context, d time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		ok, err := cond()
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %s within %s", what, d)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// expectTargets checks a /hook answer: n targets, each with the given result.
func expectTargets(answer []byte, n int, result string) error {
	var accepted struct {
		Targets []struct{ Kind, Result, Error string }
	}
	if err := json.Unmarshal(answer, &accepted); err != nil {
		return err
	}
	if len(accepted.Targets) != n {
		return fmt.Errorf("/hook matched %d targets, want %d: %s", len(accepted.Targets), n, answer)
	}
	for _, tg := range accepted.Targets {
		if tg.Result != result {
			return fmt.Errorf("/hook: %s %s, want %s: %s", tg.Kind, tg.Result, result, tg.Error)
		}
	}
	return nil
}

// platform asks the platform API to reconcile the pipeline's namespace (every object
// changed meanwhile, so that each patch conflicts), checks that the hour-old job was pruned,
// answers as Flux, and follows the job until every target succeeded.
func (p *pipeline) platform(ctx context.Context, proxy *apiProxy) error {
	var job api.JobStatus
	all := slices.Concat(p.objs, p.oci)
	// The leader requests the job while its Flux cache cannot see the changes (each patch
	// conflicting with them), then prunes the hour-old one.
	body, err := func() ([]byte, error) {
		proxy.pauseWatches()
		defer proxy.resumeWatches()
		for _, o := range all {
			if err := env.kube.Client.Patch(ctx, o, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"deploy-test/changed":"platform"}}}`))); err != nil {
				return nil, err
			}
		}
		code, body, err := p.platformCall(ctx, http.MethodPost, p.platformURL, fmt.Sprintf(`{"namespaces": [%q]}`, p.ns), &job)
		if err != nil {
			return nil, err
		}
		if code != http.StatusAccepted || job.Requested {
			return nil, fmt.Errorf("POST /api/v1/reconcile answered %d, want 202 with the job queued: %s", code, body)
		}
		for deadline := time.Now().Add(time.Minute); !job.Requested; {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("job %s not requested in a minute: %s", job.ID, body)
			}
			time.Sleep(100 * time.Millisecond)
			if code, body, err = p.platformCall(ctx, http.MethodGet, p.platformURL+"/"+job.ID, "", &job); err != nil || code != http.StatusOK {
				return nil, fmt.Errorf("GET /api/v1/reconcile/%s answered %d (%v): %s", job.ID, code, err, body)
			}
		}
		return body, nil
	}()
	if err != nil {
		return err
	}
	if len(job.Targets) != len(all) || len(job.Skipped) != 0 {
		return fmt.Errorf("job %s requested with %d targets, want %d: %s", job.ID, len(job.Targets), len(all), body)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := env.kube.Client.Get(ctx, client.ObjectKey{Namespace: p.jobsNS, Name: p.oldJob}, &corev1.ConfigMap{})
		if apierrors.IsNotFound(err) {
			break
		}
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the hour-old job %s was not pruned", p.oldJob)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := p.answer(ctx, p.sha, p.version); err != nil {
		return err
	}
	artifact := "latest@sha256:" + strings.Repeat("a1", 32)
	if err := testenv.MarkOCIRepositoryReady(ctx, env.kube.Client, client.ObjectKeyFromObject(p.oci[0]), artifact, ""); err != nil {
		return err
	}
	if err := testenv.MarkKustomizationApplied(ctx, env.kube.Client, client.ObjectKeyFromObject(p.oci[1]), artifact, ""); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		code, body, err := p.platformCall(ctx, http.MethodGet, p.platformURL+"/"+job.ID, "", &job)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("GET /api/v1/reconcile/%s answered %d: %s", job.ID, code, body)
		}
		if job.Done {
			if job.Counts["success"] != len(all) {
				return fmt.Errorf("job %s done, but not every target succeeded: %s", job.ID, body)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %s not done in a minute: %s", job.ID, body)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// platformCall calls the platform API with its token and decodes a 2xx answer into out.
func (p *pipeline) platformCall(ctx context.Context, method, url, body string, out any) (int, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+p.platformToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, b, fmt.Errorf("%s %s: %w: %s", method, url, err, b)
		}
	}
	return resp.StatusCode, b, nil
}

func (p *pipeline) push(ctx context.Context, proxy *apiProxy, i int) error {
	// A later push only once the last one's patches are out of the coalescing window, so
	// that this push, too, is requested at once.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(p.accepted.Add(coalesceWindow + 100*time.Millisecond))):
	}
	sha, err := p.commit(ctx, fmt.Sprintf("v%d", i))
	if err != nil {
		return err
	}
	// Every object changes while the service's caches cannot see it, as when a Flux
	// controller writes status just before a push: each reconcile request conflicts and
	// is retried from a fresh read.
	// The leader requests the push before its Flux cache sees those changes.
	err = func() error {
		proxy.pauseWatches()
		defer proxy.resumeWatches()
		for _, o := range p.objs {
			patch := fmt.Appendf(nil, `{"metadata":{"labels":{"deploy-test/changed":"%d"}}}`, i)
			if err := env.kube.Client.Patch(ctx, o, client.RawPatch(types.MergePatchType, patch)); err != nil {
				return err
			}
		}
		answer, err := p.deliver(ctx, sha)
		if err != nil {
			return err
		}
		if err := expectTargets(answer, len(p.objs), "queued"); err != nil {
			return err
		}
		return p.pushRecord(ctx, sha, "requested", func(rec record.Push) bool {
			return !slices.ContainsFunc(rec.Clusters, func(c record.ClusterWork) bool { return !c.Done })
		})
	}()
	if err != nil {
		return err
	}

	if err := p.waitStates(ctx, sha, "pending"); err != nil {
		return err
	}
	p.sha, p.version = sha, fmt.Sprintf("0.1.%d", i)
	if err := p.answer(ctx, p.sha, p.version); err != nil {
		return err
	}
	if err := p.waitStates(ctx, sha, "success"); err != nil {
		return err
	}
	return p.canary(ctx, sha, i)
}

// deliver posts the push of sha to main to /hook as Gitea delivers a native webhook, and
// returns the 202 answer.
func (p *pipeline) deliver(ctx context.Context, sha string) ([]byte, error) {
	body, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "after": sha, "before": strings.Repeat("0", 40),
		"repository": map[string]any{"full_name": p.repo.FullName, "clone_url": p.repo.CloneURL},
	})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.hookURL, bytes.NewReader(body))
	// As Gitea delivers a native webhook: the body's HMAC-SHA256 under the webhook key.
	mac := hmac.New(sha256.New, []byte(p.webhookKey))
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", "push")
	req.Header.Set("X-Gitea-Delivery", "rbac-"+randomHex(8))
	req.Header.Set("X-Gitea-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return b, fmt.Errorf("/hook answered %d: %s", resp.StatusCode, b)
	}
	p.accepted = time.Now()
	return b, nil
}

// answer writes Flux's answer to the objects' current requests: sha fetched, the chart at
// version built from it, applied and released.
func (p *pipeline) answer(ctx context.Context, sha, version string) error {
	c := env.kube.Client
	rev := testenv.GitRevision("main", sha)
	gr, hc, ks, hr := client.ObjectKeyFromObject(p.objs[0]), client.ObjectKeyFromObject(p.objs[1]), client.ObjectKeyFromObject(p.objs[2]), client.ObjectKeyFromObject(p.objs[3])
	for _, mark := range []func() error{
		func() error { return testenv.MarkGitRepositoryReady(ctx, c, gr, rev, "") },
		func() error { return testenv.MarkHelmChartReady(ctx, c, hc, rev, version, "") },
		// What it applied: the Deployment of the canary.
		func() error { return testenv.SetKustomizationInventory(ctx, c, ks, p.ns+"_web_apps_Deployment") },
		func() error { return testenv.MarkKustomizationApplied(ctx, c, ks, rev, "") },
		func() error { return testenv.MarkHelmReleaseReady(ctx, c, hr, hc, version, "") },
	} {
		if err := mark(); err != nil {
			return err
		}
	}
	return nil
}

// waitStates waits until every object's context on sha has state as its latest status.
func (p *pipeline) waitStates(ctx context.Context, sha, state string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		all, err := p.repo.Statuses(ctx, sha)
		latest := map[string]string{}
		var id = map[string]int64{}
		for _, s := range all {
			if s.ID > id[s.Context] {
				id[s.Context], latest[s.Context] = s.ID, string(s.State)
			}
		}
		missing := slices.DeleteFunc(p.contexts(), func(c string) bool { return latest[c] == state })
		if err == nil && len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %s status on %s for %v (statuses %v, %v)", state, sha[:12], missing, latest, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// apiProxy serves the API server on loopback with TLS of its own, passing requests on with
// the admin's credentials: the service's Impersonate-User header makes the API server
// authorize it as the ServiceAccount. Watch streams can be held back, to make the
// service's caches stale on purpose, or expired, to make the service relist.
type apiProxy struct {
	srv      *httptest.Server
	mu       sync.Mutex
	paused   bool
	resume   *sync.Cond
	refusals []string // the API server's 403 answers: "<method> <path>: <message>"
	watches  map[*heldBody]string
	expire   string // the path whose next watch is answered 410 Gone
}

func startAPIProxy(t *testing.T, cfg *rest.Config) *apiProxy {
	t.Helper()
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	p := &apiProxy{}
	p.resume = sync.NewCond(&p.mu)
	rp := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     rt,
		FlushInterval: -1,
		// A stopped service's cancelled watches are no news.
		ErrorLog: log.New(io.Discard, "", 0),
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusForbidden {
				b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
				resp.Body.Close()
				resp.Body = io.NopCloser(bytes.NewReader(b))
				msg := string(b)
				// JSON or, for the built-in kinds, protobuf.
				if o, _, derr := clientgoscheme.Codecs.UniversalDeserializer().Decode(b, nil, nil); err == nil && derr == nil {
					if st, ok := o.(*metav1.Status); ok {
						msg = st.Message
					}
				}
				p.mu.Lock()
				p.refusals = append(p.refusals, resp.Request.Method+" "+resp.Request.URL.RequestURI()+": "+msg)
				p.mu.Unlock()
			}
			if isWatch(resp.Request) {
				b := &heldBody{ReadCloser: resp.Body, p: p, flux: strings.Contains(resp.Request.URL.Path, ".toolkit.fluxcd.io/")}
				p.mu.Lock()
				p.watches[b] = resp.Request.URL.Path
				p.mu.Unlock()
				resp.Body = b
			}
			return nil
		},
	}
	p.watches = map[*heldBody]string{}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		expired := isWatch(r) && r.URL.Path == p.expire
		if expired {
			p.expire = ""
		}
		p.mu.Unlock()
		if expired {
			// What an API server answers a watch from a resourceVersion it no longer has:
			// the client lists again.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusGone)
			_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		p.resumeWatches()
		p.srv.Close()
	})
	return p
}

// refusalsOf returns the API server's refusals of user.
func (p *apiProxy) refusalsOf(user string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.refusals {
		if strings.Contains(m, `"`+user+`"`) {
			out = append(out, m)
		}
	}
	return out
}

func isWatch(r *http.Request) bool {
	w := r.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// expireWatch ends the open watches of path and answers the next one 410 Gone, as an API
// server does when the watched resourceVersion is too old: the watcher lists again, and its
// informer hands every object it has again.
func (p *apiProxy) expireWatch(path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire = path
	for b, at := range p.watches {
		if at == path {
			_ = b.ReadCloser.Close()
		}
	}
}

func (p *apiProxy) pauseWatches() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

func (p *apiProxy) resumeWatches() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	p.resume.Broadcast()
}

// heldBody hands on what a watch stream of Flux objects read only while watches are not
// paused: an event read during a pause waits for its end. Other watches (the push records
// and jobs the leader works) go on, so that the leader requests while its Flux cache is
// stale.
type heldBody struct {
	io.ReadCloser
	p    *apiProxy
	flux bool // a watch of Flux objects: the only ones held
}

func (b *heldBody) Close() error {
	b.p.mu.Lock()
	delete(b.p.watches, b)
	b.p.mu.Unlock()
	return b.ReadCloser.Close()
}

func (b *heldBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	b.p.mu.Lock()
	for b.p.paused && b.flux {
		b.p.resume.Wait()
	}
	b.p.mu.Unlock()
	return n, err
}

// kubeconfig writes a kubeconfig that reaches the API server through the proxy as user.
func (p *apiProxy) kubeconfig(t *testing.T, dir, user string) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: p.srv.URL, CertificateAuthorityData: ca}
	cfg.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Impersonate: user}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "sa"}
	cfg.CurrentContext = "sa"
	out := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lineAt returns the line of b around offset i.
func lineAt(b []byte, i int) string {
	start := bytes.LastIndexByte(b[:i], '\n') + 1
	end := bytes.IndexByte(b[i:], '\n')
	if end < 0 {
		end = len(b) - i
	}
	line := string(b[start : i+end])
	if len(line) > 600 {
		line = line[:600] + "…"
	}
	return line
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
