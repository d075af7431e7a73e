// Package jobs runs region-wide reconciles for platform teams: a selector of clusters,
// namespaces, kinds and labels, turned into requestedAt patches (sources first) and a job
// whose progress any replica can answer, from the clusters' caches.
package jobs

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/request"
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

// normalize validates the selector and returns it in canonical form.
func normalize(s api.Selector) (api.Selector, error) {
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
	for _, name := range s.Kinds {
		k, err := flux.Lookup(name)
		if err != nil || !k.Target() {
			return s, fmt.Errorf("%w: kind %q: want one of %s", ErrBadSelector, name, strings.Join(targetKinds(), ", "))
		}
		kinds = append(kinds, k.Name())
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

// targetKinds names the kinds a selector may ask for.
func targetKinds() []string {
	var out []string
	for _, k := range flux.Kinds() {
		if k.Target() {
			out = append(out, k.Name())
		}
	}
	return out
}

// defaultKinds are what a selector naming no kind reconciles: what applies to the cluster.
var defaultKinds = []string{"Kustomization", "HelmRelease"}

func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// digest identifies identical requests.
func digest(s api.Selector) string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:32]
}

// Platform runs region-wide reconciles for platform teams.
type Platform struct {
	Clusters *cluster.Set
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
func (p *Platform) Reconcile(ctx context.Context, sel api.Selector) (*api.JobStatus, error) {
	p.once.Do(func() { p.limiter = rate.NewLimiter(platformRate, platformBurst) })
	sel, err := normalize(sel)
	if err != nil {
		return nil, err
	}
	dig := digest(sel)
	inflight, err := p.Jobs.inFlight(ctx, dig)
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
	tok, at := request.NextToken(p.now)
	job := &api.Job{ID: newID(), Selector: sel, Token: tok, Created: at, Deadline: at.Add(p.ResultTimeout)}
	for _, c := range p.Clusters.Clusters() {
		if !selectsCluster(sel, c) {
			continue
		}
		if !c.Ready() {
			job.Unreachable = append(job.Unreachable, api.ClusterError{Cluster: c.Name, Error: "never reached (caches not synced)"})
			continue
		}
		objs, err := selectObjects(ctx, c, sel)
		if err != nil {
			job.Unreachable = append(job.Unreachable, api.ClusterError{Cluster: c.Name, Error: cluster.PublicError(ctx, c.Name, err)})
			continue
		}
		if len(job.Targets)+len(objs) > maxJobTargets {
			return nil, fmt.Errorf("%w: the selector matches more than %d objects", ErrTooManyTargets, maxJobTargets)
		}
		for _, o := range objs {
			k, _ := flux.KindFor(o)
			t := api.Target{Cluster: c.Name, Kind: k.Name(), Namespace: o.GetNamespace(), Name: o.GetName()}
			if k.Suspended(o) {
				job.Skipped = append(job.Skipped, api.Outcome{Target: t, Result: api.ResultSuspended})
				continue
			}
			if err := annotate(ctx, c, o, tok); err != nil {
				job.Skipped = append(job.Skipped, api.Outcome{Target: t, Result: api.ResultError, Error: cluster.PublicError(ctx, c.Name, err)})
				continue
			}
			job.Targets = append(job.Targets, t)
		}
	}
	if len(job.Targets) == 0 && len(job.Unreachable) > 0 && len(job.Skipped) == 0 {
		return nil, fmt.Errorf("%w: no selected cluster could be reached", cluster.ErrUnavailable)
	}
	if err := p.Jobs.save(ctx, job, dig); err != nil {
		return nil, err
	}
	log.FromContext(ctx).Info("platform reconcile requested", "job", job.ID, "targets", len(job.Targets),
		"skipped", len(job.Skipped), "unreachable", len(job.Unreachable))
	p.Jobs.prune(ctx, p.now().Add(-jobTTL))
	return p.status(ctx, job), nil
}

// Status returns a job's progress, read from the clusters' caches.
func (p *Platform) Status(ctx context.Context, id string) (*api.JobStatus, error) {
	job, err := p.Jobs.load(ctx, id)
	if err != nil {
		return nil, err
	}
	return p.status(ctx, job), nil
}

func (p *Platform) status(ctx context.Context, job *api.Job) *api.JobStatus {
	st := &api.JobStatus{Job: *job, Counts: map[string]int{}, Done: true}
	expired := p.now().After(job.Deadline)
	want := observe.WantAny(job.Token, job.Created)
	for _, t := range job.Targets {
		pr := api.Progress{Target: t, State: api.StatePending}
		if s := p.progress(ctx, t, want); s.State != "" {
			pr.State, pr.Description = s.State, s.Description
		} else if expired {
			s := observe.JobTimedOut(job.Deadline.Sub(job.Created))
			pr.State, pr.Description = s.State, s.Description
		}
		st.Done = st.Done && api.Final(pr.State)
		st.Counts[pr.State]++
		st.Progress = append(st.Progress, pr)
	}
	return st
}

// progress evaluates one target of a job from its cluster's cache: State "" while pending.
func (p *Platform) progress(ctx context.Context, t api.Target, want flux.Want) api.Status {
	c := p.Clusters.Get(t.Cluster)
	if c == nil {
		return observe.ClusterGone(t.Cluster)
	}
	obj, err := c.Object(ctx, t)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return observe.Deleted()
		}
		return api.Status{}
	}
	return observe.Evaluate(obj, want, c.Sources(ctx, obj))
}

func selectsCluster(sel api.Selector, c *cluster.Cluster) bool {
	if sel.Region != "" && c.Region != sel.Region {
		return false
	}
	return len(sel.Clusters) == 0 || slices.Contains(sel.Clusters, c.Name)
}

// selectObjects lists, from c's cache, the objects of the selector's kinds (those c
// serves), namespaces and labels, and (WithSource) what they build from; sources first.
func selectObjects(ctx context.Context, c *cluster.Cluster, sel api.Selector) ([]client.Object, error) {
	names := sel.Kinds
	if len(names) == 0 {
		names = defaultKinds
	}
	ls, _ := labels.Parse(sel.LabelSelector)
	namespaces := sel.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	selected := map[flux.Ref]client.Object{}
	for _, k := range c.Kinds() {
		if !slices.Contains(names, k.Name()) {
			continue
		}
		for _, ns := range namespaces {
			list := k.NewList()
			if err := c.GetCache().List(ctx, list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: ls}); err != nil {
				return nil, fmt.Errorf("list %s: %w", k.Name(), err)
			}
			for _, o := range flux.Items(list) {
				selected[flux.RefOf(o)] = o
			}
		}
	}
	if *sel.WithSource {
		for _, o := range maps.Clone(selected) {
			for ref, src := range c.Sources(ctx, o) {
				if k, _ := flux.Lookup(ref.Kind); k.Target() {
					selected[ref] = src
				}
			}
		}
	}
	return sourcesFirst(selected), nil
}

// sourcesFirst orders objects by their kind's stage, then by namespace and name.
func sourcesFirst(objs map[flux.Ref]client.Object) []client.Object {
	stage := map[string]int{}
	for _, k := range flux.Kinds() {
		stage[k.Name()] = k.Stage()
	}
	refs := slices.Collect(maps.Keys(objs))
	slices.SortFunc(refs, func(a, b flux.Ref) int {
		return cmp.Or(cmp.Compare(stage[a.Kind], stage[b.Kind]), cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	out := make([]client.Object, 0, len(refs))
	for _, r := range refs {
		out = append(out, objs[r])
	}
	return out
}

// annotate merge-patches requestedAt on o's metadata only, retrying on conflict.
func annotate(ctx context.Context, c *cluster.Cluster, o client.Object, token string) error {
	_, err := c.PatchMetadata(ctx, o, nil, func(m *metav1.PartialObjectMetadata) error {
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

func (s *JobStore) save(ctx context.Context, job *api.Job, digest string) error {
	b, err := json.Marshal(job)
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: jobName(job.ID),
			Labels: map[string]string{JobLabel: digest, "app.kubernetes.io/managed-by": "flux-webhook"}},
		Data: map[string]string{"job.json": string(b)},
	}
	if err := s.Client.Create(ctx, cm, client.FieldOwner(cluster.FieldOwner)); err != nil {
		return fmt.Errorf("save job %s: %w", job.ID, err)
	}
	return nil
}

func (s *JobStore) load(ctx context.Context, id string) (*api.Job, error) {
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

func decodeJob(cm *corev1.ConfigMap) (*api.Job, error) {
	var j api.Job
	if err := json.Unmarshal([]byte(cm.Data["job.json"]), &j); err != nil {
		return nil, fmt.Errorf("job %s: %w", cm.Name, err)
	}
	return &j, nil
}

func (s *JobStore) list(ctx context.Context, opts ...client.ListOption) ([]*api.Job, error) {
	var cms corev1.ConfigMapList
	if err := s.Reader.List(ctx, &cms, append(opts, client.InNamespace(s.Namespace))...); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var out []*api.Job
	for i := range cms.Items {
		if j, err := decodeJob(&cms.Items[i]); err == nil {
			out = append(out, j)
		}
	}
	return out, nil
}

func (s *JobStore) inFlight(ctx context.Context, digest string) ([]*api.Job, error) {
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
