package gitops_test

import (
	"context"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openova-io/flux-webhook/gitops"
)

// Records flux-webhook did not write, played by a tenant who can write any annotation of
// its Flux objects: a hand-written record, a real one altered, a real one copied from
// another object, and a real one on an object whose source now names another repository.
// None makes flux-webhook post a status; each is counted, and leaves an Event.
func TestRecordsFluxWebhookDidNotWriteAreIgnored(t *testing.T) {
	integration(t)
	ctx := t.Context()
	rec := &recorder{}
	repos, err := gitops.NewRepositories("https://"+giteaHost, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &gitops.Reporter{Cluster: local, Poster: rec, Lookup: rec, ResultTimeout: time.Minute, Repositories: repos}
	c, err := r.Controller()
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Start(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	victim := "platform/flux-" + randomHex(3)
	victimSHA := newSHA()
	success := gitops.Status{State: gitops.StateSuccess, Description: "applied main@sha1:" + victimSHA[:12]}
	forgedRecord := gitops.Record{Current: &gitops.Request{Token: time.Now().UTC().Format(time.RFC3339Nano), Repository: victim,
		Ref: "refs/heads/main", SHA: victimSHA, RequestedAt: time.Now(), Posted: gitops.StatePending, Intent: &success}}

	// A real request on the tenant's own pipeline, to copy and alter.
	p := newPipeline(t)
	sha := p.push(t)
	waitStates(t, rec, sha, p.ctx(gitops.KindKustomization), gitops.StatePending)
	real := &kustomizev1.Kustomization{}
	if err := kube.Client.Get(ctx, p.ks, real); err != nil {
		t.Fatal(err)
	}
	other := newPipeline(t)

	rejected := func(reason string) float64 {
		return counter(t, "flux_webhook_records_rejected_total", "cluster", "local", "reason", reason)
	}
	macBefore, repoBefore := rejected(gitops.RejectedMAC), rejected(gitops.RejectedRepository)
	tamper := func(key client.ObjectKey, edit func(ann map[string]string)) {
		t.Helper()
		ks := &kustomizev1.Kustomization{}
		if err := kube.Client.Get(ctx, key, ks); err != nil {
			t.Fatal(err)
		}
		base := ks.DeepCopy()
		if ks.Annotations == nil {
			ks.Annotations = map[string]string{}
		}
		edit(ks.Annotations)
		if err := kube.Client.Patch(ctx, ks, client.MergeFrom(base)); err != nil {
			t.Fatal(err)
		}
	}
	// 1. Hand-written, with a made-up MAC, on the other pipeline's Kustomization.
	tamper(other.ks, func(ann map[string]string) {
		ann[gitops.RecordAnnotation] = forgedRecord.Encode()
		ann[gitops.RecordMACAnnotation] = strings.Repeat("A", 43)
	})
	// 2. The real record, altered to name the victim's commit, its MAC kept.
	tamper(p.ks, func(ann map[string]string) {
		ann[gitops.RecordAnnotation] = strings.ReplaceAll(ann[gitops.RecordAnnotation], sha, victimSHA)
	})
	// 3. The real record and MAC, copied onto the other pipeline's GitRepository.
	gr := &sourcev1.GitRepository{}
	if err := kube.Client.Get(ctx, other.gr, gr); err != nil {
		t.Fatal(err)
	}
	base := gr.DeepCopy()
	gr.SetAnnotations(map[string]string{gitops.RecordAnnotation: real.Annotations[gitops.RecordAnnotation],
		gitops.RecordMACAnnotation: real.Annotations[gitops.RecordMACAnnotation]})
	if err := kube.Client.Patch(ctx, gr, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the forged, altered and copied records counted", func() bool { return rejected(gitops.RejectedMAC) >= macBefore+3 })

	// 4. A record flux-webhook did write (sealed as its reporter would), on an object whose
	// source names another repository than the record: the tenant pointed its GitRepository
	// at the victim after the push.
	third := newPipeline(t)
	thirdSHA := third.push(t)
	waitStates(t, rec, thirdSHA, third.ctx(gitops.KindGitRepository), gitops.StatePending)
	grThird := &sourcev1.GitRepository{}
	if err := kube.Client.Get(ctx, third.gr, grThird); err != nil {
		t.Fatal(err)
	}
	base = grThird.DeepCopy()
	grThird.Spec.URL = "https://" + giteaHost + "/" + victim
	if err := kube.Client.Patch(ctx, grThird, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the record of another repository counted", func() bool { return rejected(gitops.RejectedRepository) >= repoBefore+1 })

	time.Sleep(2 * time.Second) // anything that would be posted is posted by now
	if got := rec.states(victimSHA, other.ctx(gitops.KindKustomization)); len(got) != 0 {
		t.Fatalf("the forged record made flux-webhook post %v", got)
	}
	for _, s := range rec.all() {
		if s.SHA == victimSHA || strings.EqualFold(s.Repository, victim) {
			t.Fatalf("posted on the victim: %+v", s)
		}
	}
	if got := rec.states(sha, p.ctx(gitops.KindKustomization)); len(got) != 1 {
		t.Fatalf("the altered record's object: %v", got)
	}
	// Each rejection leaves an Event on the object, and is counted once however often the
	// reporter looks at it.
	var evs eventsv1.EventList
	if err := kube.Client.List(ctx, &evs, client.InNamespace(other.ns)); err != nil {
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
	if got := rejected(gitops.RejectedMAC); got != macBefore+3 {
		t.Fatalf("rejections counted %v times, want 3", got-macBefore)
	}
	// A real push after the forgery replaces the forged record, and is reported.
	next := other.push(t)
	waitStates(t, rec, next, other.ctx(gitops.KindKustomization), gitops.StatePending)
}
