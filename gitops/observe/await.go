package observe

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
)

// Awaiter follows the targets of pushes for senders that wait (/hook?wait=true).
type Awaiter struct {
	Clusters *cluster.Set
}

// Await sends each reported target's final answer on the returned channel as Flux gives it,
// then closes it: when every target has one, when timeout passes (the rest are sent as
// errors), or when ctx ends. A change of a Flux object in the targets' clusters evaluates,
// in this replica's caches, only the targets that object can answer (itself, or what builds
// from it); the reporter posts the same answers to Gitea.
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
	// Changes are collected by the object they happened to; each wakes only the targets
	// that object can answer (w.index): the work per change does not grow with the number
	// of targets waited for.
	var (
		mu    sync.Mutex
		dirty = map[objectKey]bool{}
	)
	wake := make(chan struct{}, 1)
	changed := func(cluster string) func(any) {
		return func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			obj, ok := o.(client.Object)
			if !ok {
				return
			}
			mu.Lock()
			dirty[objectKey{cluster, flux.RefOf(obj)}] = true
			mu.Unlock()
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}
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
		notify := changed(c.Name)
		handler := toolscache.ResourceEventHandlerFuncs{AddFunc: notify, UpdateFunc: func(_, o any) { notify(o) }, DeleteFunc: notify}
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
		w := newWaiting()
		// judge answers the targets given, once each: those Flux answered are sent and
		// leave the index, the others are indexed again under what can answer them now.
		judge := func(targets []api.Target) bool {
			for _, t := range targets {
				st, done, deps := answer(ctx, byName[t.Cluster], t, push, res.RequestedAt)
				if done {
					w.remove(t)
					if !send(t, st) {
						return false
					}
					continue
				}
				w.index(t, deps)
			}
			return true
		}
		if !judge(pending) {
			return
		}
		for w.len() > 0 {
			select {
			case <-ctx.Done():
				return
			case <-wake:
				mu.Lock()
				keys := dirty
				dirty = map[objectKey]bool{}
				mu.Unlock()
				if !judge(w.affected(keys)) {
					return
				}
			case <-deadline.C:
				for _, t := range w.all() {
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

// objectKey names a Flux object of a cluster.
type objectKey struct {
	cluster string
	ref     flux.Ref
}

// waiting indexes the targets still waited for by the objects whose change can answer
// them: the target itself and what it builds from (cluster.Sources).
type waiting struct {
	by   map[objectKey]map[api.Target]bool
	deps map[api.Target][]objectKey
}

func newWaiting() *waiting {
	return &waiting{by: map[objectKey]map[api.Target]bool{}, deps: map[api.Target][]objectKey{}}
}

func (w *waiting) len() int { return len(w.deps) }

// index (re)indexes t under its own object and deps, of its cluster.
func (w *waiting) index(t api.Target, deps []flux.Ref) {
	w.remove(t)
	keys := []objectKey{{t.Cluster, flux.Ref{Kind: t.Kind, Namespace: t.Namespace, Name: t.Name}}}
	for _, d := range deps {
		keys = append(keys, objectKey{t.Cluster, d})
	}
	for _, k := range keys {
		if w.by[k] == nil {
			w.by[k] = map[api.Target]bool{}
		}
		w.by[k][t] = true
	}
	w.deps[t] = keys
}

func (w *waiting) remove(t api.Target) {
	for _, k := range w.deps[t] {
		delete(w.by[k], t)
		if len(w.by[k]) == 0 {
			delete(w.by, k)
		}
	}
	delete(w.deps, t)
}

// affected returns the targets one of the changed objects can answer, each once.
func (w *waiting) affected(changed map[objectKey]bool) []api.Target {
	seen := map[api.Target]bool{}
	var out []api.Target
	for k := range changed {
		for t := range w.by[k] {
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	return out
}

// all returns every target still waited for.
func (w *waiting) all() []api.Target {
	out := make([]api.Target, 0, len(w.deps))
	for t := range w.deps {
		out = append(out, t)
	}
	return out
}

// judged counts the targets answer evaluated (tests read it: the work per change).
var judged atomic.Int64

// answer returns the final status of one target for a push requested at at, if it has one,
// and otherwise the objects it builds from, whose change may answer it.
func answer(ctx context.Context, c *cluster.Cluster, t api.Target, push gitops.Push, at time.Time) (api.Status, bool, []flux.Ref) {
	judged.Add(1)
	if c == nil {
		return ClusterGone(t.Cluster), true, nil
	}
	obj, err := c.Object(ctx, t)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return Deleted(), true, nil
		}
		return api.Status{}, false, nil
	}
	sources := c.Sources(ctx, obj)
	deps := slices.Collect(maps.Keys(sources))
	rec, err := c.OpenRecord(t.Kind, obj)
	if err != nil {
		return api.Status{}, false, deps
	}
	version := ""
	if push.OCI != nil {
		version = push.OCI.Tag
	}
	for _, s := range rec.Superseded {
		if rec.RepositoryOf(s) == push.Repository && s.SHA == push.SHA && s.Version == version {
			return Superseded(s.By), true, nil
		}
	}
	cur := rec.Current
	if cur == nil {
		return api.Status{}, false, deps
	}
	if cur.Repository != push.Repository || cur.SHA != push.SHA || cur.Version != version {
		if !cur.RequestedAt.After(at) {
			return api.Status{}, false, deps // the cache does not show this push's request yet
		}
		return Superseded(cur.Name()), true, nil
	}
	if cur.Final {
		return api.Status{State: cur.Posted, Description: cur.Description}, true, nil
	}
	st := Evaluate(obj, Want(*cur), sources)
	return st, st.State != "", deps
}
