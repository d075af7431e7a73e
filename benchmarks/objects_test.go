package benchmarks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Flux objects as a region's clusters hold them: applied by a parent Kustomization (its
// labels), reconciled (Ready, with status), Kustomizations with an inventory of 50 objects
// and a history, HelmReleases with values, a history of 5 releases and an inventory.

const (
	forgeHost = "gitea.example.com"
	// platformRepo is the repository every fan-out cluster's GitRepository follows.
	platformRepo = "platform/region"
	// perNamespace is how many objects share a namespace.
	perNamespace = 50
)

var since = metav1.NewTime(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))

func digest(s ...any) string {
	sum := sha256.Sum256(fmt.Append(nil, s...))
	return hex.EncodeToString(sum[:])
}

func commit(s ...any) string { return digest(s...)[:40] }

func appliedBy(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
		"kustomize.toolkit.fluxcd.io/name": "tenants", "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
		"app.kubernetes.io/part-of": ns,
	}}
}

func ready(reason, message string) []metav1.Condition {
	return []metav1.Condition{
		{Type: meta.ReadyCondition, Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: since, Reason: reason, Message: message},
		{Type: meta.HealthyCondition, Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: since, Reason: meta.SucceededReason, Message: "Health check passed in 2.1s"},
	}
}

// fanOutObject is object i of a fan-out cluster: the platform GitRepository, then
// Kustomizations built from it (every one of them is fed by a push to platformRepo).
func fanOutObject(i int) client.Object {
	if i == 0 {
		return gitRepository("flux-system", "platform", "https://"+forgeHost+"/"+platformRepo+".git")
	}
	ns := fmt.Sprintf("tenant-%03d", (i-1)/perNamespace)
	return kustomization(ns, fmt.Sprintf("app-%05d", i), "flux-system", "platform")
}

// regionObject is object i of the region cluster: per ten objects, a tenant's
// GitRepository, two HelmReleases and seven Kustomizations built from it.
func regionObject(i int) client.Object {
	ns := fmt.Sprintf("tenant-%03d", i/perNamespace)
	src := fmt.Sprintf("repo-%05d", i-i%10)
	switch i % 10 {
	case 0:
		return gitRepository(ns, src, fmt.Sprintf("https://%s/%s/apps-%05d.git", forgeHost, ns, i))
	case 1, 2:
		return helmRelease(ns, fmt.Sprintf("release-%05d", i), ns, src)
	default:
		return kustomization(ns, fmt.Sprintf("app-%05d", i), ns, src)
	}
}

func gitRepository(ns, name, url string) *sourcev1.GitRepository {
	rev := "main@sha1:" + commit(ns, name)
	size := int64(48213)
	ignore := "# exclude all\n/*\n# include the deploy directories\n!/deploy/\n!/clusters/\n!/apps/\n"
	return &sourcev1.GitRepository{
		ObjectMeta: appliedBy(ns, name),
		Spec: sourcev1.GitRepositorySpec{
			URL: url, Interval: metav1.Duration{Duration: time.Minute}, Timeout: &metav1.Duration{Duration: time.Minute},
			Reference: &sourcev1.GitRepositoryRef{Branch: "main"}, SecretRef: &meta.LocalObjectReference{Name: "git-auth"},
			Ignore: &ignore,
		},
		Status: sourcev1.GitRepositoryStatus{
			ObservedGeneration: 1,
			Conditions: []metav1.Condition{
				{Type: meta.ReadyCondition, Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: since, Reason: meta.SucceededReason, Message: "stored artifact for revision '" + rev + "'"},
				{Type: sourcev1.ArtifactInStorageCondition, Status: metav1.ConditionTrue, ObservedGeneration: 1, LastTransitionTime: since, Reason: meta.SucceededReason, Message: "stored artifact for revision '" + rev + "'"},
			},
			Artifact: &meta.Artifact{
				Digest: "sha256:" + digest(rev), Revision: rev, LastUpdateTime: since, Size: &size,
				Path: fmt.Sprintf("gitrepository/%s/%s/%s.tar.gz", ns, name, commit(rev)),
				URL:  fmt.Sprintf("http://source-controller.flux-system.svc.cluster.local./gitrepository/%s/%s/%s.tar.gz", ns, name, commit(rev)),
			},
		},
	}
}

var inventoryKinds = []struct{ group, kind, version string }{
	{"", "ConfigMap", "v1"}, {"", "Service", "v1"}, {"apps", "Deployment", "v1"}, {"networking.k8s.io", "Ingress", "v1"},
	{"", "ServiceAccount", "v1"}, {"rbac.authorization.k8s.io", "RoleBinding", "v1"}, {"policy", "PodDisruptionBudget", "v1"},
	{"autoscaling", "HorizontalPodAutoscaler", "v2"}, {"", "Secret", "v1"}, {"monitoring.coreos.com", "ServiceMonitor", "v1"},
}

func kustomization(ns, name, srcNS, src string) *kustomizev1.Kustomization {
	rev := "main@sha1:" + commit(srcNS, src)
	entries := make([]kustomizev1.ResourceRef, 50)
	for j := range entries {
		k := inventoryKinds[j%len(inventoryKinds)]
		entries[j] = kustomizev1.ResourceRef{ID: fmt.Sprintf("%s_%s-%02d_%s_%s", ns, name, j, k.group, k.kind), Version: k.version}
	}
	var history meta.History
	for j := range 3 {
		history = append(history, meta.Snapshot{Digest: "sha256:" + digest(name, j), FirstReconciled: since, LastReconciled: since,
			LastReconciledDuration: metav1.Duration{Duration: 2100 * time.Millisecond}, LastReconciledStatus: "ReconciliationSucceeded",
			TotalReconciliations: int64(40 - j), Metadata: map[string]string{"revision": "main@sha1:" + commit(name, j)}})
	}
	return &kustomizev1.Kustomization{
		ObjectMeta: appliedBy(ns, name),
		Spec: kustomizev1.KustomizationSpec{
			Interval: metav1.Duration{Duration: 10 * time.Minute}, RetryInterval: &metav1.Duration{Duration: 2 * time.Minute},
			Timeout: &metav1.Duration{Duration: 5 * time.Minute}, Path: "./apps/" + ns + "/" + name, Prune: true, Wait: true,
			TargetNamespace: ns,
			SourceRef:       kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: src, Namespace: srcNS},
			DependsOn:       []kustomizev1.DependencyReference{{Name: "infrastructure", Namespace: "flux-system"}},
			PostBuild: &kustomizev1.PostBuild{
				Substitute:     map[string]string{"cluster_name": "eu-central-1-a", "region": "eu-central-1", "domain": "apps.example.com", "tenant": ns},
				SubstituteFrom: []kustomizev1.SubstituteReference{{Kind: "ConfigMap", Name: "cluster-vars"}},
			},
			Patches: []kustomize.Patch{{
				Patch:  "- op: replace\n  path: /spec/replicas\n  value: 3\n- op: add\n  path: /metadata/annotations/tenant\n  value: " + ns + "\n",
				Target: &kustomize.Selector{Kind: "Deployment", Name: name},
			}},
		},
		Status: kustomizev1.KustomizationStatus{
			ObservedGeneration: 1, Conditions: ready(meta.ReconciliationSucceededReason, "Applied revision: "+rev),
			LastAppliedRevision: rev, LastAttemptedRevision: rev,
			Inventory: &kustomizev1.ResourceInventory{Entries: entries}, History: history,
		},
	}
}

func helmRelease(ns, name, srcNS, src string) *helmv2.HelmRelease {
	values := map[string]any{
		"replicaCount": 2,
		"image":        map[string]any{"repository": "registry.example.com/" + ns + "/" + name, "tag": "1.4.2", "pullPolicy": "IfNotPresent"},
		"resources": map[string]any{"requests": map[string]any{"cpu": "100m", "memory": "128Mi"},
			"limits": map[string]any{"cpu": "1", "memory": "512Mi"}},
		"ingress": map[string]any{"enabled": true, "className": "nginx",
			"hosts": []any{map[string]any{"host": name + "." + ns + ".apps.example.com", "paths": []any{map[string]any{"path": "/", "pathType": "Prefix"}}}},
			"tls":   []any{map[string]any{"secretName": name + "-tls", "hosts": []any{name + "." + ns + ".apps.example.com"}}}},
		"podAnnotations": map[string]any{"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
		"nodeSelector":   map[string]any{"topology.kubernetes.io/region": "eu-central-1"},
		"tolerations":    []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": ns, "effect": "NoSchedule"}},
	}
	var env []any
	for j := range 20 {
		env = append(env, map[string]any{"name": fmt.Sprintf("APP_SETTING_%02d", j), "value": fmt.Sprintf("value-%s-%02d", name, j)})
	}
	values["env"] = env
	raw, err := json.Marshal(values)
	if err != nil {
		panic(err)
	}
	var history helmv2.Snapshots
	for v := 5; v >= 1; v-- {
		status := "superseded"
		if v == 5 {
			status = "deployed"
		}
		history = append(history, &helmv2.Snapshot{Digest: "sha256:" + digest(name, v), Name: name, Namespace: ns, Version: v,
			Status: status, ChartName: name, ChartVersion: fmt.Sprintf("1.4.%d", v), AppVersion: fmt.Sprintf("2.%d.0", v),
			ConfigDigest: "sha256:" + digest(name, "config", v), FirstDeployed: since, LastDeployed: since})
	}
	entries := make([]helmv2.ResourceRef, 20)
	for j := range entries {
		k := inventoryKinds[j%len(inventoryKinds)]
		entries[j] = helmv2.ResourceRef{ID: fmt.Sprintf("%s_%s-%02d_%s_%s", ns, name, j, k.group, k.kind), Version: k.version}
	}
	retries := 5
	return &helmv2.HelmRelease{
		ObjectMeta: appliedBy(ns, name),
		Spec: helmv2.HelmReleaseSpec{
			Interval: metav1.Duration{Duration: 10 * time.Minute}, ReleaseName: name, TargetNamespace: ns,
			Timeout: &metav1.Duration{Duration: 10 * time.Minute}, MaxHistory: &retries,
			Chart: &helmv2.HelmChartTemplate{Spec: helmv2.HelmChartTemplateSpec{
				Chart: "./charts/" + name, Version: "*", ReconcileStrategy: "Revision",
				SourceRef: &helmv2.CrossNamespaceObjectReference{Kind: sourcev1.GitRepositoryKind, Name: src, Namespace: srcNS},
			}},
			Install: &helmv2.Install{Remediation: &helmv2.InstallRemediation{Retries: 3}},
			Upgrade: &helmv2.Upgrade{Remediation: &helmv2.UpgradeRemediation{Retries: 3}},
			Values:  &apiextensionsv1.JSON{Raw: raw},
		},
		Status: helmv2.HelmReleaseStatus{
			ObservedGeneration: 1, LastAttemptedGeneration: 1,
			Conditions:       ready("UpgradeSucceeded", "Helm upgrade succeeded for release "+ns+"/"+name+".v5 with chart "+name+"@1.4.5"),
			HelmChart:        srcNS + "/" + ns + "-" + name,
			StorageNamespace: ns, History: history, LastAttemptedRevision: "1.4.5",
			LastAttemptedConfigDigest: "sha256:" + digest(name, "config", 5), LastAttemptedReleaseAction: helmv2.ReleaseActionUpgrade,
			Inventory: &helmv2.ResourceInventory{Entries: entries},
		},
	}
}
