package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/openova-io/flux-webhook/gitops/record"
)

const (
	// maxClusterEvents bounds the Events waiting to be written to one cluster: one push's
	// results in a cluster of a thousand objects (client-go's broadcaster, which this
	// replaces, queued as many).
	maxClusterEvents = 1000
	// maxPendingEvents bounds the Events waiting in the whole replica (about 600 bytes
	// each: 12 MiB at most), whatever the number of clusters.
	maxPendingEvents = 20000
	// eventWriters is how many Events are written at once, over all clusters: Events are
	// bookkeeping, and a few writers keep them flowing without a goroutine per cluster.
	eventWriters = 4
	// maxEventNote is the longest note the events.k8s.io API accepts (1 KiB).
	maxEventNote = 1024
	// eventIdle is how long an idle writer sleeps before it looks again at the clusters
	// whose Events wait for a push to be requested, or for the cluster to answer again.
	eventIdle = 5 * time.Second
	// eventWriteTimeout bounds one Event's write: an API server that stopped answering
	// holds a writer this long, and its next Events wait eventIdle before the next try.
	eventWriteTimeout = 10 * time.Second
)

var eventsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "flux_webhook_events_dropped_total",
	Help: "Kubernetes Events not written, by cluster and reason: queue-full (more waiting than the replica keeps), not-written (the API server refused or failed the write).",
}, []string{"cluster", "reason"})

func init() { metrics.Registry.MustRegister(eventsDropped) }

var _ manager.LeaderElectionRunnable = (*EventWriter)(nil)

// EventWriter writes the Kubernetes Events of every cluster (Cluster.WriteEventsWith)
// through each cluster's bookkeeping client (Bookkeeping: a client limit of its own, never
// the one a push's patches spend), and holds a cluster's Events back while a push is being
// requested there (Cluster.Busy), as the reporter's bookkeeping is: the API server answers
// the patches first, and the Events follow within seconds; a cluster that did not answer
// an Event's write gets the next one eventIdle later. It replaces client-go's event
// broadcasters, which each cluster started with its first Event (two per cluster, about
// 120 KiB of queues and goroutines each cluster, 23 MiB at 200): here a few writers serve
// every cluster, and a cluster costs only the Events waiting for it. What waits is bounded
// (maxClusterEvents, maxPendingEvents); an Event over the bound, or refused by the API
// server, is counted (flux_webhook_events_dropped_total) and logged: the statuses, the
// records and the log hold what auditors need, the Events repeat it on the objects.
type EventWriter struct {
	// Instance names this replica in the Events (reportingInstance), e.g. its pod's name.
	Instance string

	mu      sync.Mutex
	queues  map[*Cluster][]*eventsv1.Event
	order   []*Cluster             // clusters with Events waiting, served in turn
	resting map[*Cluster]time.Time // clusters that did not answer, until when they wait
	pending int
	wake    chan struct{}
}

// NeedLeaderElection is false: every replica writes its own Events.
func (w *EventWriter) NeedLeaderElection() bool { return false }

func (w *EventWriter) init() {
	if w.queues == nil {
		w.queues = map[*Cluster][]*eventsv1.Event{}
		w.resting = map[*Cluster]time.Time{}
		w.wake = make(chan struct{}, 1)
	}
}

// Start writes Events until ctx ends; what still waits then is dropped.
func (w *EventWriter) Start(ctx context.Context) error {
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithName("events"))
	w.mu.Lock()
	w.init()
	wake := w.wake
	w.mu.Unlock()
	var wg sync.WaitGroup
	for range eventWriters {
		wg.Go(func() {
			for {
				c, ev, wait := w.next()
				if ev != nil {
					w.write(ctx, c, ev)
					continue
				}
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-wake:
				case <-t.C:
				}
				t.Stop()
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// next returns the next Event to write and its cluster, taking the clusters in turn and
// passing over those where a push is being requested and those that do not answer (their
// last write); when none is ready, how long to wait.
func (w *EventWriter) next() (*Cluster, *eventsv1.Event, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wait := eventIdle
	for i, c := range w.order {
		if until, ok := w.resting[c]; ok {
			if d := time.Until(until); d > 0 {
				wait = min(wait, d)
				continue
			}
			delete(w.resting, c)
		}
		if busy := c.Busy(); busy > 0 {
			wait = min(wait, busy)
			continue
		}
		q := w.queues[c]
		ev := q[0]
		q[0] = nil
		w.pending--
		w.order = slices.Delete(w.order, i, i+1)
		if len(q) == 1 {
			delete(w.queues, c)
		} else {
			w.queues[c] = q[1:]
			w.order = append(w.order, c) // its next Event after the other clusters'
		}
		return c, ev, 0
	}
	return nil, nil, wait
}

func (w *EventWriter) write(ctx context.Context, c *Cluster, ev *eventsv1.Event) {
	cl, err := c.budgetClient(Bookkeeping)
	if err == nil {
		wctx, cancel := context.WithTimeout(ctx, eventWriteTimeout)
		err = cl.Create(wctx, ev)
		cancel()
	}
	if err != nil && ctx.Err() == nil {
		if Unavailable(err) {
			w.mu.Lock()
			w.resting[c] = time.Now().Add(eventIdle)
			w.mu.Unlock()
		}
		eventsDropped.WithLabelValues(c.Name, "not-written").Inc()
		log.FromContext(ctx).Error(err, "event not written", "cluster", c.Name, "reason", ev.Reason,
			"kind", ev.Regarding.Kind, "namespace", ev.Regarding.Namespace, "name", ev.Regarding.Name)
	}
}

// add queues an Event of cluster c.
func (w *EventWriter) add(ctx context.Context, c *Cluster, ev *eventsv1.Event) {
	w.mu.Lock()
	w.init()
	q, waiting := w.queues[c]
	full := len(q) >= maxClusterEvents || w.pending >= maxPendingEvents
	if !full {
		w.queues[c] = append(q, ev)
		w.pending++
		if !waiting {
			w.order = append(w.order, c)
		}
	}
	w.mu.Unlock()
	if full {
		eventsDropped.WithLabelValues(c.Name, "queue-full").Inc()
		log.FromContext(ctx).Error(ErrEventsFull, "event dropped", "cluster", c.Name, "reason", ev.Reason,
			"kind", ev.Regarding.Kind, "namespace", ev.Regarding.Namespace, "name", ev.Regarding.Name)
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// forget drops the Events waiting for a cluster that stopped.
func (w *EventWriter) forget(c *Cluster) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.resting, c)
	q, ok := w.queues[c]
	if !ok {
		return
	}
	w.pending -= len(q)
	delete(w.queues, c)
	w.order = slices.DeleteFunc(w.order, func(o *Cluster) bool { return o == c })
}

// Waiting returns how many Events wait to be written.
func (w *EventWriter) Waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending
}

// ErrEventsFull: more Events wait to be written than a replica keeps.
var ErrEventsFull = fmt.Errorf("too many events waiting to be written (%d per cluster, %d in all)", maxClusterEvents, maxPendingEvents)

// WriteEventsWith makes the cluster's Events (Events) written by w instead of
// controller-runtime's recorder. Set it before the cluster runs.
func (c *Cluster) WriteEventsWith(w *EventWriter) {
	c.eventWriter = w
	c.events = clusterEvents{w: w, c: c}
}

// clusterEvents is a cluster's recorder.EventRecorder on an EventWriter.
type clusterEvents struct {
	w *EventWriter
	c *Cluster
}

var _ recorder.EventRecorder = clusterEvents{}

func (r clusterEvents) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.AnnotatedEventf(regarding, related, nil, eventtype, reason, action, note, args...)
}

func (r clusterEvents) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	ctx := context.Background() // only for the log: the recorder interface carries none
	ref, err := reference.GetReference(r.c.GetScheme(), regarding)
	if err != nil {
		log.FromContext(ctx).Error(err, "event not recorded: no reference to its object", "cluster", r.c.Name, "reason", reason)
		return
	}
	var rel *corev1.ObjectReference
	if related != nil {
		if rel, err = reference.GetReference(r.c.GetScheme(), related); err != nil {
			rel = nil // the Event stands without it
		}
	}
	if len(args) > 0 {
		note = fmt.Sprintf(note, args...)
	}
	now := time.Now()
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	r.w.add(ctx, r.c, &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()), Namespace: ns, Annotations: annotations},
		EventTime:  metav1.NewMicroTime(now),
		// The API server requires both: the component that writes the Event, and which of
		// its replicas.
		ReportingController: EventSource,
		ReportingInstance:   r.w.instance(),
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Related:             rel,
		Note:                record.Cut(note, maxEventNote),
		Type:                eventtype,
	})
}

// instance is the Events' reportingInstance: the component and the replica, within the 128
// bytes the API server accepts.
func (w *EventWriter) instance() string {
	if w.Instance == "" {
		return EventSource
	}
	return record.Cut(EventSource+"-"+w.Instance, 128)
}
