package enroll

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

var _ manager.LeaderElectionRunnable = (*Controller)(nil)

// EventRecorder records Kubernetes Events (controller-runtime's recorder.EventRecorder).
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Controller keeps every enrolled scope written, on the leader: the scopes given (Static),
// those of the scopes ConfigMap, and with Followed those the Flux sources follow. It writes
// a scope when it first appears and whenever the hook key changes, checks it every Resync,
// retries one that fails with backoff, and records all of it in the record ConfigMap.
type Controller struct {
	Enroller *Enroller
	Store    *Store
	// Static are the scopes of the flags; ScopesConfigMap names the ConfigMap of more, in
	// Store.Namespace ("" for none); Followed, when set, adds the repositories Flux sources
	// follow (those of an enrolled organization are covered by its secret).
	Static          []credentials.Scope
	ScopesConfigMap string
	Followed        Followed
	// Resync is how often a scope is checked when nothing changed (DefaultResync if zero).
	Resync time.Duration
	// CallsPerSecond bounds the calls to the forge (DefaultCallsPerSecond if zero; negative:
	// unbounded, for benchmarks).
	CallsPerSecond float64
	Events         EventRecorder
	Log            logr.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu          sync.Mutex
	entries     map[string]*ScopeRecord
	configured  []credentials.Scope // of the scopes ConfigMap, as last read
	followed    []string            // as last listed
	refused     []string
	omitted     int
	rotation    *Rotation
	settled     Settled
	lastKey     string
	nextDesired time.Time
	dirty       bool
	saved       time.Time
	object      *corev1.ConfigMap // the record's ConfigMap, what Events are about
}

// NeedLeaderElection is true: one replica writes.
func (c *Controller) NeedLeaderElection() bool { return true }

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Start runs the controller until ctx ends.
func (c *Controller) Start(ctx context.Context) error {
	c.Log.Info("enrollment started", "static", len(c.Static), "scopesConfigMap", c.ScopesConfigMap,
		"followed", c.Followed != nil, "url", c.Enroller.Settings.URL, "webhook", c.Enroller.Settings.Webhook)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		c.Pass(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// init takes over what the previous leader recorded (the key generation each secret
// holds), once; false while the record cannot be read.
func (c *Controller) init(ctx context.Context) bool {
	if c.entries != nil {
		return true
	}
	if c.Resync <= 0 {
		c.Resync = DefaultResync
	}
	rec, err := c.Store.Load(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.Log.Error(err, "enrollment record unreadable, retrying")
		}
		return false
	}
	c.Enroller.Forge = limit(c.Enroller.Forge, c.CallsPerSecond)
	c.restore(rec)
	return true
}

// restore takes over what a previous leader recorded.
func (c *Controller) restore(rec *Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = map[string]*ScopeRecord{}
	for i := range rec.Scopes {
		r := rec.Scopes[i]
		if _, err := ParseScope(r.Scope); err == nil {
			r.NextAttempt = nil // a new leader tries at once
			c.entries[r.Scope] = &r
		}
	}
	c.rotation, c.settled, c.lastKey = rec.Rotation, rec.Settled, rec.KeyGeneration
	c.dirty = true
}

// Pass does one round: reads the scopes when due, writes every scope that is due, settles
// the rotation and records it. Start calls it every tick; tests call it directly.
func (c *Controller) Pass(ctx context.Context) {
	if !c.init(ctx) {
		return
	}
	now := c.now()
	if !now.Before(c.nextDesired) {
		c.refresh(ctx)
		c.nextDesired = now.Add(desiredInterval)
	}
	key := fingerprint(c.Enroller.Keys, credentials.HookKey)
	hookKey := ""
	if c.Enroller.Settings.Webhook {
		hookKey = fingerprint(c.Enroller.Keys, credentials.WebhookKey)
	}
	if key == "" {
		c.save(ctx, true)
		return // the hook key is missing or refused: readiness and the log say so
	}
	c.mu.Lock()
	if key != c.lastKey {
		if c.lastKey != "" {
			c.rotation = &Rotation{From: c.lastKey, To: key, Started: now}
			c.Log.Info("hook key rotated: writing every enrolled secret", "from", c.lastKey, "to", key)
			c.event(corev1.EventTypeNormal, "RotationStarted", "hook key generation %s replaced %s: writing every enrolled secret", key, c.lastKey)
		}
		c.lastKey, c.dirty = key, true
	}
	var due []*ScopeRecord
	for _, e := range c.entries {
		if c.due(e, key, hookKey, now) {
			due = append(due, e)
		}
	}
	c.mu.Unlock()
	// Organizations first: they cover the most repositories.
	slices.SortFunc(due, func(a, b *ScopeRecord) int {
		if a.Level != b.Level {
			return strings.Compare(a.Level, b.Level) // "organization" before "repository"
		}
		return strings.Compare(a.Scope, b.Scope)
	})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, e := range due {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			c.enroll(gctx, e, key, hookKey)
			c.save(ctx, false)
			return nil
		})
	}
	_ = g.Wait()
	c.settle(key, hookKey)
	c.save(ctx, true)
}

// fingerprint returns the fingerprint of p's current value, "" when it has none.
func fingerprint(keys Keys, p credentials.Purpose) string {
	if k := keys.Current(p); k != nil {
		return credentials.Fingerprint(k)
	}
	return ""
}

// due reports whether e needs a call now.
func (c *Controller) due(e *ScopeRecord, key, hookKey string, now time.Time) bool {
	if e.NextAttempt != nil && now.Before(*e.NextAttempt) {
		return false
	}
	if e.LeftAlone != "" {
		return true // its NextAttempt, the next resync, has come
	}
	return e.Error != "" || e.KeyGeneration != key || e.URL != c.Enroller.Settings.URL ||
		c.hookDue(e, hookKey) || e.Checked == nil || now.Sub(*e.Checked) >= c.Resync
}

// hookDue reports whether e's organization webhook must be written (missing, or signed with
// another webhook key).
func (c *Controller) hookDue(e *ScopeRecord, hookKey string) bool {
	return c.Enroller.Settings.Webhook && e.Level == "organization" &&
		(e.Webhook == nil || e.Webhook.KeyGeneration != hookKey)
}

// enroll writes one scope and records the outcome.
func (c *Controller) enroll(ctx context.Context, e *ScopeRecord, key, hookKey string) {
	c.mu.Lock()
	scope, _ := ParseScope(e.Scope)
	now := c.now()
	full := e.Error != "" || e.Checked == nil || now.Sub(*e.Checked) >= c.Resync || e.URL != c.Enroller.Settings.URL
	guard := slices.Equal(e.Sources, []string{SourceFlux})
	plan := Plan{
		WriteSecret: e.KeyGeneration != key,
		CheckSecret: full,
		// Never checked: written unread (one call less), unless it may be another's.
		CheckVariable: full && (e.Checked != nil || guard),
		WriteVariable: full && e.Checked == nil,
		Guard:         guard,
		Owned:         e.URL,
		Hook:          c.Enroller.Settings.Webhook && (full || c.hookDue(e, hookKey)),
	}
	if e.Webhook != nil {
		plan.HookID, plan.HookKey = e.Webhook.ID, e.Webhook.KeyGeneration
	}
	first := e.Written == nil
	c.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	r, err := c.Enroller.Apply(cctx, scope, plan)
	cancel()
	if ctx.Err() != nil {
		return // stopping: the next leader tries again
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries[e.Scope] != e {
		return // no longer enrolled
	}
	now = c.now()
	c.dirty = true
	log := c.Log.WithValues("scope", e.Scope, "level", e.Level)
	if r.Secret == Written {
		e.Written, e.KeyGeneration = &now, r.KeyGeneration
	}
	if r.Hook != Skipped && r.HookID != 0 {
		// Created or corrected while the record says it was in place with this key: someone
		// deleted or changed it in Gitea.
		restored := e.Webhook != nil && e.Webhook.KeyGeneration == r.HookKeyGeneration && (r.Hook == Created || r.Hook == Updated)
		if r.Hook != Unchanged || e.Webhook == nil {
			e.Webhook = &HookRecord{ID: r.HookID, KeyGeneration: r.HookKeyGeneration, Written: &now}
		}
		switch {
		case restored:
			log.Info("organization webhook restored", "webhook", r.HookID, "action", string(r.Hook))
			c.event(corev1.EventTypeNormal, "WebhookRestored", "%s: organization webhook %s again (id %d): it was deleted or changed in Gitea", e.Scope, r.Hook, r.HookID)
		case r.Hook == Created:
			log.Info("organization webhook created", "webhook", r.HookID, "webhookKeyGeneration", r.HookKeyGeneration)
		}
	}
	if errors.Is(err, ErrForeign) {
		// A decision, not a failure: looked at again at the next resync.
		if e.LeftAlone == "" {
			log.Info("repository left alone: its variable names another flux-webhook", "reason", err.Error())
		}
		next := now.Add(c.Resync)
		e.LeftAlone, e.NextAttempt, e.Error, e.ErrorTime, e.Failures, e.Gone = clip(err.Error(), maxErrorLength), &next, "", nil, 0, false
		return
	}
	if err != nil {
		e.Failures++
		e.Error, e.ErrorTime, e.Gone = clip(err.Error(), maxErrorLength), &now, errors.Is(err, ErrNotFound)
		wait := backoff(e.Failures)
		next := now.Add(wait)
		e.NextAttempt = &next
		log.Error(err, "scope enrollment failed", "failures", e.Failures, "retryIn", wait.Round(time.Second).String())
		c.event(corev1.EventTypeWarning, "EnrollFailed", "%s: %s (retry in %s)", e.Scope, e.Error, wait.Round(time.Second))
		return
	}
	if plan.CheckVariable || plan.WriteVariable {
		e.URL, e.Checked = c.Enroller.Settings.URL, &now
	}
	e.Error, e.ErrorTime, e.Failures, e.NextAttempt, e.Gone, e.LeftAlone = "", nil, 0, nil, false, ""
	switch {
	case first && r.Secret == Written:
		log.Info("scope enrolled", "keyGeneration", r.KeyGeneration, "variable", string(r.Variable), "calls", r.Calls)
		c.event(corev1.EventTypeNormal, "Enrolled", "%s: secret %s and variable %s written at %s level (key generation %s)",
			e.Scope, c.Enroller.Settings.SecretName, c.Enroller.Settings.VariableName, e.Level, r.KeyGeneration)
	case r.Secret == Written:
		log.Info("secret rewritten", "keyGeneration", r.KeyGeneration, "calls", r.Calls)
	case (r.Variable == Created || r.Variable == Updated) && !first:
		log.Info("variable corrected", "variable", c.Enroller.Settings.VariableName, "action", string(r.Variable))
	}
}

// backoff is the wait before the n-th retry: backoffBase doubling up to backoffMax, ±20%.
func backoff(n int) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffMax; i++ {
		d *= 2
	}
	d = min(d, backoffMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// settle counts what still holds an older key, and names the generations every enrolled
// copy holds.
func (c *Controller) settle(key, hookKey string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pending, hooksPending := 0, 0
	states := map[string]int{"current": 0, "pending": 0, "failing": 0, "left-alone": 0}
	for _, e := range c.entries {
		switch {
		case e.LeftAlone != "":
			states["left-alone"]++
			continue // not written by this flux-webhook: nothing of its keys there
		case e.Error != "":
			states["failing"]++
		case e.KeyGeneration != key:
			states["pending"]++
		default:
			states["current"]++
		}
		// A secret that never got a token, or a scope the forge does not have, holds no
		// old token: it holds nothing back.
		if e.KeyGeneration != "" && e.KeyGeneration != key && !e.Gone {
			pending++
		}
		if hookKey != "" && e.Webhook != nil && e.Webhook.KeyGeneration != hookKey && !e.Gone {
			hooksPending++
		}
	}
	for s, n := range states {
		scopesGauge.WithLabelValues(s).Set(float64(n))
	}
	rotationPending.Set(float64(pending))
	next := c.settled
	next.HookKey = ""
	if pending == 0 {
		next.HookKey = key
	}
	next.WebhookKey = ""
	if hookKey != "" && hooksPending == 0 {
		next.WebhookKey = hookKey
	}
	if r := c.rotation; r != nil && r.To == key && (r.Pending != pending || (pending == 0 && r.Settled == nil)) {
		r.Pending = pending
		if pending == 0 && r.Settled == nil {
			now := c.now()
			r.Settled = &now
			took := now.Sub(r.Started)
			rotationSeconds.Set(took.Seconds())
			c.Log.Info("rotation complete: every enrolled secret holds the new token", "keyGeneration", key, "took", took.Round(time.Millisecond).String(), "scopes", len(c.entries))
			c.event(corev1.EventTypeNormal, "RotationComplete", "every enrolled secret holds a token of hook key generation %s (%s after the change): the replaced key stays valid for --token-grace more", key, took.Round(time.Second))
		}
		c.dirty = true
	}
	if next != c.settled {
		c.settled, c.dirty = next, true
	}
}

// save writes the record when it changed: at once at the end of a pass (final), at most
// every recordInterval during one.
func (c *Controller) save(ctx context.Context, final bool) {
	c.mu.Lock()
	if !c.dirty || (!final && c.now().Sub(c.saved) < recordInterval) {
		c.mu.Unlock()
		return
	}
	rec := c.snapshotLocked()
	c.dirty, c.saved = false, c.now()
	c.mu.Unlock()
	cm, err := c.Store.Save(ctx, rec)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			c.Log.Error(err, "enrollment record not written, retrying")
		}
		c.dirty = true
		return
	}
	c.object = cm
}

// snapshotLocked is the record of the current state.
func (c *Controller) snapshotLocked() *Record {
	rec := &Record{Updated: c.now(), KeyGeneration: c.lastKey, Settled: c.settled, Omitted: c.omitted, Refused: c.refused}
	if c.Enroller.Settings.Webhook {
		rec.WebhookKeyGeneration = fingerprint(c.Enroller.Keys, credentials.WebhookKey)
	}
	if c.rotation != nil {
		r := *c.rotation
		rec.Rotation = &r
	}
	for _, e := range c.entries {
		rec.Scopes = append(rec.Scopes, *e)
	}
	sortScopes(rec.Scopes)
	return rec
}

// event records an Event on the record's ConfigMap (none before it was first written).
func (c *Controller) event(eventtype, reason, note string, args ...any) {
	if c.Events != nil && c.object != nil {
		c.Events.Eventf(c.object, nil, eventtype, reason, "Enroll", note, args...)
	}
}

// refresh reads the scopes: the static ones, the scopes ConfigMap's, the followed ones.
// A source that cannot be read keeps what it said last: a failing API server does not
// unenroll anything.
func (c *Controller) refresh(ctx context.Context) {
	if c.ScopesConfigMap != "" {
		cm := &corev1.ConfigMap{}
		err := c.Store.Reader.Get(ctx, client.ObjectKey{Namespace: c.Store.Namespace, Name: c.ScopesConfigMap}, cm)
		switch {
		case apierrors.IsNotFound(err):
			c.configured, c.refused = nil, nil
		case err != nil:
			c.Log.Error(err, "scopes configmap unreadable: keeping its scopes as last read", "configmap", c.ScopesConfigMap)
		default:
			var refused []string
			c.configured, refused = ParseScopes(cm.Data)
			if len(refused) > 0 && !slices.Equal(refused, c.refused) {
				c.Log.Error(credentials.ErrBadScope, "scopes configmap entries refused", "configmap", c.ScopesConfigMap, "refused", refused)
			}
			c.refused = refused
		}
	}
	if c.Followed != nil {
		if f, err := c.Followed.Followed(ctx); err == nil {
			c.followed = f
		}
	}
	want := map[string][]string{}
	add := func(s credentials.Scope, source string) {
		if k := s.String(); !slices.Contains(want[k], source) {
			want[k] = append(want[k], source)
		}
	}
	for _, s := range c.Static {
		add(s, SourceFlag)
	}
	for _, s := range c.configured {
		add(s, SourceConfigMap)
	}
	for _, r := range c.followed {
		s, err := credentials.RepositoryScope(r)
		if err != nil {
			continue
		}
		owner, _, _ := strings.Cut(s.Name, "/")
		if _, covered := want["org "+owner]; covered {
			continue // the organization's secret covers it
		}
		add(s, SourceFlux)
	}
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	// Organizations first, then repositories named by flags or the ConfigMap, then those
	// found through Flux: what MaxScopes leaves out is the least asked for.
	rank := func(k string) int {
		switch {
		case strings.HasPrefix(k, "org "):
			return 0
		case !slices.Equal(want[k], []string{SourceFlux}):
			return 1
		}
		return 2
	}
	slices.SortFunc(names, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	omitted := 0
	if len(names) > MaxScopes {
		omitted = len(names) - MaxScopes
		c.Log.Error(fmt.Errorf("%d scopes, at most %d", len(names), MaxScopes), "too many scopes: the last ones are not enrolled", "omitted", names[MaxScopes:min(len(names), MaxScopes+10)])
		names = names[:MaxScopes]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if omitted != c.omitted {
		c.omitted, c.dirty = omitted, true
	}
	keep := map[string]bool{}
	for _, k := range names {
		keep[k] = true
		sources := want[k]
		slices.Sort(sources)
		if e, ok := c.entries[k]; ok {
			if !slices.Equal(e.Sources, sources) {
				e.Sources, c.dirty = sources, true
			}
			continue
		}
		s, _ := ParseScope(k)
		c.entries[k] = &ScopeRecord{Scope: k, Level: Level(s), Sources: sources}
		c.dirty = true
	}
	for k := range c.entries {
		if !keep[k] {
			c.Log.Info("scope no longer enrolled: its secret is left as it is", "scope", k)
			delete(c.entries, k)
			c.dirty = true
		}
	}
}
