package gitops

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// ErrUnavailable wraps failures to reach a cluster's API server: the request may succeed
// if retried later.
var ErrUnavailable = errors.New("kubernetes api unavailable")

// EventSource is the reporting controller of the Kubernetes Events flux-webhook records.
const EventSource = "flux-webhook"

// Cluster is one Kubernetes cluster whose Flux objects flux-webhook requests and watches:
// its cache (with the field indexes of SetupIndexes), a client that writes through the API
// server, an uncached reader for conflict retries, and an event recorder.
type Cluster struct {
	Name   string
	Region string
	cluster.Cluster
	events recorder.EventRecorder
}

// NewCluster wraps a controller-runtime cluster (a manager is one).
func NewCluster(name, region string, c cluster.Cluster) *Cluster {
	return &Cluster{Name: name, Region: region, Cluster: c, events: c.GetEventRecorder(EventSource)}
}

// ClusterSet is the set of clusters a request fans out to.
type ClusterSet struct {
	mu       sync.RWMutex
	clusters map[string]*Cluster
}

// NewClusterSet returns a set holding the given clusters.
func NewClusterSet(cs ...*Cluster) *ClusterSet {
	s := &ClusterSet{clusters: map[string]*Cluster{}}
	for _, c := range cs {
		s.clusters[c.Name] = c
	}
	return s
}

// Clusters returns the clusters of the set.
func (s *ClusterSet) Clusters() []*Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Cluster, 0, len(s.clusters))
	for _, c := range s.clusters {
		out = append(out, c)
	}
	return out
}

// Get returns the named cluster, or nil.
func (s *ClusterSet) Get(name string) *Cluster {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clusters[name]
}

// unavailable reports whether err means the API server could not be reached or could not
// answer now, as opposed to refusing the request.
func unavailable(err error) bool {
	if err == nil {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		switch status.Status().Code {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
