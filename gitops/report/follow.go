package report

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
)

// Followers: Flagger's canaries of the Deployments a Kustomization (or HelmRelease) applied.
// Once the object's request reached the pushed commit, each canary of a Deployment its
// inventory lists gets its own status, flux/<cluster>/canary/<namespace>/<name>: pending as
// Flagger analyses, then promoted or rolled back. Their progress is kept in the object's
// request record (record.Follower), as the object's own.

// findFollowers returns the canaries of the Deployments obj applied, as the cache has them,
// each with its baseline (what its status says now, as the commit is seen applied), at most
// record.MaxFollowers.
func (r *Reporter) findFollowers(ctx context.Context, obj client.Object) ([]record.Follower, error) {
	if !r.Cluster.Serves(flux.CanaryKind) {
		return nil, nil
	}
	k, _ := flux.Lookup(flux.CanaryKind)
	now := r.now()
	var out []record.Follower
	for _, d := range flux.Applied(obj) {
		list := k.NewList()
		if err := r.Cluster.GetCache().List(ctx, list, client.MatchingFields{flux.IndexSource: d.String()}); err != nil {
			return nil, fmt.Errorf("list canaries of %s: %w", d, err)
		}
		for _, c := range flux.Items(list) {
			out = append(out, record.Follower{Kind: flux.CanaryKind, Namespace: c.GetNamespace(), Name: c.GetName(),
				Since: now, Base: flux.BaselineOf(c).String()})
		}
	}
	slices.SortFunc(out, func(a, b record.Follower) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	if len(out) > record.MaxFollowers {
		log.FromContext(ctx).Error(errors.New("too many canaries"), "canaries not followed",
			"followed", record.MaxFollowers, "left", len(out)-record.MaxFollowers)
		out = out[:record.MaxFollowers]
	}
	return out, nil
}

// recordFollowers records, once, the followers of a request that reached its commit, before
// its final status goes out; it returns the request as recorded.
func (r *Reporter) recordFollowers(ctx context.Context, obj client.Object, req record.Request) (record.Request, error) {
	if req.Followers != nil {
		return req, nil
	}
	fs, err := r.findFollowers(ctx, obj)
	if err != nil || len(fs) == 0 {
		return req, err
	}
	err = r.updateRecord(ctx, obj, func(rec *record.Record) error {
		q := rec.Find(req.Token)
		if q == nil || q.Final || !q.SameProgress(req) {
			return errMoved
		}
		if q.Followers == nil {
			q.Followers = fs
		}
		req.Followers = q.Followers
		return nil
	})
	if err == nil {
		log.FromContext(ctx).Info("canaries followed", "repository", req.Repository, "commit", req.SHA, "canaries", len(req.Followers))
	}
	return req, err
}

// followerContexts are the status contexts of a request's followers not finished yet.
func followerContexts(cluster string, req record.Request) []string {
	var out []string
	for _, f := range req.Followers {
		if !f.Final {
			out = append(out, f.Target(cluster).Context())
		}
	}
	return out
}

// follow reports on the followers of a request whose own status is final: what Flagger
// says of each, posted when it changed, until each has its final status.
func (r *Reporter) follow(ctx context.Context, obj client.Object, req record.Request) (reconcile.Result, error) {
	var wake time.Duration
	for _, f := range req.Followers {
		if f.Final {
			continue
		}
		st, again, err := r.followerStatus(ctx, f)
		if err != nil {
			return reconcile.Result{}, err
		}
		if again > 0 && (wake == 0 || again < wake) {
			wake = again
		}
		if err := r.deliverFollower(ctx, obj, req, req.Repository, f, st); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{RequeueAfter: wake}, nil
}

// followerStatus is what a follower's status is now, and when to look again without an
// event (its quiet period or deadline ending).
func (r *Reporter) followerStatus(ctx context.Context, f record.Follower) (api.Status, time.Duration, error) {
	now := r.now()
	if !r.Cluster.Serves(f.Kind) {
		return observe.NotFollowed("the cluster no longer serves " + f.Kind), 0, nil
	}
	o, err := r.Cluster.Object(ctx, f.Target(r.Cluster.Name))
	if err != nil {
		if apierrors.IsNotFound(err) {
			return observe.CanaryDeleted(), 0, nil
		}
		return api.Status{}, 0, err
	}
	base, err := flux.ParseBaseline(f.Base)
	if err != nil {
		return observe.NotFollowed(err.Error()), 0, nil
	}
	limit := max(flux.CanaryDuration(o), r.ResultTimeout)
	deadline := f.Since.Add(limit)
	j := flux.JudgeCanary(o, base)
	quietEnd := f.Since.Add(flux.QuietPeriod(o))
	// Without an event of the canary's to wake it: at the end of the quiet period, then
	// at each of Flagger's passes.
	again := flux.CanaryInterval(o)
	switch {
	case j.Verdict == flux.Failed:
		return observe.RolledBack(r.rollbackReason(ctx, o, j)), 0, nil
	case j.Verdict == flux.Reached, j.Quiet && !now.Before(quietEnd):
		images, same, err := r.promotedImages(ctx, o)
		switch {
		case err != nil:
			log.FromContext(ctx).Error(err, "read the canary's Deployments", "namespace", o.GetNamespace(), "name", o.GetName())
			j.Progress = "promoted, but its Deployments cannot be read (see flux-webhook's log)"
		case same:
			return observe.Promoted(images), 0, nil
		default:
			// The target's template is not what the primary runs: Flagger has not taken it
			// up (yet), whatever its phase says.
			j.Progress = "waiting for Flagger to take up the new template"
		}
	case j.Quiet:
		j.Progress = "waiting for Flagger to look at the target"
		again = quietEnd.Sub(now)
	}
	if !now.Before(deadline) {
		return observe.CanaryTimedOut(limit, j.Progress), 0, nil
	}
	why := ""
	if j.FailedChecks > 0 {
		why = r.lastWarning(ctx, o, false)
	}
	return observe.CanaryPending(j.Progress, j.FailedChecks, j.Threshold, why), max(min(again, deadline.Sub(now)), time.Second), nil
}

// promotedImages returns the images of the primary Deployment Flagger runs the promoted
// template as, and whether they are the target's (the template the push applied).
func (r *Reporter) promotedImages(ctx context.Context, o client.Object) ([]string, bool, error) {
	target, primary := flux.CanaryTarget(o)
	images := func(ref flux.Ref) ([]string, error) {
		d := &appsv1.Deployment{}
		if err := r.Cluster.GetAPIReader().Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, d); err != nil {
			return nil, fmt.Errorf("get deployment %s/%s: %w", ref.Namespace, ref.Name, err)
		}
		var out []string
		for _, c := range d.Spec.Template.Spec.Containers {
			out = append(out, c.Image)
		}
		return out, nil
	}
	want, err := images(target)
	if err != nil {
		return nil, false, err
	}
	got, err := images(primary)
	if err != nil {
		return nil, false, err
	}
	return got, slices.Equal(got, want), nil
}

// maxEventsRead bounds the Events read for Flagger's reason: those of one canary.
const maxEventsRead = 200

// rollbackReason is Flagger's reason for a rollback: its last warning on the canary (a
// failed metric check, the progress deadline), else its Promoted condition's message.
func (r *Reporter) rollbackReason(ctx context.Context, o client.Object, j flux.CanaryJudgement) string {
	if why := r.lastWarning(ctx, o, true); why != "" {
		return why
	}
	return cmp.Or(j.Message, "analysis failed")
}

// lastWarning returns the message of the last warning Flagger recorded on a canary that
// says why it halted or rolled back ("" when none can be read). Events are anyone's to
// write in the namespace: they only ever word a verdict the Canary's status made.
func (r *Reporter) lastWarning(ctx context.Context, o client.Object, rollback bool) string {
	var evs corev1.EventList
	err := r.Cluster.GetAPIReader().List(ctx, &evs, client.InNamespace(o.GetNamespace()), client.Limit(maxEventsRead),
		client.MatchingFields{"involvedObject.uid": string(o.GetUID()), "type": corev1.EventTypeWarning})
	if err != nil {
		log.FromContext(ctx).Error(err, "read canary events", "namespace", o.GetNamespace(), "name", o.GetName())
		return ""
	}
	at := func(e corev1.Event) time.Time {
		return slices.MaxFunc([]time.Time{e.LastTimestamp.Time, e.EventTime.Time, e.CreationTimestamp.Time}, func(a, b time.Time) int { return a.Compare(b) })
	}
	slices.SortStableFunc(evs.Items, func(a, b corev1.Event) int { return at(b).Compare(at(a)) })
	for _, e := range evs.Items {
		msg := e.Message
		switch {
		case strings.HasPrefix(msg, "Halt "):
			return msg
		case rollback && strings.Contains(msg, "progress deadline exceeded"):
			return msg
		}
	}
	return ""
}

// shownID identifies a pending description, for Follower.Shown.
func shownID(st api.Status) string {
	h := fnv.New32a()
	h.Write([]byte(st.Description))
	return strconv.FormatUint(uint64(h.Sum32()), 36)
}

// findFollower returns the follower f of the request of token in rec, nil if gone.
func findFollower(rec *record.Record, token string, f record.Follower) (*record.Request, *record.Follower) {
	q := rec.Find(token)
	if q == nil {
		return nil, nil
	}
	for i := range q.Followers {
		g := &q.Followers[i]
		if g.Kind == f.Kind && g.Namespace == f.Namespace && g.Name == f.Name {
			return q, g
		}
	}
	return q, nil
}

// sameFollowerProgress reports whether g is as far as f was seen.
func sameFollowerProgress(g, f *record.Follower) bool {
	return g.Posted == f.Posted && g.Final == f.Final && g.Shown == f.Shown &&
		(g.Intent == nil) == (f.Intent == nil) && (g.Intent == nil || *g.Intent == *f.Intent)
}

// deliverFollower posts st for follower f of req once, as deliver does for the object: the
// intent recorded first, then the post, then the result. A pending status is posted when its
// description changed; with per-cluster statuses only the final one goes (to the
// aggregator).
func (r *Reporter) deliverFollower(ctx context.Context, obj client.Object, req record.Request, repository string, f record.Follower, st api.Status) error {
	ft := f.Target(r.Cluster.Name)
	logger := log.FromContext(ctx).WithValues("repository", repository, "commit", req.SHA, "delivery", req.Delivery, "context", ft.Context())
	st.Description = record.Bounded(st.Description)
	shown := f.Shown
	if st.State == api.StatePending {
		shown = shownID(st)
		if f.Posted == api.StatePending && f.Shown == shown || req.Aggregate != "" && f.Posted == api.StatePending {
			return nil
		}
	}
	post := req.Aggregate == "" || api.Final(st.State)
	since := f.IntentSince
	if post && (f.Intent == nil || *f.Intent != st) {
		since = r.now()
		err := r.updateRecord(ctx, obj, func(rec *record.Record) error {
			_, g := findFollower(rec, req.Token, f)
			if g == nil || g.Final || !sameFollowerProgress(g, &f) {
				return errMoved
			}
			g.Intent, g.IntentSince = &st, since
			return nil
		})
		if err != nil {
			return err
		}
	} else if post {
		// Recorded before, by a reporter that stopped or whose post failed: is it still
		// owed, and (if Gitea is asked) was it posted?
		m, err := r.Cluster.ReadMetadata(ctx, cluster.Bookkeeping, obj)
		if err != nil {
			return err
		}
		live, err := r.Cluster.OpenRecord(flux.KindOf(obj), m)
		if err != nil {
			return err
		}
		if _, g := findFollower(&live, req.Token, f); g == nil || g.Final || !sameFollowerProgress(g, &f) {
			return errMoved
		}
		if r.Lookup != nil && req.SHA != "" && req.Aggregate == "" {
			latest, err := r.Lookup.LatestStatus(ctx, repository, req.SHA, ft.Context())
			if err != nil {
				return fmt.Errorf("look up status %s: %w", ft.Context(), err)
			}
			post = latest == nil || *latest != st
		}
	}
	lost := false
	if post {
		cs := CommitStatus{Repository: repository, SHA: req.SHA, Context: ft.Context(), Target: ft, Status: st}
		if err := send(ctx, r.Poster, r.Aggregator, req, cs); err != nil {
			statusPostErrors.WithLabelValues(r.Cluster.Name).Inc()
			if !permanent(err) && r.now().Sub(since) < r.ResultTimeout {
				return fmt.Errorf("post status %s: %w", ft.Context(), err) // retried with backoff
			}
			statusesLost.WithLabelValues(r.Cluster.Name).Inc()
			logger.Error(err, "status lost", "state", st.State, "description", st.Description)
			lost = true
		} else {
			statusesPosted.WithLabelValues(r.Cluster.Name, ft.Kind, st.State).Inc()
			logger.Info("status posted", "state", st.State, "description", st.Description)
		}
	}
	err := r.updateRecord(ctx, obj, func(rec *record.Record) error {
		_, g := findFollower(rec, req.Token, f)
		if g == nil || g.Final {
			return errMoved
		}
		g.Posted, g.Intent, g.Shown = st.State, nil, shown
		g.Final, g.Lost = api.Final(st.State) || lost, lost
		return nil
	})
	if err != nil {
		return err
	}
	if api.Final(st.State) && !lost {
		req.Repository = repository
		var canary client.Object
		if o, err := r.Cluster.Object(ctx, ft); err == nil {
			canary = o
		}
		r.finished(ctx, ft, canary, req, st)
	}
	return nil
}

// reportSupersededFollowers posts the superseded warning of every follower of a superseded
// request still owed one: a newer push applied another template before Flagger decided.
func (r *Reporter) reportSupersededFollowers(ctx context.Context, obj client.Object, rec record.Record) error {
	for _, s := range rec.Superseded {
		for _, f := range s.Followers {
			if f.Final {
				continue
			}
			if err := r.deliverFollower(ctx, obj, s.Request, rec.RepositoryOf(s), f, supersededStatus(s)); err != nil {
				return err
			}
		}
	}
	return nil
}
