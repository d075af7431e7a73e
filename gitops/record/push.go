package record

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
)

// PushLabel marks the ConfigMaps of the service's namespace that hold push records; its
// value is the push's key.
const PushLabel = "flux-webhook.openova.io/push"

// Push is a push record: kept in the service's own namespace (which no tenant writes), what
// a push owes Gitea outside its Flux objects' records: an error status for each target it
// could not request (its cluster was down, the API server refused the patch), a warning for
// each target of a push that was overtaken before it arrived. The leader's backlog posts
// them, once, unless the object's record knows the push (its reporter reports it then: the
// sender's retry, or the push's other delivery, requested it).
type Push struct {
	Request Request `json:"request"`
	Owed    []Owed  `json:"owed"`
}

// Owed is one status a push owes a target, and how far it got.
type Owed struct {
	api.Target
	api.Status
	// Now: posted without waiting for a retry (a warning for an overtaken push).
	Now         bool       `json:"now,omitempty"`
	Intent      bool       `json:"intent,omitempty"`
	IntentSince *time.Time `json:"intentSince,omitempty"`
	Done        bool       `json:"done,omitempty"`
}

// pushData is the ConfigMap key of a push record.
const pushData = "push.json"

// PushStore keeps push records in ConfigMaps of one namespace.
type PushStore struct {
	Client    client.Client // writes
	Reader    client.Reader // uncached reads
	Namespace string
}

func pushRecordName(key string) string { return "flux-webhook-push-" + key }

// Add records statuses a push owes; a record of the same push (its other delivery) gains
// those it lacks.
func (s *PushStore) Add(ctx context.Context, req Request, targets []Owed) error {
	key := req.PushKey()
	name := types.NamespacedName{Namespace: s.Namespace, Name: pushRecordName(key)}
	b, _ := json.Marshal(Push{Request: req.forPush(), Owed: targets})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name,
		Labels: map[string]string{PushLabel: key, "app.kubernetes.io/managed-by": "flux-webhook"}},
		Data: map[string]string{pushData: string(b)}}
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
		var rec Push
		if err := json.Unmarshal([]byte(cm.Data[pushData]), &rec); err != nil {
			return err
		}
		changed := false
		for _, t := range targets {
			if !slices.ContainsFunc(rec.Owed, func(u Owed) bool { return u.Target == t.Target }) {
				rec.Owed, changed = append(rec.Owed, t), true
			}
		}
		if !changed {
			return nil
		}
		b, _ := json.Marshal(rec)
		cm.Data[pushData] = string(b)
		return s.Client.Update(ctx, cm, client.FieldOwner(FieldOwner))
	})
}

// forPush is what a push record keeps of a request.
func (q Request) forPush() Request {
	return Request{Token: q.Token, Repository: q.Repository, Ref: q.Ref, SHA: q.SHA, Before: q.Before,
		Delivery: q.Delivery, RequestedAt: q.RequestedAt}
}

// Stored is a push record as stored, to be worked and saved back (with its optimistic lock).
type Stored struct {
	Push
	cm *corev1.ConfigMap
}

// List returns every push record of the namespace.
func (s *PushStore) List(ctx context.Context) ([]*Stored, error) {
	var cms corev1.ConfigMapList
	if err := s.Reader.List(ctx, &cms, client.InNamespace(s.Namespace), client.HasLabels{PushLabel}); err != nil {
		return nil, fmt.Errorf("list push records: %w", err)
	}
	out := make([]*Stored, 0, len(cms.Items))
	for i := range cms.Items {
		st := &Stored{cm: &cms.Items[i]}
		if err := json.Unmarshal([]byte(cms.Items[i].Data[pushData]), &st.Push); err != nil {
			// Unreadable: nothing can be done with it but drop it.
			_ = s.Client.Delete(ctx, &cms.Items[i])
			continue
		}
		out = append(out, st)
	}
	return out, nil
}

// Save writes a worked push record back, failing on a conflict with another writer.
func (s *PushStore) Save(ctx context.Context, st *Stored) error {
	b, _ := json.Marshal(st.Push)
	st.cm.Data[pushData] = string(b)
	if err := s.Client.Update(ctx, st.cm, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("save push record: %w", err)
	}
	return nil
}

// Delete removes a push record, unless it changed since it was read.
func (s *PushStore) Delete(ctx context.Context, st *Stored) error {
	return client.IgnoreNotFound(s.Client.Delete(ctx, st.cm, client.Preconditions{ResourceVersion: &st.cm.ResourceVersion}))
}

// FieldOwner is the field manager of flux-webhook's writes.
const FieldOwner = "flux-webhook"
