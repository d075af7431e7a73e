package observe

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
)

// Awaiter follows the targets of pushes for senders that wait (/hook?wait=true).
type Awaiter struct {
	Clusters *cluster.Set
}

// Await sends each reported target's final answer on the returned channel as Flux gives it,
// then closes it: when every target has one, when timeout passes (the rest are sent as
// errors), or when ctx ends. It evaluates this replica's caches on every change of a Flux
// object in the targets' clusters; the reporter posts the same answers to Gitea.
func (a *Awaiter) Await(ctx context.Context, push gitops.Push, res gitops.Result, timeout time.Duration) <-chan api.TargetResult {
	out := make(chan api.TargetResult)
	var pending []api.Target
	for _, o := range res.Targets {
		if o.Reported() {
			pending = append(pending, o.Target)
		}
	}
	start := time.Now()
	if push.Head != "" {
		// Overtaken before it arrived: each target's answer is known at once.
		go func() {
			defer close(out)
			for _, t := range pending {
				select {
				case out <- api.TargetResult{Target: t, Status: Superseded(push.Head), Elapsed: time.Since(start)}:
				case <-ctx.Done():
					return
				}
			}
		}()
		return out
	}
	byName := map[string]*cluster.Cluster{}
	for _, c := range a.Clusters.Clusters() {
		byName[c.Name] = c
	}
	wake := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{AddFunc: notify, UpdateFunc: func(_, o any) { notify(o) }, DeleteFunc: notify}
	type registration struct {
		inf cache.Informer
		reg toolscache.ResourceEventHandlerRegistration
	}
	var regs []registration
	watched := map[string]bool{}
	for _, t := range pending {
		c := byName[t.Cluster]
		if c == nil || watched[c.Name] {
			continue
		}
		watched[c.Name] = true
		for _, k := range c.Kinds() {
			inf, err := c.GetCache().GetInformer(ctx, k.New())
			if err != nil {
				continue
			}
			if reg, err := inf.AddEventHandler(handler); err == nil {
				regs = append(regs, registration{inf, reg})
			}
		}
	}
	go func() {
		defer close(out)
		defer func() {
			for _, r := range regs {
				_ = r.inf.RemoveEventHandler(r.reg)
			}
		}()
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
		send := func(t api.Target, st api.Status) bool {
			select {
			case out <- api.TargetResult{Target: t, Status: st, Elapsed: time.Since(start)}:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			var still []api.Target
			for _, t := range pending {
				st, done := answer(ctx, byName[t.Cluster], t, push, res.RequestedAt)
				if !done {
					still = append(still, t)
					continue
				}
				if !send(t, st) {
					return
				}
			}
			pending = still
			if len(pending) == 0 {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-deadline.C:
				for _, t := range pending {
					if !send(t, StreamTimedOut(timeout)) {
						return
					}
				}
				return
			}
		}
	}()
	return out
}

// answer returns the final status of one target for a push requested at at, if it has one.
func answer(ctx context.Context, c *cluster.Cluster, t api.Target, push gitops.Push, at time.Time) (api.Status, bool) {
	if c == nil {
		return ClusterGone(t.Cluster), true
	}
	obj, err := c.Object(ctx, t)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return Deleted(), true
		}
		return api.Status{}, false
	}
	rec, err := c.OpenRecord(t.Kind, obj)
	if err != nil {
		return api.Status{}, false
	}
	version := ""
	if push.OCI != nil {
		version = push.OCI.Tag
	}
	for _, s := range rec.Superseded {
		if rec.RepositoryOf(s) == push.Repository && s.SHA == push.SHA && s.Version == version {
			return Superseded(s.By), true
		}
	}
	cur := rec.Current
	if cur == nil {
		return api.Status{}, false
	}
	if cur.Repository != push.Repository || cur.SHA != push.SHA || cur.Version != version {
		if !cur.RequestedAt.After(at) {
			return api.Status{}, false // the cache does not show this push's request yet
		}
		return Superseded(cur.Name()), true
	}
	if cur.Final {
		return api.Status{State: cur.Posted, Description: cur.Description}, true
	}
	st := Evaluate(obj, Want(*cur), c.Sources(ctx, obj))
	return st, st.State != ""
}
