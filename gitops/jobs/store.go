package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
)

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// JobStore keeps reconcile jobs in ConfigMaps of one namespace, so that any replica can
// answer for a job and identical requests in flight are found whichever replica got them.
type JobStore struct {
	Client    client.Client // writes
	Reader    client.Reader // uncached reads
	Namespace string
}

func jobName(id string) string { return "flux-webhook-job-" + id }

// Keys of a job's ConfigMap: the job without its targets, and its targets, one per line
// ("cluster kind namespace name": no field holds a space), compact enough for maxJobTargets.
const (
	jobData     = "job.json"
	targetsData = "targets"
)

func encodeJob(job *api.Job) (map[string]string, error) {
	j := *job
	j.Targets = nil
	b, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	var t strings.Builder
	for _, tg := range job.Targets {
		fmt.Fprintf(&t, "%s %s %s %s\n", tg.Cluster, tg.Kind, tg.Namespace, tg.Name)
	}
	return map[string]string{jobData: string(b), targetsData: t.String()}, nil
}

func (s *JobStore) save(ctx context.Context, job *api.Job, digest string) error {
	data, err := encodeJob(job)
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: jobName(job.ID),
			Labels: map[string]string{JobLabel: digest, "app.kubernetes.io/managed-by": "flux-webhook"}},
		Data: data,
	}
	if err := s.Client.Create(ctx, cm, client.FieldOwner(cluster.FieldOwner)); err != nil {
		return fmt.Errorf("save job %s: %w", job.ID, err)
	}
	return nil
}

func (s *JobStore) load(ctx context.Context, id string) (*api.Job, error) {
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, ErrJobNotFound
	}
	cm := &corev1.ConfigMap{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: jobName(id)}, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, ErrJobNotFound
		}
		return nil, fmt.Errorf("load job %s: %w", id, err)
	}
	return decodeJob(cm)
}

func decodeJob(cm *corev1.ConfigMap) (*api.Job, error) {
	var j api.Job
	if err := json.Unmarshal([]byte(cm.Data[jobData]), &j); err != nil {
		return nil, fmt.Errorf("job %s: %w", cm.Name, err)
	}
	for line := range strings.Lines(cm.Data[targetsData]) {
		f := strings.Fields(line)
		if len(f) == 4 {
			j.Targets = append(j.Targets, api.Target{Cluster: f[0], Kind: f[1], Namespace: f[2], Name: f[3]})
		}
	}
	return &j, nil
}

// update writes what the worker did of a job, failing on a conflict with another writer.
func (s *JobStore) update(ctx context.Context, job *api.Job) error {
	cm := &corev1.ConfigMap{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: jobName(job.ID)}, cm); err != nil {
		return fmt.Errorf("load job %s: %w", job.ID, err)
	}
	data, err := encodeJob(job)
	if err != nil {
		return err
	}
	cm.Data = data
	if err := s.Client.Update(ctx, cm, client.FieldOwner(cluster.FieldOwner)); err != nil {
		return fmt.Errorf("save job %s: %w", job.ID, err)
	}
	return nil
}

// rateName is the ConfigMap of the job rate's token bucket, shared by every replica.
const rateName = "flux-webhook-job-rate"

// take takes a token of the job rate (platformRate, platformBurst), shared by every replica
// through a ConfigMap written with an optimistic lock; a *RateLimitedError when there is
// none.
func (s *JobStore) take(ctx context.Context, now time.Time) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm := &corev1.ConfigMap{}
		err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: rateName}, cm)
		create := apierrors.IsNotFound(err)
		if err != nil && !create {
			return fmt.Errorf("read the job rate: %w", err)
		}
		tokens, at := float64(platformBurst), now
		if !create {
			t, terr := strconv.ParseFloat(cm.Data["tokens"], 64)
			a, aerr := time.Parse(time.RFC3339Nano, cm.Data["at"])
			if terr == nil && aerr == nil && !a.After(now) {
				tokens, at = min(platformBurst, t+now.Sub(a).Seconds()*platformRate), now
			}
		}
		if tokens < 1 {
			return &RateLimitedError{RetryAfter: time.Duration((1 - tokens) / platformRate * float64(time.Second))}
		}
		cm.Data = map[string]string{"tokens": strconv.FormatFloat(tokens-1, 'f', 6, 64), "at": at.UTC().Format(time.RFC3339Nano)}
		if create {
			cm.Name, cm.Namespace = rateName, s.Namespace
			cm.Labels = map[string]string{"app.kubernetes.io/managed-by": "flux-webhook"}
			err = s.Client.Create(ctx, cm, client.FieldOwner(cluster.FieldOwner))
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), rateName, err) // another replica made it: again
			}
			return err
		}
		return s.Client.Update(ctx, cm, client.FieldOwner(cluster.FieldOwner))
	})
}

func (s *JobStore) list(ctx context.Context, opts ...client.ListOption) ([]*api.Job, error) {
	var cms corev1.ConfigMapList
	if err := s.Reader.List(ctx, &cms, append(opts, client.InNamespace(s.Namespace))...); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var out []*api.Job
	for i := range cms.Items {
		if j, err := decodeJob(&cms.Items[i]); err == nil {
			out = append(out, j)
		}
	}
	return out, nil
}

func (s *JobStore) inFlight(ctx context.Context, digest string) ([]*api.Job, error) {
	return s.list(ctx, client.MatchingLabels{JobLabel: digest})
}

// prune deletes jobs created before a time; a failure is logged (a missing permission would
// otherwise let jobs pile up unseen) and left for the next prune.
func (s *JobStore) prune(ctx context.Context, before time.Time) {
	logger := log.FromContext(ctx)
	jobs, err := s.list(ctx, client.HasLabels{JobLabel})
	if err != nil {
		logger.Error(err, "prune reconcile jobs")
		return
	}
	for _, j := range jobs {
		if j.Created.Before(before) {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: jobName(j.ID)}}
			if err := client.IgnoreNotFound(s.Client.Delete(ctx, cm)); err != nil {
				logger.Error(err, "prune reconcile job", "job", j.ID)
			}
		}
	}
}
