package report_test

import (
	"context"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/internal/fluxtest"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/report"
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
