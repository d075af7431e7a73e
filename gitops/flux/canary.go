package flux

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// canary: Flagger's Canary (flagger.app/v1beta1). Flagger takes up each new pod template of
// its target Deployment, analyses it (metrics, iterations or traffic steps) and promotes it
// to the primary Deployment, or rolls it back. flux-webhook only reads canaries: they are
// not requested (Flagger has no requestedAt, and acts on the target's template, not on a
// request), but reported once a Kustomization or HelmRelease a push feeds applied their
// target (Applied: its inventory), under their own status context, as Flagger decides
// (JudgeCanary).
type canary struct{}

// CanaryKind is the Canary kind's name.
const CanaryKind = flaggerv1.CanaryKind

// deploymentKind is the only target kind whose canaries are followed: the inventory entry
// of an apps/v1 Deployment, "<namespace>_<name>_apps_Deployment".
const deploymentKind = "Deployment"

func (canary) Name() string { return CanaryKind }
func (canary) Resource() schema.GroupVersionResource {
	return flaggerv1.SchemeGroupVersion.WithResource("canaries")
}
func (canary) Stage() int                     { return 4 }
func (canary) Target() bool                   { return false }
func (canary) New() client.Object             { return &flaggerv1.Canary{} }
func (canary) NewList() client.ObjectList     { return &flaggerv1.CanaryList{} }
func (canary) Suspended(o client.Object) bool { return o.(*flaggerv1.Canary).Spec.Suspend }
func (canary) URLs(client.Object) []string    { return nil }
func (canary) Origin(client.Object) string    { return "" }

// Status: a Canary's status has no observed generation nor Flux conditions.
func (canary) Status(o client.Object) Status {
	return status(o, o.GetGeneration(), nil, "")
}

// Sources: the Deployment it targets (its own namespace's, as Flagger reads it). Only that
// index (IndexSource) is used: from a Deployment an applier applied to its canaries.
func (canary) Sources(o client.Object) []Ref {
	c := o.(*flaggerv1.Canary)
	if c.Spec.TargetRef.Kind != deploymentKind || c.Spec.TargetRef.Name == "" {
		return nil
	}
	return []Ref{{Kind: deploymentKind, Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}}
}

// Follows: never matched by a push itself.
func (canary) Follows(client.Object, Pushed, client.Object) bool { return false }

// Judge: a Canary has no verdict of its own for a request; JudgeCanary judges it against
// what its status said when its target was applied.
func (canary) Judge(client.Object, Want, map[Ref]client.Object) Judgement { return Judgement{} }

// Slim: of its spec, only the target and what the analysis' length depends on; of its
// status, no tracked configs.
func (canary) Slim(o client.Object) {
	c := o.(*flaggerv1.Canary)
	c.Spec.Service = flaggerv1.CanaryService{}
	c.Spec.AutoscalerRef, c.Spec.IngressRef, c.Spec.RouteRef, c.Spec.UpstreamRef = nil, nil, nil, nil
	for _, a := range []*flaggerv1.CanaryAnalysis{c.Spec.Analysis, c.Spec.CanaryAnalysis} {
		if a != nil {
			a.Alerts, a.Metrics, a.Webhooks, a.Match, a.SessionAffinity = nil, nil, nil, nil, nil
		}
	}
	c.Status.TrackedConfigs = nil
}

// IsFollower reports whether k's objects are followed rather than requested: reported once
// what applies their target applied the pushed commit.
func IsFollower(k Kind) bool { _, ok := k.(canary); return ok }

// applier is a kind whose status lists the objects its objects applied (an inventory).
type applier interface {
	// Applies returns the Deployments an object's inventory lists.
	Applies(o client.Object) []Ref
}

// IsApplier reports whether k's objects apply Deployments and list them (Applied).
func IsApplier(k Kind) bool { _, ok := k.(applier); return ok }

// Applied returns the Deployments an object applied, as its status' inventory lists them
// (kustomize- and helm-controller write "<namespace>_<name>_<group>_<kind>"); nil for a
// kind without one.
func Applied(o client.Object) []Ref {
	if a, ok := kindOfObject(o).(applier); ok {
		return a.Applies(o)
	}
	return nil
}

// deploymentsOf returns the Deployments among inventory entry IDs.
func deploymentsOf(ids []string) []Ref {
	var out []Ref
	for _, id := range ids {
		if ref, ok := inventoryDeployment(id); ok {
			out = append(out, ref)
		}
	}
	return out
}

// keepDeployments keeps, of an inventory's entries, the Deployments (id reads an entry's
// ID), in a slice of their own length: the decoded one has room for every entry. nil when
// none is a Deployment.
func keepDeployments[E any](entries []E, id func(E) string) []E {
	kept := slices.DeleteFunc(entries, func(e E) bool { _, ok := inventoryDeployment(id(e)); return !ok })
	if len(kept) == 0 {
		return nil
	}
	return slices.Clone(kept)
}

// inventoryDeployment parses an inventory entry ID of an apps Deployment. Names and
// namespaces are DNS names: they never hold '_'.
func inventoryDeployment(id string) (Ref, bool) {
	parts := strings.Split(id, "_")
	if len(parts) != 4 || parts[2] != "apps" || parts[3] != deploymentKind || parts[0] == "" || parts[1] == "" {
		return Ref{}, false
	}
	return Ref{Kind: deploymentKind, Namespace: parts[0], Name: parts[1]}, true
}

// CanaryBaseline is what a Canary's status said when the object applying its target was
// seen to have applied a pushed commit: Flagger's hash of the target's pod template it last
// took up, its phase, and when Flagger last wrote its status (Flagger's own clock, to the
// second: compared only with Flagger's own times).
type CanaryBaseline struct {
	Spec       string
	Phase      string
	Transition time.Time
}

// BaselineOf reads the baseline of a Canary.
func BaselineOf(o client.Object) CanaryBaseline {
	c := o.(*flaggerv1.Canary)
	return CanaryBaseline{Spec: c.Status.LastAppliedSpec, Phase: string(c.Status.Phase), Transition: c.Status.LastTransitionTime.Time}
}

// String encodes a baseline for the request record: "<spec> <phase> <unix seconds>".
func (b CanaryBaseline) String() string {
	return fmt.Sprintf("%s %s %d", orDash(b.Spec), orDash(b.Phase), b.Transition.Unix())
}

// ParseBaseline decodes String's form.
func ParseBaseline(s string) (CanaryBaseline, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return CanaryBaseline{}, fmt.Errorf("canary baseline %q: want 3 fields", s)
	}
	sec, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return CanaryBaseline{}, fmt.Errorf("canary baseline %q: %w", s, err)
	}
	undash := func(s string) string {
		if s == "-" {
			return ""
		}
		return s
	}
	return CanaryBaseline{Spec: undash(f[0]), Phase: undash(f[1]), Transition: time.Unix(sec, 0)}, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// CanaryJudgement is Flagger's verdict on the template a push applied to a Canary's target.
type CanaryJudgement struct {
	// Verdict is Reached (promoted), Failed (rolled back) or Pending.
	Verdict Verdict
	// Quiet, with Pending: Flagger shows nothing new since the baseline and the canary is
	// settled; it is Reached once Flagger has had the time to take a changed template up
	// (QuietPeriod) and has not: the push left the target's template as it was promoted.
	Quiet bool
	// Progress says how far a running analysis is ("analysis 3/10", "analysis at weight
	// 20%"), FailedChecks how many of its checks failed so far (of Threshold).
	Progress                string
	FailedChecks, Threshold int
	// Message is Flagger's own word on the phase (its Promoted condition).
	Message string
}

// analysing are the phases of an analysis under way (or of Flagger not there yet).
var analysing = []flaggerv1.CanaryPhase{"", flaggerv1.CanaryPhaseInitializing, flaggerv1.CanaryPhaseWaiting,
	flaggerv1.CanaryPhaseProgressing, flaggerv1.CanaryPhaseWaitingPromotion, flaggerv1.CanaryPhasePromoting,
	flaggerv1.CanaryPhaseFinalising, flaggerv1.CanaryPhaseTerminating, flaggerv1.CanaryPhaseTerminated}

// checkingRevision are the phases in which every one of Flagger's passes checks the target
// for a new template first, and restarts the analysis on it.
var checkingRevision = []string{string(flaggerv1.CanaryPhaseProgressing), string(flaggerv1.CanaryPhaseWaitingPromotion)}

// JudgeCanary says what Flagger has decided of the target template a push applied, from a
// Canary's status now and its baseline b (BaselineOf, when the push was seen applied):
//
//   - Reached when Flagger promoted it: Succeeded (or Initialized: the first template is
//     promoted without analysis) after taking up a new template since b (its hash moved), or
//     after the analysis running at b (whose every pass checked the target for a newer
//     template) ended; or Failed with the promoted template taken up (the push reverted the
//     target to what runs);
//   - Failed when Flagger rolled it back: Failed since b (its Promoted condition turned
//     False after b), or still Failed after a pass of Flagger's since b that found no new
//     template (in Failed, every pass rewrites the status);
//   - Pending otherwise: an analysis under way, Flagger not there yet, or, Quiet, a settled
//     canary Flagger shows nothing new on (the push may not have changed the template).
func JudgeCanary(o client.Object, b CanaryBaseline) CanaryJudgement {
	c := o.(*flaggerv1.Canary)
	s := c.Status
	j := CanaryJudgement{FailedChecks: s.FailedChecks, Threshold: 1}
	a := analysisOf(c)
	if a != nil && a.Threshold > 0 {
		j.Threshold = a.Threshold
	}
	var promoted *flaggerv1.CanaryCondition
	for i := range s.Conditions {
		if s.Conditions[i].Type == flaggerv1.PromotedType {
			promoted = &s.Conditions[i]
			j.Message = promoted.Message
		}
	}
	moved := s.LastAppliedSpec != b.Spec
	wrote := s.LastTransitionTime.Unix() != b.Transition.Unix()
	switch {
	case slices.Contains(analysing, s.Phase):
		j.Progress = progress(c)
	case s.Phase == flaggerv1.CanaryPhaseSucceeded || s.Phase == flaggerv1.CanaryPhaseInitialized:
		if moved || wrote && slices.Contains(checkingRevision, b.Phase) {
			j.Verdict = Reached
		} else {
			j.Quiet = true
		}
	case s.Phase == flaggerv1.CanaryPhaseFailed:
		switch {
		case (moved || wrote) && s.LastAppliedSpec != "" && s.LastAppliedSpec == s.LastPromotedSpec:
			j.Verdict = Reached
		case promoted != nil && promoted.LastTransitionTime.Unix() > b.Transition.Unix(), wrote && !moved:
			j.Verdict = Failed
		default:
			j.Progress = failedProgress
		}
	}
	return j
}

// failedProgress describes a canary still Failed from an earlier template, which Flagger
// has not started to analyse the pushed one from yet.
const failedProgress = "waiting for Flagger to start the analysis (the last one rolled back)"

// progress describes a running analysis from the Canary's status.
func progress(c *flaggerv1.Canary) string {
	s := c.Status
	a := analysisOf(c)
	switch s.Phase {
	case "", flaggerv1.CanaryPhaseInitializing:
		return "waiting for Flagger to initialize the canary"
	case flaggerv1.CanaryPhaseWaiting:
		return "waiting for approval to start the analysis"
	case flaggerv1.CanaryPhaseWaitingPromotion:
		return "analysis done, waiting for approval to promote"
	case flaggerv1.CanaryPhasePromoting:
		return "analysis passed, promoting"
	case flaggerv1.CanaryPhaseFinalising:
		return "analysis passed, finalising the promotion"
	case flaggerv1.CanaryPhaseTerminating, flaggerv1.CanaryPhaseTerminated:
		return "canary being deleted"
	}
	if a != nil && a.Iterations > 0 {
		return fmt.Sprintf("analysis %d/%d", min(s.Iterations, a.Iterations), a.Iterations)
	}
	return fmt.Sprintf("analysis at weight %d%%", s.CanaryWeight)
}

func analysisOf(c *flaggerv1.Canary) *flaggerv1.CanaryAnalysis {
	if c.Spec.Analysis != nil {
		return c.Spec.Analysis
	}
	return c.Spec.CanaryAnalysis
}

// Flagger's defaults and bounds, as it applies them (Canary's Get* methods).
const (
	flaggerMinInterval      = 10 * time.Second
	flaggerDefaultInterval  = time.Minute
	flaggerDefaultDeadline  = 600 * time.Second
	flaggerDefaultMaxWeight = 100
	// flaggerControlLoop is Flagger's default -control-loop-interval: how late it may start
	// scheduling a canary's passes.
	flaggerControlLoop = 10 * time.Second
	// promotionPasses are the passes after the last analysis step: promote, finalise,
	// succeed (or roll back), and one restart's slack.
	promotionPasses = 4
)

// CanaryInterval is the interval of Flagger's passes over a Canary.
func CanaryInterval(o client.Object) time.Duration {
	a := analysisOf(o.(*flaggerv1.Canary))
	if a == nil || a.Interval == "" {
		return flaggerDefaultInterval
	}
	d, err := time.ParseDuration(a.Interval)
	if err != nil {
		return flaggerDefaultInterval
	}
	return max(d, flaggerMinInterval)
}

// QuietPeriod is how long after its baseline a settled Canary that shows nothing new is
// taken to have found the target's template unchanged: two of its passes and Flagger's
// control loop. Flagger takes a new template up at its first pass after it is applied.
func QuietPeriod(o client.Object) time.Duration {
	return 2*CanaryInterval(o) + flaggerControlLoop
}

// CanaryDuration is how long Flagger may take, at most, to decide a template applied at
// the baseline: the quiet period, the progress deadline (for the canary's pods to become
// ready) and a pass per analysis step, per failed check allowed, and per promotion step.
func CanaryDuration(o client.Object) time.Duration {
	c := o.(*flaggerv1.Canary)
	deadline := flaggerDefaultDeadline
	if c.Spec.ProgressDeadlineSeconds != nil {
		deadline = time.Duration(*c.Spec.ProgressDeadlineSeconds) * time.Second
	}
	steps, threshold := 0, 1
	if a := analysisOf(c); a != nil {
		switch {
		case a.Iterations > 0:
			steps = a.Iterations
		case len(a.StepWeights) > 0:
			steps = len(a.StepWeights)
		default:
			maxW, step := a.MaxWeight, a.StepWeight
			if maxW <= 0 {
				maxW = flaggerDefaultMaxWeight
			}
			if step <= 0 {
				step = maxW
			}
			steps = (maxW + step - 1) / step
		}
		threshold = max(a.Threshold, 1)
	}
	return QuietPeriod(o) + deadline + time.Duration(steps+threshold+promotionPasses)*CanaryInterval(o)
}

// CanaryTarget returns the Deployment a Canary targets and the primary Flagger runs its
// promoted template as ("<target>-primary").
func CanaryTarget(o client.Object) (target, primary Ref) {
	c := o.(*flaggerv1.Canary)
	target = Ref{Kind: deploymentKind, Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}
	primary = target
	primary.Name += "-primary"
	return target, primary
}
