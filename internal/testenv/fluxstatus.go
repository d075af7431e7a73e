package testenv

// Status writers for tests that run without Flux's controllers. Each one writes status
// exactly the way the Flux controller owning the kind does: through the status subresource
// (client.Status().Update, with the object's current resourceVersion, retried on
// conflict), with status.observedGeneration and the Ready condition's observedGeneration
// set to metadata.generation, and the reasons and messages the controllers use.
//
// handledAt is what the controller copies into status.lastHandledReconcileAt; "" copies
// the object's current reconcile.fluxcd.io/requestedAt annotation, as the controllers do
// when they handle a request (and leaves the field alone when there is no annotation).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// GitRevision is a Git artifact revision as source-controller writes it: "<branch>@sha1:<sha>".
func GitRevision(branch, sha string) string {
	return branch + "@sha1:" + sha
}

// MarkGitRepositoryReady writes what source-controller writes after storing an artifact of
// revision (see GitRevision): status.artifact, Ready=True (Succeeded) and
// ArtifactInStorage=True with "stored artifact for revision '<revision>'".
func MarkGitRepositoryReady(ctx context.Context, c client.Client, key client.ObjectKey, revision, handledAt string) error {
	return updateStatus(ctx, c, key, &sourcev1.GitRepository{}, func(o *sourcev1.GitRepository) {
		msg := fmt.Sprintf("stored artifact for revision '%s'", revision)
		o.Status.Artifact = artifact("gitrepository", o, revision)
		o.Status.ObservedGeneration = o.Generation
		handled(o, &o.Status.ReconcileRequestStatus, handledAt)
		setReady(&o.Status.Conditions, o.Generation, metav1.ConditionTrue, meta.SucceededReason, msg)
		setCondition(&o.Status.Conditions, o.Generation, sourcev1.ArtifactInStorageCondition, metav1.ConditionTrue, meta.SucceededReason, msg)
		apimeta.RemoveStatusCondition(&o.Status.Conditions, sourcev1.FetchFailedCondition)
	})
}

// MarkOCIRepositoryReady writes what source-controller writes after pulling an OCI artifact
// of revision ("<tag>@sha256:<digest>"): status.artifact, Ready=True (Succeeded) and
// ArtifactInStorage=True with "stored artifact for digest '<revision>'".
func MarkOCIRepositoryReady(ctx context.Context, c client.Client, key client.ObjectKey, revision, handledAt string) error {
	return updateStatus(ctx, c, key, &sourcev1.OCIRepository{}, func(o *sourcev1.OCIRepository) {
		msg := fmt.Sprintf("stored artifact for digest '%s'", revision)
		o.Status.Artifact = artifact("ocirepository", o, revision)
		o.Status.ObservedGeneration = o.Generation
		handled(o, &o.Status.ReconcileRequestStatus, handledAt)
		setReady(&o.Status.Conditions, o.Generation, metav1.ConditionTrue, meta.SucceededReason, msg)
		setCondition(&o.Status.Conditions, o.Generation, sourcev1.ArtifactInStorageCondition, metav1.ConditionTrue, meta.SucceededReason, msg)
		apimeta.RemoveStatusCondition(&o.Status.Conditions, sourcev1.FetchFailedCondition)
	})
}

// MarkGitRepositoryFailed writes what source-controller writes when a fetch fails:
// Ready=False and FetchFailed=True with reason (e.g. sourcev1.GitOperationFailedReason,
// sourcev1.AuthenticationFailedReason) and message; the last artifact stays.
func MarkGitRepositoryFailed(ctx context.Context, c client.Client, key client.ObjectKey, handledAt, reason, message string) error {
	return updateStatus(ctx, c, key, &sourcev1.GitRepository{}, func(o *sourcev1.GitRepository) {
		o.Status.ObservedGeneration = o.Generation
		handled(o, &o.Status.ReconcileRequestStatus, handledAt)
		setReady(&o.Status.Conditions, o.Generation, metav1.ConditionFalse, reason, message)
		setCondition(&o.Status.Conditions, o.Generation, sourcev1.FetchFailedCondition, metav1.ConditionTrue, reason, message)
	})
}

// MarkKustomizationApplied writes what kustomize-controller writes after applying revision:
// lastAttemptedRevision = lastAppliedRevision = revision and Ready=True
// (ReconciliationSucceeded, "Applied revision: <revision>").
func MarkKustomizationApplied(ctx context.Context, c client.Client, key client.ObjectKey, revision, handledAt string) error {
	return updateStatus(ctx, c, key, &kustomizev1.Kustomization{}, func(o *kustomizev1.Kustomization) {
		o.Status.ObservedGeneration = o.Generation
		o.Status.LastAttemptedRevision = revision
		o.Status.LastAppliedRevision = revision
		handled(o, &o.Status.ReconcileRequestStatus, handledAt)
		setReady(&o.Status.Conditions, o.Generation, metav1.ConditionTrue, meta.ReconciliationSucceededReason, "Applied revision: "+revision)
	})
}

// SetKustomizationInventory sets the inventory of a Kustomization's status, as
// kustomize-controller writes it after an apply: the objects' IDs,
// "<namespace>_<name>_<group>_<kind>".
func SetKustomizationInventory(ctx context.Context, c client.Client, key client.ObjectKey, ids ...string) error {
	return updateStatus(ctx, c, key, &kustomizev1.Kustomization{}, func(o *kustomizev1.Kustomization) {
		inv := &kustomizev1.ResourceInventory{}
		for _, id := range ids {
			inv.Entries = append(inv.Entries, kustomizev1.ResourceRef{ID: id, Version: "v1"})
		}
		o.Status.Inventory = inv
	})
}

// MarkKustomizationFailed writes what kustomize-controller writes when revision fails to
// apply: lastAttemptedRevision = revision, lastAppliedRevision unchanged, Ready=False with
// reason (e.g. meta.ReconciliationFailedReason, meta.HealthCheckFailedReason) and message.
func MarkKustomizationFailed(ctx context.Context, c client.Client, key client.ObjectKey, revision, handledAt, reason, message string) error {
	return updateStatus(ctx, c, key, &kustomizev1.Kustomization{}, func(o *kustomizev1.Kustomization) {
		o.Status.ObservedGeneration = o.Generation
		o.Status.LastAttemptedRevision = revision
		handled(o, &o.Status.ReconcileRequestStatus, handledAt)
		setReady(&o.Status.Conditions, o.Generation, metav1.ConditionFalse, reason, message)
	})
}

// MarkHelmChartReady writes what source-controller writes after building chart version
// chartVersion from a source at sourceRevision: observedSourceArtifactRevision,
// observedChartName, status.artifact with revision chartVersion and Ready=True
// (ChartPullSucceeded for a HelmRepository source, ChartPackageSucceeded otherwise).
func MarkHelmChartReady(ctx context.Context, c client.Client, key client.ObjectKey, sourceRevision, chartVersion, handledAt string) error {
	return updateStatus(ctx, c, key, &sourcev1.HelmChart{}, func(o *sourcev1.HelmChart) {
		reason, verb := sourcev1.ChartPackageSucceededReason, "packaged"
		if o.Spec.SourceRef.Kind == sourcev1.HelmRepositoryKind {
			reason, verb = sourcev1.ChartPullSucceededReason, "pulled"
		}
		msg := fmt.Sprintf("%s '%s' chart with version '%s'", verb, o.Spec.Chart, chartVersion)
		o.Status.ObservedGeneration = o.Generation
		o.Status.ObservedSourceArtifactRevision = sourceRevision
		o.Status.ObservedChartName = o.Spec.Chart
		o.Status.Artifact = artifact("helmchart", o, chartVersion)
		handled(o, &o.Status.ReconcileRequestStatus, handledAt)
		setReady(&o.Status.Conditions, o.Generation, metav1.ConditionTrue, reason, msg)
		setCondition(&o.Status.Conditions, o.Generation, sourcev1.ArtifactInStorageCondition, metav1.ConditionTrue, reason, msg)
	})
}

// MarkHelmReleaseReady writes what helm-controller writes after installing or upgrading
// to chartVersion from the HelmChart chart: helmChart "<namespace>/<name>",
// lastAttemptedRevision = chartVersion, lastAttemptedGeneration and Ready=True
// (InstallSucceeded the first time, UpgradeSucceeded after).
func MarkHelmReleaseReady(ctx context.Context, c client.Client, key, chart client.ObjectKey, chartVersion, handledAt string) error {
	return updateStatus(ctx, c, key, &helmv2.HelmRelease{}, func(o *helmv2.HelmRelease) {
		reason, action := helmv2.UpgradeSucceededReason, "upgrade"
		if o.Status.LastAttemptedRevision == "" {
			reason, action = helmv2.InstallSucceededReason, "install"
		}
		msg := fmt.Sprintf("Helm %s succeeded for release %s with chart %s@%s", action, releaseName(o), chartName(o, chart), chartVersion)
		helmReleaseAttempt(o, chart, chartVersion, handledAt)
		setReady(&o.Status.Conditions, o.Generation, metav1.ConditionTrue, reason, msg)
	})
}

// MarkHelmReleaseFailed writes what helm-controller writes when installing or upgrading
// to chartVersion fails: the attempt fields as MarkHelmReleaseReady, failures+1, and
// Ready=False with reason (e.g. helmv2.UpgradeFailedReason, helmv2.ArtifactFailedReason)
// and message.
func MarkHelmReleaseFailed(ctx context.Context, c client.Client, key, chart client.ObjectKey, chartVersion, handledAt, reason, message string) error {
	return updateStatus(ctx, c, key, &helmv2.HelmRelease{}, func(o *helmv2.HelmRelease) {
		helmReleaseAttempt(o, chart, chartVersion, handledAt)
		o.Status.Failures++
		setReady(&o.Status.Conditions, o.Generation, metav1.ConditionFalse, reason, message)
	})
}

func helmReleaseAttempt(o *helmv2.HelmRelease, chart client.ObjectKey, chartVersion, handledAt string) {
	o.Status.ObservedGeneration = o.Generation
	o.Status.LastAttemptedGeneration = o.Generation
	o.Status.HelmChart = chart.Namespace + "/" + chart.Name
	o.Status.LastAttemptedRevision = chartVersion
	handled(o, &o.Status.ReconcileRequestStatus, handledAt)
}

// releaseName is "<namespace>/<name>.v1" of the Helm release, as in helm-controller's messages.
func releaseName(o *helmv2.HelmRelease) string {
	ns, name := o.Namespace, o.Name
	if o.Spec.TargetNamespace != "" {
		ns = o.Spec.TargetNamespace
	}
	if o.Spec.ReleaseName != "" {
		name = o.Spec.ReleaseName
	}
	return ns + "/" + name + ".v1"
}

func chartName(o *helmv2.HelmRelease, chart client.ObjectKey) string {
	if o.Spec.Chart != nil && o.Spec.Chart.Spec.Chart != "" {
		return o.Spec.Chart.Spec.Chart
	}
	return chart.Name
}

// updateStatus reads key into obj, applies mutate and writes the status subresource,
// retrying on conflicts.
func updateStatus[T client.Object](ctx context.Context, c client.Client, key client.ObjectKey, obj T, mutate func(T)) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, key, obj); err != nil {
			return err
		}
		mutate(obj)
		return c.Status().Update(ctx, obj)
	})
	if err != nil {
		return fmt.Errorf("update status of %T %s: %w", obj, key, err)
	}
	return nil
}

// handled sets lastHandledReconcileAt to handledAt, or to the requestedAt annotation.
func handled(o client.Object, s *meta.ReconcileRequestStatus, handledAt string) {
	if handledAt == "" {
		handledAt = o.GetAnnotations()[meta.ReconcileRequestAnnotation]
	}
	if handledAt != "" {
		s.LastHandledReconcileAt = handledAt
	}
}

func setReady(conds *[]metav1.Condition, gen int64, status metav1.ConditionStatus, reason, msg string) {
	setCondition(conds, gen, meta.ReadyCondition, status, reason, msg)
	if status == metav1.ConditionTrue {
		apimeta.RemoveStatusCondition(conds, meta.ReconcilingCondition)
		apimeta.RemoveStatusCondition(conds, meta.StalledCondition)
	}
}

func setCondition(conds *[]metav1.Condition, gen int64, typ string, status metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
}

// artifact is an artifact record shaped like source-controller's; nothing is served at URL.
func artifact(kind string, o client.Object, revision string) *meta.Artifact {
	sum := sha256.Sum256([]byte(revision))
	digest := hex.EncodeToString(sum[:])
	file := digest + ".tar.gz"
	if i := strings.LastIndex(revision, ":"); i >= 0 {
		file = revision[i+1:] + ".tar.gz" // the commit SHA, as for Git sources
	}
	path := strings.Join([]string{kind, o.GetNamespace(), o.GetName(), file}, "/")
	size := int64(1024)
	return &meta.Artifact{
		Path:           path,
		URL:            "http://source-controller.flux-system.svc.cluster.local./" + path,
		Revision:       revision,
		Digest:         "sha256:" + digest,
		LastUpdateTime: metav1.Now(),
		Size:           &size,
	}
}
