package report_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/testenv"
)

// Records flux-webhook did not write, played by a tenant who can write any annotation of
// its Flux objects: a hand-written record, a real one altered, a real one copied from
// another object, and a real one on an object whose source now names another repository.
// None makes flux-webhook post a status; each is counted, and leaves an Event.
func TestRecordsFluxWebhookDidNotWriteAreIgnored(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	rec := &fluxtest.Recorder{}
	repos, err := flux.NewRepositories("https://"+fluxtest.ForgeHost, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &report.Reporter{Cluster: fluxtest.Local, Poster: rec, Lookup: rec, ResultTimeout: time.Minute, Repositories: repos}
	c, err := r.Controller()
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Start(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	victim := "platform/flux-" + fluxtest.RandomHex(3)
	victimSHA := fluxtest.NewSHA()
	success := api.Status{State: api.StateSuccess, Description: "applied main@sha1:" + victimSHA[:12]}
	forgedRecord := record.Record{Current: &record.Request{Token: time.Now().UTC().Format(time.RFC3339Nano), Repository: victim,
		Ref: "refs/heads/main", SHA: victimSHA, RequestedAt: time.Now(), Posted: api.StatePending, Intent: &success}}

	// A real request on the tenant's own pipeline, to copy and alter.
	p := newPipeline(t)
	sha := p.push(t)
	fluxtest.WaitStates(t, rec, sha, p.ctx(kustomizev1.KustomizationKind), api.StatePending)
	real := &kustomizev1.Kustomization{}
	if err := fluxtest.Kube.Client.Get(ctx, p.ks, real); err != nil {
		t.Fatal(err)
	}
	other := newPipeline(t)

	rejected := func(reason string) float64 {
		return fluxtest.Counter(t, "flux_webhook_records_rejected_total", "cluster", "local", "reason", reason)
	}
	macBefore, repoBefore := rejected(record.RejectedMAC), rejected(record.RejectedRepository)
	tamper := func(key client.ObjectKey, edit func(ann map[string]string)) {
		t.Helper()
		ks := &kustomizev1.Kustomization{}
		if err := fluxtest.Kube.Client.Get(ctx, key, ks); err != nil {
			t.Fatal(err)
		}
		base := ks.DeepCopy()
		if ks.Annotations == nil {
			ks.Annotations = map[string]string{}
		}
		edit(ks.Annotations)
		if err := fluxtest.Kube.Client.Patch(ctx, ks, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	// 1. Hand-written, with a made-up MAC, on the other pipeline's Kustomization.
	tamper(other.ks, func(ann map[string]string) {
		ann[record.Annotation] = forgedRecord.Encode()
		ann[record.MACAnnotation] = strings.Repeat("A", 43)
	})
	// 2. The real record, altered to name the victim's commit, its MAC kept.
	tamper(p.ks, func(ann map[string]string) {
		ann[record.Annotation] = strings.ReplaceAll(ann[record.Annotation], sha, victimSHA)
	})
	// 3. The real record and MAC, copied onto the other pipeline's GitRepository.
	gr := &sourcev1.GitRepository{}
	if err := fluxtest.Kube.Client.Get(ctx, other.gr, gr); err != nil {
		t.Fatal(err)
	}
	base := gr.DeepCopy()
	gr.SetAnnotations(map[string]string{record.Annotation: real.Annotations[record.Annotation],
		record.MACAnnotation: real.Annotations[record.MACAnnotation]})
	if err := fluxtest.Kube.Client.Patch(ctx, gr, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "the forged, altered and copied records counted", func() bool { return rejected(record.RejectedMAC) >= macBefore+3 })

	// 4. A record flux-webhook did write (sealed as its reporter would), on an object whose
	// source names another repository than the record: the tenant pointed its GitRepository
	// at the victim after the push.
	third := newPipeline(t)
	thirdSHA := third.push(t)
	fluxtest.WaitStates(t, rec, thirdSHA, third.ctx(sourcev1.GitRepositoryKind), api.StatePending)
	grThird := &sourcev1.GitRepository{}
	if err := fluxtest.Kube.Client.Get(ctx, third.gr, grThird); err != nil {
		t.Fatal(err)
	}
	base = grThird.DeepCopy()
	grThird.Spec.URL = "https://" + fluxtest.ForgeHost + "/" + victim
	if err := fluxtest.Kube.Client.Patch(ctx, grThird, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitFor(t, "the record of another repository counted", func() bool { return rejected(record.RejectedRepository) >= repoBefore+1 })

	time.Sleep(2 * time.Second) // anything that would be posted is posted by now
	if got := rec.States(victimSHA, other.ctx(kustomizev1.KustomizationKind)); len(got) != 0 {
		t.Fatalf("the forged record made flux-webhook post %v", got)
	}
	for _, s := range rec.All() {
		if s.SHA == victimSHA || strings.EqualFold(s.Repository, victim) {
			t.Fatalf("posted on the victim: %+v", s)
		}
	}
	if got := rec.States(sha, p.ctx(kustomizev1.KustomizationKind)); len(got) != 1 {
		t.Fatalf("the altered record's object: %v", got)
	}
	// Each rejection leaves an Event on the object, and is counted once however often the
	// reporter looks at it.
	var evs eventsv1.EventList
	if err := fluxtest.Kube.Client.List(ctx, &evs, client.InNamespace(other.ns)); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range evs.Items {
		if e.Reason == "RecordRejected" {
			found++
		}
	}
	if found < 2 {
		t.Fatalf("%d RecordRejected events in %s, want one per tampered object", found, other.ns)
	}
	if got := rejected(record.RejectedMAC); got != macBefore+3 {
		t.Fatalf("rejections counted %v times, want 3", got-macBefore)
	}
	// A real push after the forgery replaces the forged record, and is reported.
	next := other.push(t)
	fluxtest.WaitStates(t, rec, next, other.ctx(kustomizev1.KustomizationKind), api.StatePending)
}

// startReporterOn runs a reporter, following the record key, on c until stop or the end of
// the test.
func startReporterOn(t *testing.T, c *cluster.Cluster, rec *fluxtest.Recorder, timeout time.Duration) (stop func()) {
	t.Helper()
	r := &report.Reporter{Cluster: c, Poster: rec, Lookup: rec, ResultTimeout: timeout}
	ctrl, err := r.Controller()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = ctrl.Start(ctx); done <- struct{}{} }()
	go func() { r.FollowRecordKey(ctx); done <- struct{}{} }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; <-done }) }
	t.Cleanup(stop)
	return stop
}

// setAnnotations writes the request record and its MAC on an object as given: a tenant
// putting back what it saved earlier.
func setAnnotations(t *testing.T, o client.Object, key client.ObjectKey, ann map[string]string) {
	t.Helper()
	if err := fluxtest.Kube.Client.Get(t.Context(), key, o); err != nil {
		t.Fatal(err)
	}
	base := o.DeepCopyObject().(client.Object)
	a := o.GetAnnotations()
	for _, k := range []string{record.Annotation, record.MACAnnotation} {
		a[k] = ann[k]
	}
	o.SetAnnotations(a)
	if err := fluxtest.Kube.Client.Patch(t.Context(), o, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
}

// A tenant saves the genuine record of a pending request and puts it back after its final
// status went out (the MAC binds the record to the object, not to a moment): no second final
// status, from the leader that saw the newer record, nor from a replica that takes over
// later, having only watched. The old record is counted (stale), recorded as an Event and
// sealed again with nothing left to report.
func TestOldRecordPutBackPostsNothing(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	rec := &fluxtest.Recorder{}
	// A standby replica: its own memory, built by watching (report.Witnesses).
	standby, err := fluxtest.StartCluster(ctx, "local", fluxtest.Kube)
	if err != nil {
		t.Fatal(err)
	}
	startWitnesses(t, standby)
	stopLeader := startReporterOn(t, fluxtest.Local, rec, time.Minute)

	p := newPipeline(t)
	sha := p.push(t)
	ksCtx := p.ctx(kustomizev1.KustomizationKind)
	fluxtest.WaitStates(t, rec, sha, ksCtx, api.StatePending)
	saved := &kustomizev1.Kustomization{}
	if err := fluxtest.Kube.Client.Get(ctx, p.ks, saved); err != nil {
		t.Fatal(err)
	}
	if r, _ := record.Parse(saved.Annotations); r.Current == nil || r.Current.Final || r.Sealed.IsZero() {
		t.Fatalf("the saved record is not a pending one: %+v", r)
	}
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, p.gr, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationApplied(ctx, fluxtest.Kube.Client, p.ks, testenv.GitRevision("main", sha), ""); err != nil {
		t.Fatal(err)
	}
	fluxtest.WaitStates(t, rec, sha, ksCtx, api.StatePending, api.StateSuccess)
	stale := func() float64 {
		return fluxtest.Counter(t, "flux_webhook_records_rejected_total", "cluster", "local", "reason", record.RejectedStale)
	}
	before := stale()
	retired := func() bool {
		ks := &kustomizev1.Kustomization{}
		if err := fluxtest.Kube.Client.Get(ctx, p.ks, ks); err != nil {
			return false
		}
		r, err := record.Parse(ks.Annotations)
		return err == nil && r.Current != nil && r.Current.Final && r.Sealed.After(r.Current.RequestedAt) &&
			ks.Annotations[record.MACAnnotation] != saved.Annotations[record.MACAnnotation]
	}

	// 1. Put back while the leader runs.
	setAnnotations(t, &kustomizev1.Kustomization{}, p.ks, saved.Annotations)
	fluxtest.WaitFor(t, "the old record counted as stale", func() bool { return stale() >= before+1 })
	fluxtest.WaitFor(t, "the old record sealed again, final", retired)
	time.Sleep(2 * time.Second) // anything that would be posted is posted by now
	if got := rec.States(sha, ksCtx); !slices.Equal(got, []string{api.StatePending, api.StateSuccess}) {
		t.Fatalf("states after the old record came back: %v", got)
	}

	// 2. The leader stops; the old record is put back again before the standby leads.
	stopLeader()
	setAnnotations(t, &kustomizev1.Kustomization{}, p.ks, saved.Annotations)
	time.Sleep(time.Second) // the standby's caches see it
	startReporterOn(t, standby, rec, time.Minute)
	fluxtest.WaitFor(t, "the old record counted by the new leader", func() bool { return stale() >= before+2 })
	fluxtest.WaitFor(t, "the old record sealed again by the new leader", retired)
	time.Sleep(2 * time.Second)
	if got := rec.States(sha, ksCtx); !slices.Equal(got, []string{api.StatePending, api.StateSuccess}) {
		t.Fatalf("states after a takeover with the old record back: %v", got)
	}
	var evs eventsv1.EventList
	if err := fluxtest.Kube.Client.List(ctx, &evs, client.InNamespace(p.ns)); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs.Items, func(e eventsv1.Event) bool { return e.Reason == "RecordRejected" && strings.Contains(e.Note, "stale") }) {
		t.Fatal("no RecordRejected Event naming the old record")
	}
	// A real push after it is reported as usual.
	next := p.push(t)
	fluxtest.WaitStates(t, rec, next, ksCtx, api.StatePending)
}

// The record key rotates while a push is pending, and Flux answers after the previous key's
// grace: the records were sealed again with the new key meanwhile, so the final statuses go
// out.
func TestRecordKeyRotationLosesNoFinalStatus(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	keys := &credentials.Keyring{Grace: 2 * time.Second}
	if err := keys.Set(credentials.RecordKey, "rotation-record-key-one-0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	c, err := fluxtest.StartClusterWith(ctx, "rotating", fluxtest.Kube, keys)
	if err != nil {
		t.Fatal(err)
	}
	rec := &fluxtest.Recorder{}
	startReporterOn(t, c, rec, time.Minute)
	p := newPipeline(t)
	p.sha = fluxtest.NewSHA()
	if _, err := fluxtest.NewRequester(t, cluster.NewSet(c)).Request(ctx, fluxtest.PushOf(p.repo, "refs/heads/main", p.sha)); err != nil {
		t.Fatal(err)
	}
	ctxOf := func(kind string) string {
		return api.Target{Cluster: "rotating", Kind: kind, Namespace: p.ns, Name: "app"}.Context()
	}
	for _, kind := range []string{sourcev1.GitRepositoryKind, kustomizev1.KustomizationKind} {
		fluxtest.WaitStates(t, rec, p.sha, ctxOf(kind), api.StatePending)
	}
	second := []byte("rotation-record-key-two-0123456789abcdef")
	if err := keys.Set(credentials.RecordKey, string(second)); err != nil {
		t.Fatal(err)
	}
	sealedWithSecond := func(key client.ObjectKey, o client.Object) bool {
		if err := fluxtest.Kube.Client.Get(ctx, key, o); err != nil {
			return false
		}
		id := record.ID("rotating", flux.KindOf(o), key.Namespace, key.Name, string(o.GetUID()))
		return record.SealedWith(second, id, o.GetAnnotations())
	}
	fluxtest.WaitFor(t, "the pending records sealed with the new key", func() bool {
		return sealedWithSecond(p.gr, &sourcev1.GitRepository{}) && sealedWithSecond(p.ks, &kustomizev1.Kustomization{})
	})
	time.Sleep(3 * time.Second) // past the grace: the first key opens nothing now
	if n := len(keys.Values(credentials.RecordKey)); n != 1 {
		t.Fatalf("%d record keys valid after the grace", n)
	}
	if err := testenv.MarkGitRepositoryReady(ctx, fluxtest.Kube.Client, p.gr, testenv.GitRevision("main", p.sha), ""); err != nil {
		t.Fatal(err)
	}
	if err := testenv.MarkKustomizationApplied(ctx, fluxtest.Kube.Client, p.ks, testenv.GitRevision("main", p.sha), ""); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{sourcev1.GitRepositoryKind, kustomizev1.KustomizationKind} {
		fluxtest.WaitStates(t, rec, p.sha, ctxOf(kind), api.StatePending, api.StateSuccess)
	}
}

// TestWitnessStandsAsideForTheReporter: while a cluster's reporter runs in the process, its
// handlers witness the records and the cluster's witness registers none of its own (one
// informer handler per kind, not two); once the reporter stops, the witness takes over again,
// and a second reporter's start and stop on another cluster does not move it.
func TestWitnessStandsAsideForTheReporter(t *testing.T) {
	fluxtest.Integration(t)
	ctx := t.Context()
	rec := &fluxtest.Recorder{}
	c, err := fluxtest.StartCluster(ctx, "local", fluxtest.Kube)
	if err != nil {
		t.Fatal(err)
	}
	other, err := fluxtest.StartCluster(ctx, "local", fluxtest.Kube)
	if err != nil {
		t.Fatal(err)
	}
	startWitnesses(t, c, other)
	if report.Reporting(c) || report.Reporting(other) {
		t.Fatal("a cluster without a reporter is reported as witnessed by one")
	}
	stop := startReporterOn(t, c, rec, time.Minute)
	fluxtest.WaitFor(t, "the reporter witnessing once its handlers synced", func() bool { return report.Reporting(c) })
	stopOther := startReporterOn(t, other, rec, time.Minute)
	fluxtest.WaitFor(t, "the other reporter witnessing", func() bool { return report.Reporting(other) })
	stopOther()
	// The handlers go when the reporter's context ends, in a goroutine of their own.
	fluxtest.WaitFor(t, "the other reporter's cluster witnessed by its witness again", func() bool { return !report.Reporting(other) })
	if !report.Reporting(c) {
		t.Fatal("the other reporter's stop moved this cluster's reporter aside")
	}
	stop()
	fluxtest.WaitFor(t, "the stopped reporter's cluster witnessed by its witness again", func() bool { return !report.Reporting(c) })
}

// startWitnesses runs report.Witnesses on the clusters until the test ends.
func startWitnesses(t *testing.T, cs ...*cluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = (&report.Witnesses{Clusters: cluster.NewSet(cs...)}).Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}
