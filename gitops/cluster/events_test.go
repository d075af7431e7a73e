package cluster_test

import (
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
)

// eventsOf lists the Events of namespace ns with reason, on the real API server.
func eventsOf(t *testing.T, ns, reason string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := fluxtest.Kube.Client.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// The package's clusters write their Events with fluxtest.Events, the binary's writer: on
// the object, as the events.k8s.io API wants them (the note cut to what it accepts), and
// only once no push is being requested in the cluster.
func TestEventWriter(t *testing.T) {
	fluxtest.Integration(t)
	ns := fluxtest.Namespace(t)
	ks := fluxtest.Kustomization(ns, "app", ns, "src")
	fluxtest.Create(t, ks)
	c := fluxtest.Local

	t.Run("written on the object", func(t *testing.T) {
		long := strings.Repeat("é", cluster.MaxEventNote) // two bytes each: cut at a character
		c.Events().Eventf(ks, nil, corev1.EventTypeWarning, "TestWritten", "Test", "note %s %s", "of", long)
		fluxtest.WaitFor(t, "the Event written", func() bool { return len(eventsOf(t, ns, "TestWritten")) == 1 })
		e := eventsOf(t, ns, "TestWritten")[0]
		checks := []struct{ what, got, want string }{
			{"reportingController", e.ReportingController, cluster.EventSource},
			{"reportingInstance", e.ReportingInstance, cluster.EventSource + "-test"},
			{"regarding kind", e.Regarding.Kind, "Kustomization"},
			{"regarding apiVersion", e.Regarding.APIVersion, "kustomize.toolkit.fluxcd.io/v1"},
			{"regarding name", e.Regarding.Namespace + "/" + e.Regarding.Name, ns + "/app"},
			{"type", e.Type, corev1.EventTypeWarning},
			{"action", e.Action, "Test"},
			{"note's start", e.Note[:len("note of é")], "note of é"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
			}
		}
		if len(e.Note) > cluster.MaxEventNote || len(e.Note) < cluster.MaxEventNote-1 || strings.ContainsRune(e.Note, '\uFFFD') {
			t.Errorf("note of %d bytes (valid: %v), want cut to %d on a character", len(e.Note), !strings.ContainsRune(e.Note, '\uFFFD'), cluster.MaxEventNote)
		}
		if e.Regarding.UID != ks.UID {
			t.Errorf("regarding uid %s, want %s", e.Regarding.UID, ks.UID)
		}
	})

	t.Run("held while a push is requested", func(t *testing.T) {
		done := c.Requesting()
		c.Events().Eventf(ks, nil, corev1.EventTypeNormal, "TestHeld", "Test", "held")
		// The writers look at the cluster at least every second meanwhile; three looks.
		for range 3 {
			time.Sleep(time.Second)
			if n := len(eventsOf(t, ns, "TestHeld")); n != 0 {
				done()
				t.Fatalf("%d Events written while a push was being requested", n)
			}
		}
		if n := fluxtest.Events.Waiting(); n < 1 {
			t.Errorf("%d Events waiting, want the held one", n)
		}
		done()
		fluxtest.WaitFor(t, "the held Event written once the push is requested", func() bool { return len(eventsOf(t, ns, "TestHeld")) == 1 })
	})

	t.Run("bounded", func(t *testing.T) {
		// A writer that never runs: what waits only grows, up to its bound.
		idle := &cluster.EventWriter{}
		b, err := fluxtest.StartCluster(t.Context(), "bounded-"+ns, fluxtest.Kube, func(c *cluster.Cluster) { c.WriteEventsWith(idle) })
		if err != nil {
			t.Fatal(err)
		}
		dropped := cluster.EventsDropped.WithLabelValues(b.Name, "queue-full")
		count := func() float64 {
			var m dto.Metric
			if err := dropped.Write(&m); err != nil {
				t.Fatal(err)
			}
			return m.GetCounter().GetValue()
		}
		before := count()
		const over = 7
		for range cluster.MaxClusterEvents + over {
			b.Events().Eventf(ks, nil, corev1.EventTypeNormal, "TestBounded", "Test", "bounded")
		}
		if n := idle.Waiting(); n != cluster.MaxClusterEvents {
			t.Errorf("%d Events waiting, want %d", n, cluster.MaxClusterEvents)
		}
		if got := count() - before; got != over {
			t.Errorf("%v Events counted dropped, want %d", got, over)
		}
	})
}
