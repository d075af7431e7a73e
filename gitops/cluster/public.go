package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/openova-io/flux-webhook/gitops/record"
)

// What flux-webhook says of a failure where many can read it — a /hook answer, a commit
// status on a public repository, a platform job — is a short category and a reference; the
// whole error, which may name internal API server addresses, goes to the log line with the
// same reference.

// PublicError returns the category of err for one cluster, with a new reference, and logs
// err with that reference.
func PublicError(ctx context.Context, cluster string, err error) string {
	ref := newRef()
	category := categorize(cluster, err)
	log.FromContext(ctx).Error(err, "failure", "cluster", cluster, "category", category, "ref", ref)
	return fmt.Sprintf("%s (ref %s)", category, ref)
}

// categorize names what kind of failure err is, in words that reveal nothing internal.
func categorize(cluster string, err error) string {
	var status apierrors.APIStatus
	switch {
	case errors.Is(err, record.ErrNoKey):
		return "flux-webhook has no record key"
	case errors.Is(err, context.DeadlineExceeded) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err):
		return fmt.Sprintf("cluster %s did not answer in time", cluster)
	case apierrors.IsConflict(err):
		return "the object kept changing while being patched"
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return fmt.Sprintf("patch refused by the API server of cluster %s (permissions)", cluster)
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return fmt.Sprintf("patch refused by the API server of cluster %s", cluster)
	case Unavailable(err):
		return fmt.Sprintf("cluster %s unreachable", cluster)
	case errors.As(err, &status):
		return fmt.Sprintf("the API server of cluster %s answered %d", cluster, status.Status().Code)
	}
	return "internal error"
}

// newRef returns a reference that ties a public message to its log line.
func newRef() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
