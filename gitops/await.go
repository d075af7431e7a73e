package gitops

import (
	"context"
	"fmt"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// TargetResult is one target's final answer to a push, for a sender that waits.
type TargetResult struct {
	Target
	Status
	// Elapsed is the time since the push was requested.
	Elapsed time.Duration
}

// Await sends each requested target's final verdict on the returned channel as Flux gives
// it, then closes it: when every target has one, when timeout passes (the rest are sent as
// errors), or when ctx ends. It evaluates the caches of this replica on every change of a
// Flux object in the targets' clusters; the reporter posts the same verdicts to Gitea.
func (r *Requester) Await(ctx context.Context, push Push, res Result, timeout time.Duration) <-chan TargetResult {
	out := make(chan TargetResult)
	byName := map[string]*Cluster{}
	for _, c := range r.Clusters.Clusters() {
		byName[c.Name] = c
	}
	var pending []Target
	for _, o := range res.Targets {
		if o.Reported() {
			pending = append(pending, o.Target)
		}
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
		for _, obj := range []client.Object{&sourcev1.GitRepository{}, &sourcev1.HelmChart{}, &kustomizev1.Kustomization{}, &helmv2.HelmRelease{}} {
			inf, err := c.GetCache().GetInformer(ctx, obj)
			if err != nil {
				continue
			}
			if reg, err := inf.AddEventHandler(handler); err == nil {
				regs = append(regs, registration{inf, reg})
			}
		}
	}
	start := time.Now()
	if push.Head != "" {
		// Overtaken before it arrived: each target's answer is known at once.
		go func() {
			defer close(out)
			for _, t := range pending {
				select {
				case out <- TargetResult{Target: t, Status: supersededStatus(Superseded{By: shortSHA(push.Head)}), Elapsed: time.Since(start)}:
				case <-ctx.Done():
					return
				}
			}
		}()
		for _, r := range regs {
			_ = r.inf.RemoveEventHandler(r.reg)
		}
		return out
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
		send := func(t Target, st Status) bool {
			select {
			case out <- TargetResult{Target: t, Status: st, Elapsed: time.Since(start)}:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			var still []Target
			for _, t := range pending {
				st, done := awaitVerdict(ctx, byName[t.Cluster], t, push, res.RequestedAt)
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
					if !send(t, Status{State: StateError, Description: fmt.Sprintf("no answer from Flux within %s (the commit status follows when it comes)", timeout)}) {
						return
					}
				}
				return
			}
		}
	}()
	return out
}

// awaitVerdict returns the final status of one target for a push requested at at, if it
// has one.
func awaitVerdict(ctx context.Context, c *Cluster, t Target, push Push, at time.Time) (Status, bool) {
	if c == nil {
		return Status{State: StateError, Description: "cluster " + t.Cluster + " is no longer registered"}, true
	}
	obj, err := c.cachedObject(ctx, t)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return Status{State: StateError, Description: "deleted before Flux answered"}, true
		}
		return Status{}, false
	}
	rec, err := c.openRecord(t.Kind, obj)
	if err != nil {
		return Status{}, false
	}
	for _, s := range rec.Superseded {
		if rec.RepositoryOf(s) == push.Repository && s.SHA == push.SHA {
			return Status{State: StateWarning, Description: "superseded by " + s.By}, true
		}
	}
	cur := rec.Current
	if cur == nil {
		return Status{}, false
	}
	if cur.Repository != push.Repository || cur.SHA != push.SHA {
		if !cur.RequestedAt.After(at) {
			return Status{}, false // the cache does not show this push's request yet
		}
		return Status{State: StateWarning, Description: "superseded by " + shortSHA(cur.SHA)}, true
	}
	if cur.Final {
		return Status{State: cur.Posted, Description: cur.Description}, true
	}
	v, err := c.verdict(ctx, obj, *cur)
	if err != nil {
		log.FromContext(ctx).Error(err, "evaluate target", "target", t.String())
		return Status{}, false
	}
	return Status{State: v.State, Description: v.Description}, v.State != ""
}
