package record

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/api"
)

func TestRecordRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	rec := Record{Current: &Request{Token: "t1", Repository: "org/app", Ref: "refs/heads/main", SHA: "abc", Delivery: "d1", RequestedAt: at, Posted: api.StatePending}}
	got, err := Parse(map[string]string{Annotation: rec.Encode()})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got.Current, *rec.Current) {
		t.Fatalf("round trip: got %+v, want %+v", got.Current, rec.Current)
	}
	if _, err := Parse(map[string]string{Annotation: "{"}); err == nil {
		t.Fatal("malformed record parsed")
	}
	if r, err := Parse(nil); err != nil || r.Pending() {
		t.Fatalf("missing record: %+v, %v", r, err)
	}
}

func TestRecordSupersede(t *testing.T) {
	req := func(sha string) Request { return Request{Token: "t-" + sha, Repository: "org/app", SHA: sha} }
	t.Run("first request", func(t *testing.T) {
		out, dropped, ok := Record{}.Supersede(req("a"))
		if !ok || len(dropped) != 0 || out.Current.SHA != "a" || len(out.Superseded) != 0 {
			t.Fatalf("got %+v %v %v", out, dropped, ok)
		}
	})
	t.Run("same commit again is a no-op", func(t *testing.T) {
		r, _, _ := Record{}.Supersede(req("a"))
		again := req("a")
		again.Token = "t-other"
		out, _, ok := r.Supersede(again)
		if ok || out.Current.Token != "t-a" {
			t.Fatalf("redelivery patched: %+v %v", out, ok)
		}
	})
	t.Run("same commit of another repository is a new request", func(t *testing.T) {
		r, _, _ := Record{}.Supersede(req("a"))
		other := req("a")
		other.Repository = "org/fork"
		if _, _, ok := r.Supersede(other); !ok {
			t.Fatal("request of another repository ignored")
		}
	})
	t.Run("newer commit supersedes an unfinished one", func(t *testing.T) {
		r, _, _ := Record{}.Supersede(req("a"))
		out, _, ok := r.Supersede(req("b"))
		if !ok || out.Current.SHA != "b" || len(out.Superseded) != 1 || out.Superseded[0].SHA != "a" || out.Superseded[0].By != "b" {
			t.Fatalf("got %+v", out)
		}
	})
	t.Run("a repeat arriving after a newer push is absorbed", func(t *testing.T) {
		now := time.Now()
		a, b := req("a"), req("b")
		a.RequestedAt, b.RequestedAt = now, now.Add(time.Second)
		r, _, _ := Record{}.Supersede(a)
		r, _, _ = r.Supersede(b)
		late := req("a")
		late.RequestedAt = now.Add(2 * time.Second)
		if out, _, ok := r.Supersede(late); ok {
			t.Fatalf("late repeat of a superseded push patched again: %+v", out.Current)
		}
	})
	t.Run("a force-push back to an earlier commit is a new push", func(t *testing.T) {
		now := time.Now()
		a, b := req("a"), req("b")
		a.RequestedAt, b.RequestedAt = now, now.Add(time.Second)
		r, _, _ := Record{}.Supersede(a)
		r, _, _ = r.Supersede(b)
		back := req("a")
		back.Before, back.RequestedAt = "b", now.Add(2*time.Second)
		if out, _, ok := r.Supersede(back); !ok || out.Current.SHA != "a" {
			t.Fatalf("rollback to a ignored: %+v %v", out.Current, ok)
		}
	})
	t.Run("seen pushes are bounded and expire", func(t *testing.T) {
		now := time.Now()
		var r Record
		for i := range maxSeen + 10 {
			q := req(fmt.Sprint(i))
			q.RequestedAt = now.Add(time.Duration(i) * time.Millisecond)
			r, _, _ = r.Supersede(q)
		}
		if len(r.Seen) != maxSeen {
			t.Fatalf("seen %d", len(r.Seen))
		}
		q := req("new")
		q.RequestedAt = now.Add(RepeatWindow + time.Hour)
		r, _, _ = r.Supersede(q)
		if len(r.Seen) != 1 {
			t.Fatalf("expired entries kept: %d", len(r.Seen))
		}
	})
	t.Run("a finished request absorbs a repeat within the window", func(t *testing.T) {
		first := req("a")
		first.RequestedAt = time.Now()
		r, _, _ := Record{}.Supersede(first)
		r.Current.Final, r.Current.Posted = true, api.StateSuccess
		again := req("a")
		again.RequestedAt = first.RequestedAt.Add(RepeatWindow - time.Second)
		if _, _, ok := r.Supersede(again); ok {
			t.Fatal("repeat within the window patched again")
		}
		again.RequestedAt = first.RequestedAt.Add(RepeatWindow)
		out, _, ok := r.Supersede(again)
		if !ok || len(out.Superseded) != 0 || out.Current.Final {
			t.Fatalf("re-run after the window: %+v %v", out, ok)
		}
	})
	t.Run("a finished request is replaced, not superseded", func(t *testing.T) {
		r, _, _ := Record{}.Supersede(req("a"))
		r.Current.Final, r.Current.Posted = true, api.StateSuccess
		out, _, ok := r.Supersede(req("b"))
		if !ok || len(out.Superseded) != 0 || out.Current.SHA != "b" {
			t.Fatalf("got %+v %v", out, ok)
		}
	})
	t.Run("superseded requests are bounded", func(t *testing.T) {
		var r Record
		var dropped []Superseded
		for i := range maxSuperseded + 3 {
			var d []Superseded
			r, d, _ = r.Supersede(req(fmt.Sprint(i)))
			dropped = append(dropped, d...)
		}
		if len(r.Superseded) != maxSuperseded || len(dropped) != 2 || dropped[0].SHA != "0" || dropped[1].SHA != "1" {
			t.Fatalf("kept %d, dropped %+v", len(r.Superseded), dropped)
		}
	})
}

// Every field a push brings, at the largest the intake lets through, every description at
// its largest and escaped at its worst, every list full: the record stays under its cap.
func TestRecordAtItsLargest(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.UTC)
	hex64 := strings.Repeat("f", 64)
	worst := strings.Repeat(`"`, maxStoredDescription*2) // each escaped as two bytes
	ref := "refs/heads/" + strings.Repeat(`"`, 255-len("refs/heads/"))
	repo := strings.Repeat("o", 100) + "/" + strings.Repeat("r", 100)
	delivery := strings.Repeat(`\`, 128)
	trace := "00-" + strings.Repeat("f", 32) + "-" + strings.Repeat("f", 16) + "-01"
	intent := api.Status{State: api.StateFailure, Description: Bounded(worst)}
	patchAt := at
	var rec Record
	for i := range maxSuperseded + maxSeen + 5 {
		req := Request{Token: at.Add(time.Duration(i)).Format(time.RFC3339Nano), Repository: repo, Ref: ref,
			SHA: fmt.Sprintf("%064x", i), Before: hex64, Delivery: delivery, Trace: trace, RequestedAt: at.Add(time.Duration(i)),
			Posted: api.StatePending, Intent: &intent, IntentSince: at, PatchAt: &patchAt, Final: false, Description: Bounded(worst)}
		rec, _, _ = rec.Supersede(req)
	}
	for i := range rec.Superseded {
		in := SupersededIntent
		rec.Superseded[i].Intent, rec.Superseded[i].IntentSince, rec.Superseded[i].Posted = &in, at, api.StatePending
	}
	rec.Current.Lost = true
	// Its canaries at their largest: every one followed, names as long as Kubernetes
	// allows, one status on its way.
	for i := range MaxFollowers {
		f := Follower{Kind: "Canary", Namespace: strings.Repeat("n", 63), Name: fmt.Sprintf("%0253d", i), Since: at,
			Base: strings.Repeat("h", 10) + " WaitingPromotion 1796000000", Shown: "zzzzzzz", Posted: api.StatePending}
		if i == 0 {
			f.Intent, f.IntentSince = &intent, at
		}
		rec.Current.Followers = append(rec.Current.Followers, f)
	}
	rec.PatchedAt = at
	if len(rec.Superseded) != maxSuperseded || len(rec.Seen) != maxSeen {
		t.Fatalf("lists not full: %d superseded, %d seen", len(rec.Superseded), len(rec.Seen))
	}
	if len(rec.Current.Description) != maxStoredDescription || len(rec.Current.Intent.Description) != maxStoredDescription {
		t.Fatalf("descriptions not at their largest: %d", len(rec.Current.Description))
	}
	enc := rec.Encode()
	t.Logf("largest record: %d bytes (cap %d)", len(enc), maxRecordBytes)
	if len(enc) > maxRecordBytes {
		t.Fatalf("record of %d bytes, over the cap of %d", len(enc), maxRecordBytes)
	}
	back, err := Parse(map[string]string{Annotation: enc})
	if err != nil || back.Current.Ref != ref || back.Current.Description != rec.Current.Description {
		t.Fatalf("round trip: %v", err)
	}
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exact", 5, "exact"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},             // not in the middle of é
		{"\xffabcé", 5, "\xffabc"}, // an invalid byte before the cut stays
		{strings.Repeat("é", 3), 5, "éé"},
		{"é", 0, ""},
	} {
		if got := Cut(tc.in, tc.n); got != tc.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestBounded(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"short", "short"},
		{"line\none\ttab\x1b[31m", "line one tab [31m"},
		{strings.Repeat("é", 200), strings.Repeat("é", 126) + "…"},
	} {
		got := Bounded(tc.in)
		if got != tc.want || len(got) > maxStoredDescription {
			t.Errorf("Bounded(%q) = %q (%d bytes), want %q", tc.in, got, len(got), tc.want)
		}
	}
}
