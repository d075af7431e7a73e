package gitops

import (
	"fmt"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	rec := Record{Current: &Request{Token: "t1", Repository: "org/app", Ref: "refs/heads/main", SHA: "abc", Delivery: "d1", RequestedAt: at, Posted: StatePending}}
	got, err := ParseRecord(map[string]string{RecordAnnotation: rec.Encode()})
	if err != nil {
		t.Fatal(err)
	}
	if *got.Current != *rec.Current {
		t.Fatalf("round trip: got %+v, want %+v", got.Current, rec.Current)
	}
	if _, err := ParseRecord(map[string]string{RecordAnnotation: "{"}); err == nil {
		t.Fatal("malformed record parsed")
	}
	if r, err := ParseRecord(nil); err != nil || r.Pending() {
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
	t.Run("a finished request absorbs a repeat within the window", func(t *testing.T) {
		first := req("a")
		first.RequestedAt = time.Now()
		r, _, _ := Record{}.Supersede(first)
		r.Current.Final, r.Current.Posted = true, StateSuccess
		again := req("a")
		again.RequestedAt = first.RequestedAt.Add(repeatWindow - time.Second)
		if _, _, ok := r.Supersede(again); ok {
			t.Fatal("repeat within the window patched again")
		}
		again.RequestedAt = first.RequestedAt.Add(repeatWindow)
		out, _, ok := r.Supersede(again)
		if !ok || len(out.Superseded) != 0 || out.Current.Final {
			t.Fatalf("re-run after the window: %+v %v", out, ok)
		}
	})
	t.Run("a finished request is replaced, not superseded", func(t *testing.T) {
		r, _, _ := Record{}.Supersede(req("a"))
		r.Current.Final, r.Current.Posted = true, StateSuccess
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
