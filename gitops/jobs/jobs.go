// Package jobs runs region-wide reconciles for platform teams: a selector of clusters,
// namespaces, kinds and labels, saved as a job (one write, no patch: any replica answers at
// once), then turned by the leader's Worker into requestedAt patches, sources first, at a
// rate that leaves /hook's pushes most of each cluster's client; the job's progress is read
// by any replica from the clusters' caches.
package jobs

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
	// platformRate and platformBurst bound region-wide reconciles across all replicas (a
	// token bucket in a ConfigMap): each patches up to maxJobTargets objects across clusters
	// and makes every Flux controller work.
	platformRate  = 1.0 / 10 // one every 10 s
	platformBurst = 3
	// maxJobTargets bounds one job: its targets are stored in a ConfigMap (1 MiB), about
	// 60 bytes each.
	maxJobTargets = 10000
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

// Platform answers the platform API: it saves jobs and reports their progress.
type Platform struct {
	Clusters *cluster.Set
	Jobs     *JobStore
	// ResultTimeout is how long Flux has to answer before a target is an error.
	ResultTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (p *Platform) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Reconcile saves a job asking every object the selector matches to reconcile, for the
// leader's Worker to request, and returns it, queued. It reads only the caches (how many
// objects the selector matches: a job over maxJobTargets is refused whole) and writes once
// (the job; and a token of the job rate). An identical request still in flight is not
// repeated: its job is returned with Coalesced set.
func (p *Platform) Reconcile(ctx context.Context, sel api.Selector) (*api.JobStatus, error) {
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
	matched, reachable := 0, 0
	var unreachable []api.ClusterError
	for _, c := range p.Clusters.Clusters() {
		if !selectsCluster(sel, c) {
			continue
		}
		if !c.Ready() {
			unreachable = append(unreachable, api.ClusterError{Cluster: c.Name, Error: "never reached (caches not synced)"})
			continue
		}
		objs, err := selectObjects(ctx, c, sel)
		if err != nil {
			unreachable = append(unreachable, api.ClusterError{Cluster: c.Name, Error: cluster.PublicError(ctx, c.Name, err)})
			continue
		}
		reachable++
		if matched += len(objs); matched > maxJobTargets {
			return nil, fmt.Errorf("%w: the selector matches more than %d objects", ErrTooManyTargets, maxJobTargets)
		}
	}
	if reachable == 0 && len(unreachable) > 0 {
		return nil, fmt.Errorf("%w: no selected cluster could be reached", cluster.ErrUnavailable)
	}
	if err := p.Jobs.take(ctx, p.now()); err != nil {
		return nil, err
	}
	tok, at := request.NextToken(p.now)
	job := &api.Job{ID: newID(), Selector: sel, Token: tok, Created: at, Deadline: at.Add(p.ResultTimeout), Unreachable: unreachable}
	if err := p.Jobs.save(ctx, job, dig); err != nil {
		return nil, err
	}
	log.FromContext(ctx).Info("platform reconcile queued", "job", job.ID, "matched", matched, "unreachable", len(unreachable))
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
	st := &api.JobStatus{Job: *job, Counts: map[string]int{}, Done: job.Requested}
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
	_, err := c.PatchMetadata(ctx, cluster.Requests, o, nil, func(m *metav1.PartialObjectMetadata) error {
		m.Annotations[meta.ReconcileRequestAnnotation] = token
		return nil
	})
	return err
}

// sortTargets orders targets as selectObjects does: by kind's stage, then kind, namespace,
// name (the workers finish in any order).
func sortTargets(ts []api.Target) {
	stage := map[string]int{}
	for _, k := range flux.Kinds() {
		stage[k.Name()] = k.Stage()
	}
	slices.SortFunc(ts, func(a, b api.Target) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(stage[a.Kind], stage[b.Kind]), cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}
