package gitops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// PushLabel marks the ConfigMaps of the service's namespace that hold push records; its
// value is the push's key.
const PushLabel = "flux-webhook.openova.io/push"

// A push record keeps, in the service's own namespace (which no tenant writes), what a push
// owes Gitea outside its Flux objects' records: an error status for each target it could
// not request (its cluster was down, the API server refused the patch), a warning for each
// target of a push that was overtaken before it arrived. The leader's Backlog posts them,
// once, unless the object's record knows the push (its reporter reports it then: the
// sender's retry, or the push's other delivery, requested it).
type pushRecord struct {
	Request Request `json:"request"`
	Owed    []owed  `json:"owed"`
}

// owed is one status a push owes a target, and how far it got.
type owed struct {
	Target
	Status
	// Now: posted without waiting for a retry (a warning for an overtaken push).
	Now         bool       `json:"now,omitempty"`
	Intent      bool       `json:"intent,omitempty"`
	IntentSince *time.Time `json:"intentSince,omitempty"`
	Done        bool       `json:"done,omitempty"`
}

// Backlog limits.
const (
	// backlogPoll is how often the leader looks at the push records: a list of the few
	// ConfigMaps of one label.
	backlogPoll = 2 * time.Second
	// pushRecordData is the ConfigMap key of a push record.
	pushRecordData = "push.json"
)

// PushStore keeps push records in ConfigMaps of one namespace.
type PushStore struct {
	Client    client.Client // writes
	Reader    client.Reader // uncached reads
	Namespace string
}

func pushRecordName(key string) string { return "flux-webhook-push-" + key }

// add records statuses a push owes; a record of the same push (its other delivery) gains
// those it lacks.
func (s *PushStore) add(ctx context.Context, req Request, targets []owed) error {
	key := req.pushKey()
	name := types.NamespacedName{Namespace: s.Namespace, Name: pushRecordName(key)}
	b, _ := json.Marshal(pushRecord{Request: req.compactForBacklog(), Owed: targets})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name,
		Labels: map[string]string{PushLabel: key, "app.kubernetes.io/managed-by": "flux-webhook"}},
		Data: map[string]string{pushRecordData: string(b)}}
	err := s.Client.Create(ctx, cm, client.FieldOwner(FieldOwner))
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	// The push's other delivery, or a repeat: the record gains what it lacks, if anything.
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cm := &corev1.ConfigMap{}
		if err := s.Reader.Get(ctx, name, cm); err != nil {
			return err
		}
		var rec pushRecord
		if err := json.Unmarshal([]byte(cm.Data[pushRecordData]), &rec); err != nil {
			return err
		}
		changed := false
		for _, t := range targets {
			if !slices.ContainsFunc(rec.Owed, func(u owed) bool { return u.Target == t.Target }) {
				rec.Owed, changed = append(rec.Owed, t), true
			}
		}
		if !changed {
			return nil
		}
		b, _ := json.Marshal(rec)
		cm.Data[pushRecordData] = string(b)
		return s.Client.Update(ctx, cm, client.FieldOwner(FieldOwner))
	})
}

// compactForBacklog is what a push record keeps of a request.
func (q Request) compactForBacklog() Request {
	return Request{Token: q.Token, Repository: q.Repository, Ref: q.Ref, SHA: q.SHA, Before: q.Before,
		Delivery: q.Delivery, RequestedAt: q.RequestedAt}
}

var _ manager.LeaderElectionRunnable = (*Backlog)(nil)

// Backlog posts, on the leader, the error statuses push records owe: bounded (one record at
// a time), stopped with the manager, exactly once (the intent is recorded before each post;
// a successor asks Gitea whether it went out).
type Backlog struct {
	Store    *PushStore
	Clusters *ClusterSet
	Poster   StatusPoster
	Lookup   StatusLookup // optional
	// Grace is how long an unpatched target waits for the sender's retry; DefaultErrorGrace
	// when zero. ResultTimeout bounds the retries of a post.
	Grace, ResultTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// NeedLeaderElection is true: statuses are posted once.
func (b *Backlog) NeedLeaderElection() bool { return true }

func (b *Backlog) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// Start works the backlog until ctx ends.
func (b *Backlog) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("backlog")
	t := time.NewTicker(backlogPoll)
	defer t.Stop()
	for {
		var cms corev1.ConfigMapList
		err := b.Store.Reader.List(ctx, &cms, client.InNamespace(b.Store.Namespace), client.HasLabels{PushLabel})
		if err != nil && ctx.Err() == nil {
			logger.Error(err, "list push records")
		}
		for i := range cms.Items {
			if ctx.Err() != nil {
				return nil
			}
			if err := b.work(ctx, &cms.Items[i]); err != nil && ctx.Err() == nil {
				logger.Error(err, "push record", "configmap", cms.Items[i].Name)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// work posts what one push record owes, as far as it is due, and deletes it when done.
func (b *Backlog) work(ctx context.Context, cm *corev1.ConfigMap) error {
	var rec pushRecord
	if err := json.Unmarshal([]byte(cm.Data[pushRecordData]), &rec); err != nil {
		return fmt.Errorf("unreadable, deleted: %w", errors.Join(err, b.Store.Client.Delete(ctx, cm)))
	}
	req, grace := rec.Request, b.Grace
	if grace == 0 {
		grace = DefaultErrorGrace
	}
	due := !b.now().Before(req.RequestedAt.Add(grace))
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithValues("repository", req.Repository, "commit", req.SHA, "delivery", req.Delivery))
	pending, changed := false, false
	for i := range rec.Owed {
		u := &rec.Owed[i]
		if u.Done {
			continue
		}
		changed = true
		if !due && !u.Now {
			pending = true
			continue
		}
		if b.requested(ctx, u.Target, req.pushKey()) {
			u.Done = true
			continue
		}
		st := Status{State: u.State, Description: bounded(u.Description)}
		cs := CommitStatus{Repository: req.Repository, SHA: req.SHA, Context: u.Context(), Status: st}
		post := true
		if u.Intent {
			if b.Lookup != nil {
				latest, err := b.Lookup.LatestStatus(ctx, req.Repository, req.SHA, u.Context())
				if err != nil {
					return b.save(ctx, cm, rec, err)
				}
				post = latest == nil || *latest != st
			}
		} else {
			now := b.now()
			u.Intent, u.IntentSince = true, &now
			if err := b.save(ctx, cm, rec, nil); err != nil {
				return err
			}
		}
		if post {
			if err := b.Poster.PostStatus(ctx, cs); err != nil {
				statusPostErrors.WithLabelValues(u.Cluster).Inc()
				if !permanent(err) && b.now().Sub(*u.IntentSince) < b.ResultTimeout {
					return b.save(ctx, cm, rec, fmt.Errorf("post status %s: %w", u.Context(), err))
				}
				statusesLost.WithLabelValues(u.Cluster).Inc()
				log.FromContext(ctx).Error(err, "status lost", "context", u.Context(), "state", st.State)
			} else {
				statusesPosted.WithLabelValues(u.Cluster, u.Kind, st.State).Inc()
				log.FromContext(ctx).Info("status posted", "context", u.Context(), "state", st.State, "description", st.Description)
			}
		}
		u.Done = true
	}
	if !pending && !slices.ContainsFunc(rec.Owed, func(u owed) bool { return !u.Done }) {
		// Kept for repeatWindow: a repeat of the push finds it, and owes nothing again.
		if b.now().Sub(req.RequestedAt) < repeatWindow {
			if changed {
				return b.save(ctx, cm, rec, nil)
			}
			return nil
		}
		return client.IgnoreNotFound(b.Store.Client.Delete(ctx, cm, client.Preconditions{ResourceVersion: &cm.ResourceVersion}))
	}
	return b.save(ctx, cm, rec, nil)
}

// save writes the record's progress (with cm's optimistic lock), then returns cause.
func (b *Backlog) save(ctx context.Context, cm *corev1.ConfigMap, rec pushRecord, cause error) error {
	data, _ := json.Marshal(rec)
	cm.Data[pushRecordData] = string(data)
	if err := b.Store.Client.Update(ctx, cm, client.FieldOwner(FieldOwner)); err != nil {
		return errors.Join(cause, fmt.Errorf("save push record: %w", err))
	}
	return cause
}

// requested reports whether the target's record, as the API server has it, knows the push
// with the given key: a delivery of it requested the target, whose reporter reports it.
func (b *Backlog) requested(ctx context.Context, t Target, key string) bool {
	c := b.Clusters.Get(t.Cluster)
	if c == nil {
		return false
	}
	obj, err := c.cachedObject(ctx, t)
	if err != nil {
		return false
	}
	m, err := c.readMetadata(ctx, obj)
	if err != nil {
		return false
	}
	rec, err := c.openRecord(t.Kind, m)
	return err == nil && slices.ContainsFunc(rec.Seen, func(s Seen) bool { return s.Key == key })
}
