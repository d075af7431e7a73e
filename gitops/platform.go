package gitops

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Platform reconcile errors, mapped to status codes by the server.
var (
	// ErrBadSelector: a selector field is malformed.
	ErrBadSelector = errors.New("invalid selector")
	// ErrEmptySelector: nothing narrows the request; reconciling everything needs All.
	ErrEmptySelector = errors.New("empty selector: it would reconcile every Flux object of every cluster; set all to do that")
	// ErrJobNotFound: no such reconcile job (or it expired).
	ErrJobNotFound = errors.New("reconcile job not found")
	// ErrTooManyTargets: the selector matches more objects than one job may hold.
	ErrTooManyTargets = errors.New("too many targets")
)

// RateLimitedError: too many platform reconciles; retry after RetryAfter.
type RateLimitedError struct{ RetryAfter time.Duration }

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("too many reconcile requests: retry in %s", e.RetryAfter.Round(time.Second))
}

const (
	// platformRate and platformBurst bound region-wide reconciles per replica: each patches
	// up to maxJobTargets objects across clusters and makes every Flux controller work.
	platformRate  = rate.Limit(1.0 / 10) // one every 10 s
	platformBurst = 3
	// maxJobTargets bounds one job: it is stored in a ConfigMap (1 MiB) and patched within
	// seconds.
	maxJobTargets = 2000
	// jobTTL is how long a finished job can still be read.
	jobTTL = time.Hour
	// JobLabel marks the ConfigMaps that hold reconcile jobs; its value is the selector's
	// digest, to find identical requests in flight.
	JobLabel = "flux-webhook.openova.io/reconcile-job"
)

// Selector chooses the Flux objects a platform reconcile asks to reconcile.
type Selector struct {
	// Region selects the clusters of a region (the local cluster's is --region).
	Region string `json:"region,omitempty"`
	// Clusters selects clusters by name.
	Clusters []string `json:"clusters,omitempty"`
	// Namespaces restricts to these namespaces.
	Namespaces []string `json:"namespaces,omitempty"`
	// Kinds restricts to these kinds (GitRepository, HelmChart, Kustomization,
	// HelmRelease; case-insensitive). Default: Kustomization and HelmRelease.
	Kinds []string `json:"kinds,omitempty"`
	// LabelSelector restricts to objects with matching labels.
	LabelSelector string `json:"labelSelector,omitempty"`
	// WithSource also reconciles, first, the GitRepositories and HelmCharts the selected
	// objects build from. Default true.
	WithSource *bool `json:"withSource,omitempty"`
	// All must be set for a selector that narrows nothing.
	All bool `json:"all,omitempty"`
}

// normalize validates the selector and returns it in canonical form.
func (s Selector) normalize() (Selector, error) {
	names := slices.Concat(s.Clusters, s.Namespaces)
	if s.Region != "" {
		names = append(names, s.Region)
	}
	for _, n := range names {
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			return s, fmt.Errorf("%w: %q: %s", ErrBadSelector, n, errs[0])
		}
	}
	var kinds []string
	for _, k := range s.Kinds {
		i := slices.IndexFunc(Kinds, func(kind string) bool { return strings.EqualFold(kind, k) })
		if i < 0 {
			return s, fmt.Errorf("%w: kind %q: want one of %s", ErrBadSelector, k, strings.Join(Kinds, ", "))
		}
		kinds = append(kinds, Kinds[i])
	}
	if _, err := labels.Parse(s.LabelSelector); err != nil {
		return s, fmt.Errorf("%w: labelSelector: %v", ErrBadSelector, err)
	}
	if s.Region == "" && len(s.Clusters) == 0 && len(s.Namespaces) == 0 && len(kinds) == 0 && s.LabelSelector == "" && !s.All {
		return s, ErrEmptySelector
	}
	out := s
	out.Clusters = sortedUnique(s.Clusters)
	out.Namespaces = sortedUnique(s.Namespaces)
	out.Kinds = sortedUnique(kinds)
	if out.WithSource == nil {
		t := true
		out.WithSource = &t
	}
	return out, nil
}

func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// digest identifies identical requests.
func (s Selector) digest() string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:32]
}

// Job is one platform reconcile.
type Job struct {
	ID       string    `json:"id"`
	Selector Selector  `json:"selector"`
	Token    string    `json:"token"`
	Created  time.Time `json:"created"`
	Deadline time.Time `json:"deadline"`
	Targets  []Target  `json:"targets"`
	// Skipped holds the objects selected but not requested: suspended, or not patched.
	Skipped []Outcome `json:"skipped,omitempty"`
	// Unreachable lists selected clusters that could not be asked.
	Unreachable []ClusterError `json:"unreachable,omitempty"`
}

// Progress is where one target of a job stands.
type Progress struct {
	Target
	// State is pending, or the final success, failure or error.
	State       string `json:"state"`
	Description string `json:"description,omitempty"`
}

// JobStatus is a job and its progress.
type JobStatus struct {
	Job
	Coalesced bool           `json:"coalesced,omitempty"`
	Progress  []Progress     `json:"progress"`
	Counts    map[string]int `json:"counts"`
	Done      bool           `json:"done"`
}

// Platform runs region-wide reconciles for platform teams.
type Platform struct {
	Clusters *ClusterSet
	Jobs     *JobStore
	// ResultTimeout is how long Flux has to answer before a target is an error.
	ResultTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	once    sync.Once
	limiter *rate.Limiter
}

func (p *Platform) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Reconcile asks every object the selector matches to reconcile, sources first, and
// returns the job. An identical request still in flight is not repeated: its job is
// returned with Coalesced set.
func (p *Platform) Reconcile(ctx context.Context, sel Selector) (*JobStatus, error) {
	p.once.Do(func() { p.limiter = rate.NewLimiter(platformRate, platformBurst) })
	sel, err := sel.normalize()
	if err != nil {
		return nil, err
	}
	digest := sel.digest()
	inflight, err := p.Jobs.inFlight(ctx, digest)
	if err != nil {
		return nil, err
	}
	for _, j := range inflight {
		st := p.status(ctx, j)
		if !st.Done {
			st.Coalesced = true
			return st, nil
		}
	}
	if r := p.limiter.Reserve(); r.Delay() > 0 {
		d := r.Delay()
		r.Cancel()
		return nil, &RateLimitedError{RetryAfter: d}
	}
	tok, at := nextToken(p.now)
	job := &Job{ID: newID(), Selector: sel, Token: tok, Created: at, Deadline: at.Add(p.ResultTimeout)}
	for _, c := range p.Clusters.Clusters() {
		if !selectsCluster(sel, c) {
			continue
		}
		if !c.Ready() {
			job.Unreachable = append(job.Unreachable, ClusterError{Cluster: c.Name, Error: "never reached (caches not synced)"})
			continue
		}
		objs, err := c.selectObjects(ctx, sel)
		if err != nil {
			job.Unreachable = append(job.Unreachable, ClusterError{Cluster: c.Name, Error: publicError(ctx, c.Name, err)})
			continue
		}
		if len(job.Targets)+len(objs) > maxJobTargets {
			return nil, fmt.Errorf("%w: the selector matches more than %d objects", ErrTooManyTargets, maxJobTargets)
		}
		for _, o := range objs {
			t := Target{Cluster: c.Name, Kind: kindOf(o), Namespace: o.GetNamespace(), Name: o.GetName()}
			if suspended(o) {
				job.Skipped = append(job.Skipped, Outcome{Target: t, Result: ResultSuspended})
				continue
			}
			if err := c.annotate(ctx, o, tok); err != nil {
				job.Skipped = append(job.Skipped, Outcome{Target: t, Result: ResultError, Error: publicError(ctx, c.Name, err)})
				continue
			}
			job.Targets = append(job.Targets, t)
		}
	}
	if len(job.Targets) == 0 && len(job.Unreachable) > 0 && len(job.Skipped) == 0 {
		return nil, fmt.Errorf("%w: no selected cluster could be reached", ErrUnavailable)
	}
	if err := p.Jobs.save(ctx, job, digest); err != nil {
		return nil, err
	}
	log.FromContext(ctx).Info("platform reconcile requested", "job", job.ID, "targets", len(job.Targets),
		"skipped", len(job.Skipped), "unreachable", len(job.Unreachable))
	p.Jobs.prune(ctx, p.now().Add(-jobTTL))
	return p.status(ctx, job), nil
}

// Status returns a job's progress, read from the clusters' caches.
func (p *Platform) Status(ctx context.Context, id string) (*JobStatus, error) {
	job, err := p.Jobs.load(ctx, id)
	if err != nil {
		return nil, err
	}
	return p.status(ctx, job), nil
}

func (p *Platform) status(ctx context.Context, job *Job) *JobStatus {
	st := &JobStatus{Job: *job, Counts: map[string]int{}, Done: true}
	expired := p.now().After(job.Deadline)
	for _, t := range job.Targets {
		pr := Progress{Target: t, State: StatePending}
		if v := p.targetVerdict(ctx, t, Request{Token: job.Token, RequestedAt: job.Created}); v.State != "" {
			pr.State, pr.Description = v.State, v.Description
		} else if expired {
			pr.State, pr.Description = StateError, fmt.Sprintf("no answer from Flux within %s", job.Deadline.Sub(job.Created))
		}
		st.Done = st.Done && pr.State != StatePending
		st.Counts[pr.State]++
		st.Progress = append(st.Progress, pr)
	}
	return st
}

// targetVerdict evaluates one target of a platform job: Flux handled the request (or a
// later one) and says Ready or not.
func (p *Platform) targetVerdict(ctx context.Context, t Target, req Request) Verdict {
	c := p.Clusters.Get(t.Cluster)
	if c == nil {
		return Verdict{StateError, "cluster " + t.Cluster + " is no longer registered"}
	}
	obj, err := c.cachedObject(ctx, t)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return Verdict{StateError, "deleted before Flux answered"}
		}
		return Verdict{}
	}
	r := readinessOf(obj)
	switch {
	case !r.current || !handled(obj, req):
		return Verdict{}
	case r.ready:
		return Verdict{StateSuccess, appliedRevision(obj)}
	case r.failed:
		return Verdict{StateFailure, r.message}
	}
	return Verdict{}
}

// appliedRevision describes what an object is at, for a success.
func appliedRevision(o client.Object) string {
	switch o := o.(type) {
	case *sourcev1.GitRepository:
		if o.Status.Artifact != nil {
			return "fetched " + shortRevision(o.Status.Artifact.Revision)
		}
	case *sourcev1.HelmChart:
		if o.Status.Artifact != nil {
			return "packaged chart " + o.Status.Artifact.Revision
		}
	case *kustomizev1.Kustomization:
		return "applied " + shortRevision(o.Status.LastAppliedRevision)
	case *helmv2.HelmRelease:
		return "released chart " + o.Status.LastAttemptedRevision
	}
	return "reconciled"
}

func selectsCluster(sel Selector, c *Cluster) bool {
	if sel.Region != "" && c.Region != sel.Region {
		return false
	}
	return len(sel.Clusters) == 0 || slices.Contains(sel.Clusters, c.Name)
}

// selectObjects lists, from the cache, the objects of the selector's kinds, namespaces and
// labels, and (WithSource) the sources they build from, sources first.
func (c *Cluster) selectObjects(ctx context.Context, sel Selector) ([]client.Object, error) {
	kinds := sel.Kinds
	if len(kinds) == 0 {
		kinds = []string{KindKustomization, KindHelmRelease}
	}
	ls, _ := labels.Parse(sel.LabelSelector)
	byKind := map[string][]client.Object{}
	seen := map[string]bool{}
	add := func(o client.Object) {
		kind := kindOf(o)
		key := kind + "/" + o.GetNamespace() + "/" + o.GetName()
		if !seen[key] {
			seen[key] = true
			byKind[kind] = append(byKind[kind], o)
		}
	}
	namespaces := sel.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	for _, kind := range kinds {
		for _, ns := range namespaces {
			list := newList(kind)
			if err := c.GetCache().List(ctx, list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: ls}); err != nil {
				return nil, fmt.Errorf("list %s: %w", kind, err)
			}
			items, _ := apimeta.ExtractList(list)
			for _, it := range items {
				add(it.(client.Object))
			}
		}
	}
	if *sel.WithSource {
		for _, o := range slices.Concat(byKind[KindKustomization], byKind[KindHelmRelease], byKind[KindHelmChart]) {
			for _, src := range c.sourcesOf(ctx, o) {
				add(src)
			}
		}
	}
	var out []client.Object
	for _, kind := range Kinds {
		group := byKind[kind]
		slices.SortFunc(group, func(a, b client.Object) int {
			return strings.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
		})
		out = append(out, group...)
	}
	return out, nil
}

// sourcesOf returns the GitRepository and HelmChart an object builds from, when cached,
// sources of sources first.
func (c *Cluster) sourcesOf(ctx context.Context, o client.Object) []client.Object {
	gitRef, chartRef := sourceRefs(o)
	if chartRef != nil {
		hc := &sourcev1.HelmChart{}
		if err := c.GetCache().Get(ctx, *chartRef, hc); err == nil {
			return append(c.sourcesOf(ctx, hc), hc)
		}
	}
	if gitRef != nil {
		src := &sourcev1.GitRepository{}
		if err := c.GetCache().Get(ctx, *gitRef, src); err == nil {
			return []client.Object{src}
		}
	}
	return nil
}

func newList(kind string) client.ObjectList {
	switch kind {
	case KindGitRepository:
		return &sourcev1.GitRepositoryList{}
	case KindHelmChart:
		return &sourcev1.HelmChartList{}
	case KindKustomization:
		return &kustomizev1.KustomizationList{}
	}
	return &helmv2.HelmReleaseList{}
}

// annotate merge-patches requestedAt on o's metadata only, retrying on conflict.
func (c *Cluster) annotate(ctx context.Context, o client.Object, token string) error {
	_, err := c.patchMetadata(ctx, o, nil, func(m *metav1.PartialObjectMetadata) error {
		m.Annotations[meta.ReconcileRequestAnnotation] = token
		return nil
	})
	return err
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// JobStore keeps reconcile jobs in ConfigMaps of one namespace, so that any replica can
// answer for a job and identical requests in flight are found whichever replica got them.
type JobStore struct {
	Client    client.Client // writes
	Reader    client.Reader // uncached reads
	Namespace string
}

func jobName(id string) string { return "flux-webhook-job-" + id }

func (s *JobStore) save(ctx context.Context, job *Job, digest string) error {
	b, err := json.Marshal(job)
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: jobName(job.ID),
			Labels: map[string]string{JobLabel: digest, "app.kubernetes.io/managed-by": "flux-webhook"}},
		Data: map[string]string{"job.json": string(b)},
	}
	if err := s.Client.Create(ctx, cm, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("save job %s: %w", job.ID, err)
	}
	return nil
}

func (s *JobStore) load(ctx context.Context, id string) (*Job, error) {
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, ErrJobNotFound
	}
	cm := &corev1.ConfigMap{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: jobName(id)}, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, ErrJobNotFound
		}
		return nil, fmt.Errorf("load job %s: %w", id, err)
	}
	return decodeJob(cm)
}

func decodeJob(cm *corev1.ConfigMap) (*Job, error) {
	var j Job
	if err := json.Unmarshal([]byte(cm.Data["job.json"]), &j); err != nil {
		return nil, fmt.Errorf("job %s: %w", cm.Name, err)
	}
	return &j, nil
}

func (s *JobStore) list(ctx context.Context, opts ...client.ListOption) ([]*Job, error) {
	var cms corev1.ConfigMapList
	if err := s.Reader.List(ctx, &cms, append(opts, client.InNamespace(s.Namespace))...); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var out []*Job
	for i := range cms.Items {
		if j, err := decodeJob(&cms.Items[i]); err == nil {
			out = append(out, j)
		}
	}
	return out, nil
}

func (s *JobStore) inFlight(ctx context.Context, digest string) ([]*Job, error) {
	return s.list(ctx, client.MatchingLabels{JobLabel: digest})
}

// prune deletes jobs created before a time; a failure is logged (a missing permission would
// otherwise let jobs pile up unseen) and left for the next prune.
func (s *JobStore) prune(ctx context.Context, before time.Time) {
	logger := log.FromContext(ctx)
	jobs, err := s.list(ctx, client.HasLabels{JobLabel})
	if err != nil {
		logger.Error(err, "prune reconcile jobs")
		return
	}
	for _, j := range jobs {
		if j.Created.Before(before) {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: jobName(j.ID)}}
			if err := client.IgnoreNotFound(s.Client.Delete(ctx, cm)); err != nil {
				logger.Error(err, "prune reconcile job", "job", j.ID)
			}
		}
	}
}
