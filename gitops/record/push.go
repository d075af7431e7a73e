package record

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
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
)

// PushLabel marks the ConfigMaps of the service's namespace that hold push records; its
// value is the push's key.
const PushLabel = "flux-webhook.openova.io/push"

// Push is a push record, kept in the service's own namespace (which no tenant writes). It
// is written once when a push is accepted, before the answer: what to request (the request,
// and what the push changed, to match in each cluster), and per cluster whether it has been
// requested there; the leader's worker requests it, cluster by cluster. It also holds what
// the push owes Gitea outside its Flux objects' records: an error status for each target it
// could not request (its cluster stayed down, the API server refused the patch), a warning
// for each target of a push that was overtaken before it arrived. The leader's backlog posts
// them, once, unless the object's record knows the push (its reporter reports it then).
type Push struct {
	Request Request `json:"request"`
	// Pushed is what the push changed, as matching reads it.
	Pushed *Pushed `json:"pushed,omitempty"`
	// Clusters are the clusters the push is requested in, and how far.
	Clusters []ClusterWork `json:"clusters,omitempty"`
	// Results are the final states of its targets, by status context, when its statuses
	// are per cluster (Request.Aggregate): a set, so that a result recorded twice (by a
	// reporter that took over) counts once. "" is a result awaited: a canary of a
	// Kustomization that applied the commit, whose status Flagger decides later.
	Results map[string]string `json:"results,omitempty"`
	Owed    []Owed            `json:"owed"`
}

// Pushed is what a push changed (flux.Pushed), as a push record keeps it.
type Pushed struct {
	URLs []string `json:"urls"`
	Ref  string   `json:"ref,omitempty"`
	Tag  string   `json:"tag,omitempty"`
	Name string   `json:"name,omitempty"`
	// Subject and Public are who may follow the push (gitops.Push.Subject, .Public): the
	// worker asks each registered cluster again before requesting it there, so that a grant
	// withdrawn since the push was accepted holds.
	Subject string `json:"subject,omitempty"`
	Public  bool   `json:"public,omitempty"`
}

// ClusterWork is a push's work in one cluster.
type ClusterWork struct {
	Cluster string `json:"cluster"`
	// Matched is the number of targets the push matched there when it was accepted.
	Matched int `json:"matched"`
	// Done is set once every target there was requested (or given up on, and owed an
	// error status); Requested is then how many were requested.
	Done      bool `json:"done,omitempty"`
	Requested int  `json:"requested,omitempty"`
	// With status granularity "cluster" (Request.Aggregate set): the results of its
	// targets so far (Push.Results), the first that was not a success, and the cluster's
	// status, posted once like an object's (intent recorded first).
	Failure     string      `json:"failure,omitempty"`
	Posted      string      `json:"posted,omitempty"`
	Intent      *api.Status `json:"intent,omitempty"`
	IntentSince time.Time   `json:"intentSince,omitzero"`
	Final       bool        `json:"final,omitempty"`
}

// Pending reports whether the push still has work: a cluster to request, or (granularity
// "cluster") a cluster status to post.
func (p Push) Pending() bool {
	return slices.ContainsFunc(p.Clusters, func(c ClusterWork) bool { return !c.Done || p.Request.Aggregate != "" && !c.Final })
}

// Key is the push's key: its record's name suffix, and its label value.
func (p Push) Key() string { return p.Request.PushKey() }

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

// RecordName is the name of the ConfigMap of the push record of key.
func RecordName(key string) string { return "flux-webhook-push-" + key }

// Add records statuses a push owes; a record of the same push (its other delivery) gains
// those it lacks.
func (s *PushStore) Add(ctx context.Context, req Request, targets []Owed) error {
	key := req.PushKey()
	name := types.NamespacedName{Namespace: s.Namespace, Name: RecordName(key)}
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
	return Request{Token: q.Token, Repository: q.Repository, Ref: q.Ref, SHA: q.SHA, Version: q.Version, Before: q.Before, Aggregate: q.Aggregate,
		Delivery: q.Delivery, Trace: q.Trace, RequestedAt: q.RequestedAt}
}

// ErrRecordFull: a push record would be over what a ConfigMap holds.
var ErrRecordFull = errors.New("push record full")

// maxPushRecordBytes bounds a push record: a ConfigMap holds 1 MiB; what is owed beyond
// this is logged instead (a push record owes one status per target it could not request).
const maxPushRecordBytes = 900 << 10

// Create records an accepted push, in one write. When the push is recorded already (its
// other delivery, a repeat), nothing is written and the existing record is returned.
func (s *PushStore) Create(ctx context.Context, p Push) (existing *Push, err error) {
	p.Request = p.Request.forPush()
	key := p.Key()
	b, _ := json.Marshal(p)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: RecordName(key),
		Labels: map[string]string{PushLabel: key, "app.kubernetes.io/managed-by": "flux-webhook"}},
		Data: map[string]string{pushData: string(b)}}
	err = s.Client.Create(ctx, cm, client.FieldOwner(FieldOwner))
	if !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	got := &corev1.ConfigMap{}
	if err := s.Reader.Get(ctx, client.ObjectKeyFromObject(cm), got); err != nil {
		return nil, err
	}
	var rec Push
	if err := json.Unmarshal([]byte(got.Data[pushData]), &rec); err != nil {
		return nil, fmt.Errorf("push record %s: %w", got.Name, err)
	}
	return &rec, nil
}

// contendedBackoff paces the retries of a push record's update on a conflict: every
// cluster's worker writes its progress into the one record of its push, so a push into 200
// clusters brings 200 writers at once. client-go's retry.DefaultBackoff (4 tries within
// 0.3 s) gave up 2,122 times in such a push (BenchmarkBinaryClusters, 2026-12-07), and each
// give-up had that cluster's work done again: twice the patches. These 16 tries, spread by
// a full jitter, last about 10 s.
var contendedBackoff = wait.Backoff{Steps: 16, Duration: 10 * time.Millisecond, Factor: 1.5, Jitter: 1, Cap: 2 * time.Second}

// Update changes the record of the push with key, with an optimistic lock, reading it again
// on a conflict (contendedBackoff). change returns ErrNoChange to write nothing.
func (s *PushStore) Update(ctx context.Context, key string, change func(*Push) error) error {
	name := types.NamespacedName{Namespace: s.Namespace, Name: RecordName(key)}
	return retry.RetryOnConflict(contendedBackoff, func() error {
		cm := &corev1.ConfigMap{}
		if err := s.Reader.Get(ctx, name, cm); err != nil {
			return err
		}
		var rec Push
		if err := json.Unmarshal([]byte(cm.Data[pushData]), &rec); err != nil {
			return err
		}
		if err := change(&rec); err != nil {
			if errors.Is(err, ErrNoChange) {
				return nil
			}
			return err
		}
		b, _ := json.Marshal(rec)
		if len(b) > maxPushRecordBytes {
			return fmt.Errorf("%w: %d bytes", ErrRecordFull, len(b))
		}
		cm.Data[pushData] = string(b)
		return s.Client.Update(ctx, cm, client.FieldOwner(FieldOwner))
	})
}

// ErrNoChange: an Update's change has nothing to write.
var ErrNoChange = errors.New("no change")

// Get returns the record of the push with key.
func (s *PushStore) Get(ctx context.Context, key string) (*Push, error) {
	cm := &corev1.ConfigMap{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: RecordName(key)}, cm); err != nil {
		return nil, err
	}
	return Decode(cm)
}

// Decode reads the push record a ConfigMap holds.
func Decode(cm *corev1.ConfigMap) (*Push, error) {
	var rec Push
	if err := json.Unmarshal([]byte(cm.Data[pushData]), &rec); err != nil {
		return nil, fmt.Errorf("push record %s: %w", cm.Name, err)
	}
	return &rec, nil
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
