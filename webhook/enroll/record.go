package enroll

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

// RecordName is the ConfigMap, in the service's namespace, where the leader records what
// enrollment wrote (key RecordKey): what `flux-webhook enrollment` prints, and what every
// replica releases a replaced key by.
const (
	RecordName = "flux-webhook-enrollment"
	RecordKey  = "status.json"
)

// Record is what enrollment wrote and found, per scope; never a token.
type Record struct {
	// Updated is when the leader last wrote it.
	Updated time.Time `json:"updated"`
	// KeyGeneration is the fingerprint of the hook key the leader derives tokens from;
	// WebhookKeyGeneration that of the webhook key organization webhooks are signed with.
	KeyGeneration        string `json:"keyGeneration,omitempty"`
	WebhookKeyGeneration string `json:"webhookKeyGeneration,omitempty"`
	// Settled names the key generations every enrolled copy holds: each replica releases
	// the key its current one replaced once its current one is named here.
	Settled Settled `json:"settled"`
	// Rotation is the last change of the hook key the leader saw.
	Rotation *Rotation `json:"rotation,omitempty"`
	// Scopes are the enrolled scopes, organizations first, by name.
	Scopes []ScopeRecord `json:"scopes"`
	// Omitted counts the scopes beyond MaxScopes, not enrolled; Refused lists entries of the
	// scopes ConfigMap that name no organization or repository.
	Omitted int      `json:"omitted,omitempty"`
	Refused []string `json:"refused,omitempty"`
}

// Settled names, per key, the generation every enrolled copy holds.
type Settled struct {
	HookKey    string `json:"hookKey,omitempty"`
	WebhookKey string `json:"webhookKey,omitempty"`
}

// Rotation is a change of the hook key as the leader wrote it through.
type Rotation struct {
	From    string     `json:"from,omitempty"`
	To      string     `json:"to"`
	Started time.Time  `json:"started"`
	Settled *time.Time `json:"settled,omitempty"`
	// Pending counts the scopes whose secret still holds a token of an older key.
	Pending int `json:"pending"`
}

// Sources say why a scope is enrolled.
const (
	SourceFlag      = "flag"      // --enroll-organization, --enroll-repository
	SourceConfigMap = "configmap" // the scopes ConfigMap
	SourceFlux      = "flux"      // a Flux source in a registered cluster follows it
)

// ScopeRecord is what enrollment wrote and found for one scope.
type ScopeRecord struct {
	// Scope is "org <owner>" or "repo <owner>/<name>"; Level where its secret and variable
	// live (organization, repository); Sources why it is enrolled.
	Scope   string   `json:"scope"`
	Level   string   `json:"level"`
	Sources []string `json:"sources"`
	// Written is when the secret was last written, KeyGeneration the hook key generation of
	// the token written then.
	Written       *time.Time `json:"written,omitempty"`
	KeyGeneration string     `json:"keyGeneration,omitempty"`
	// URL is the variable's value as enrollment last wrote or found it.
	URL string `json:"url,omitempty"`
	// Checked is when the scope was last found as it should be.
	Checked *time.Time `json:"checked,omitempty"`
	// Webhook is the organization webhook enrollment keeps, when asked to.
	Webhook *HookRecord `json:"webhook,omitempty"`
	// Error is the last failure (empty once a later attempt succeeded), at ErrorTime; it is
	// retried at NextAttempt, after Failures failures in a row. Gone: the forge does not
	// have the scope (nothing there holds a token).
	Error       string     `json:"error,omitempty"`
	ErrorTime   *time.Time `json:"errorTime,omitempty"`
	Failures    int        `json:"failures,omitempty"`
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
	Gone        bool       `json:"gone,omitempty"`
	// LeftAlone says why a repository found through Flux is not written (its variable names
	// another flux-webhook); looked at again at the next resync.
	LeftAlone string `json:"leftAlone,omitempty"`
}

// HookRecord is an organization webhook enrollment keeps.
type HookRecord struct {
	ID int64 `json:"id"`
	// KeyGeneration is the fingerprint of the webhook key it was last signed with, Written
	// when.
	KeyGeneration string     `json:"keyGeneration,omitempty"`
	Written       *time.Time `json:"written,omitempty"`
}

// ParseScope parses a ScopeRecord's Scope ("org acme", "repo acme/app").
func ParseScope(s string) (credentials.Scope, error) {
	kind, name, _ := strings.Cut(s, " ")
	switch credentials.ScopeKind(kind) {
	case credentials.ScopeOrganization:
		return credentials.OrganizationScope(name)
	case credentials.ScopeRepository:
		return credentials.RepositoryScope(name)
	}
	return credentials.Scope{}, fmt.Errorf("%w: %q", credentials.ErrBadScope, s)
}

// sortScopes orders scope records: organizations first, then by name.
func sortScopes(rs []ScopeRecord) {
	slices.SortFunc(rs, func(a, b ScopeRecord) int {
		if a.Level != b.Level {
			return strings.Compare(a.Level, b.Level) // "organization" before "repository"
		}
		return strings.Compare(a.Scope, b.Scope)
	})
}

// Store reads and writes the record ConfigMap.
type Store struct {
	Client    client.Client
	Reader    client.Reader
	Namespace string
}

// Load returns the record, an empty one when there is none yet.
func (st *Store) Load(ctx context.Context) (*Record, error) {
	cm := &corev1.ConfigMap{}
	err := st.Reader.Get(ctx, client.ObjectKey{Namespace: st.Namespace, Name: RecordName}, cm)
	switch {
	case apierrors.IsNotFound(err):
		return &Record{}, nil
	case err != nil:
		return nil, fmt.Errorf("read enrollment record: %w", err)
	}
	return DecodeRecord(cm)
}

// DecodeRecord decodes the record of its ConfigMap.
func DecodeRecord(cm *corev1.ConfigMap) (*Record, error) {
	rec := &Record{}
	if raw, ok := cm.Data[RecordKey]; ok {
		if err := json.Unmarshal([]byte(raw), rec); err != nil {
			return nil, fmt.Errorf("enrollment record %s/%s: %w", cm.Namespace, cm.Name, err)
		}
	}
	return rec, nil
}

// Save writes the record (creating its ConfigMap) and returns the ConfigMap, the object
// enrollment's Events are about.
func (st *Store) Save(ctx context.Context, rec *Record) (*corev1.ConfigMap, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{}
	err = st.Reader.Get(ctx, client.ObjectKey{Namespace: st.Namespace, Name: RecordName}, cm)
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: st.Namespace, Name: RecordName,
				Labels: map[string]string{"app.kubernetes.io/name": "flux-webhook", "app.kubernetes.io/component": "enrollment"}},
			Data: map[string]string{RecordKey: string(b)},
		}
		if err := st.Client.Create(ctx, cm); err != nil {
			return nil, fmt.Errorf("write enrollment record: %w", err)
		}
		return cm, nil
	case err != nil:
		return nil, fmt.Errorf("read enrollment record: %w", err)
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[RecordKey] = string(b)
	if err := st.Client.Update(ctx, cm); err != nil {
		return nil, fmt.Errorf("write enrollment record: %w", err)
	}
	return cm, nil
}
