package enroll

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

var _ manager.LeaderElectionRunnable = (*Releaser)(nil)

// Releaser runs on every replica: it follows the leader's record and releases a replaced
// hook key (and webhook key) in this replica's keyring once the record says every enrolled
// copy holds the current one, and keeps the record for readiness' detail. It watches the
// one ConfigMap by name: ConfigMaps stay out of the manager's cache.
type Releaser struct {
	Client    kubernetes.Interface
	Namespace string
	Keys      interface {
		Release(p credentials.Purpose, fp string)
	}
	Log logr.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu  sync.Mutex
	rec *Record
}

// NeedLeaderElection is false: every replica authenticates with its own keyring.
func (r *Releaser) NeedLeaderElection() bool { return false }

// Start follows the record until ctx ends.
func (r *Releaser) Start(ctx context.Context) error {
	lw := toolscache.NewListWatchFromClient(r.Client.CoreV1().RESTClient(), "configmaps", r.Namespace,
		fields.OneTermEqualSelector("metadata.name", RecordName))
	inf := toolscache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 0, toolscache.Indexers{})
	update := func(o any) {
		cm, ok := o.(*corev1.ConfigMap)
		if !ok {
			return
		}
		rec, err := DecodeRecord(cm)
		if err != nil {
			r.Log.Error(err, "enrollment record unreadable")
			return
		}
		r.Observe(rec)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    update,
		UpdateFunc: func(_, o any) { update(o) },
	}); err != nil {
		return fmt.Errorf("watch enrollment record: %w", err)
	}
	inf.Run(ctx.Done())
	return nil
}

// Observe takes a record: releases what it says is settled, keeps it for Detail.
func (r *Releaser) Observe(rec *Record) {
	if rec.Settled.HookKey != "" {
		r.Keys.Release(credentials.HookKey, rec.Settled.HookKey)
	}
	if rec.Settled.WebhookKey != "" {
		r.Keys.Release(credentials.WebhookKey, rec.Settled.WebhookKey)
	}
	r.mu.Lock()
	r.rec = rec
	r.mu.Unlock()
}

// Detail says how enrollment stands, for /readyz: the scopes that cannot be written are
// named there without failing readiness (the service keeps serving /hook).
func (r *Releaser) Detail() string {
	r.mu.Lock()
	rec := r.rec
	r.mu.Unlock()
	if rec == nil {
		return "no record yet (the leader writes it)"
	}
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	var failing []string
	current, alone := 0, 0
	for _, s := range rec.Scopes {
		switch {
		case s.LeftAlone != "":
			alone++
		case s.Error != "":
			f := s.Scope + " (" + s.Error
			if s.NextAttempt != nil {
				f += fmt.Sprintf("; retry in %s", max(0, s.NextAttempt.Sub(now)).Round(time.Second))
			}
			failing = append(failing, f+")")
		case s.KeyGeneration == rec.KeyGeneration:
			current++
		}
	}
	out := fmt.Sprintf("%d scopes, %d hold key generation %s", len(rec.Scopes), current, rec.KeyGeneration)
	if rec.Rotation != nil && rec.Rotation.Settled == nil && rec.Rotation.To == rec.KeyGeneration {
		out += fmt.Sprintf("; rotation from %s: secrets still holding the old key's token: %d", rec.Rotation.From, rec.Rotation.Pending)
	}
	if n := len(failing); n > 0 {
		more := ""
		if n > maxListedFailures {
			more = fmt.Sprintf(" and %d more", n-maxListedFailures)
			failing = failing[:maxListedFailures]
		}
		out += fmt.Sprintf("; %d failing: %s%s", n, strings.Join(failing, ", "), more)
	}
	if alone > 0 {
		out += fmt.Sprintf("; %d left alone (their variable names another flux-webhook)", alone)
	}
	if rec.Omitted > 0 {
		out += fmt.Sprintf("; %d scopes over the limit of %d not enrolled", rec.Omitted, MaxScopes)
	}
	return out
}
