package webhook

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/credentials"
)

// fakeForge answers as Gitea would for one repository, and counts the calls.
type fakeForge struct {
	mu       sync.Mutex
	repo     *Repository
	rename   string // another name Gitea answers repo under (its name before a rename)
	refs     map[string][]string
	commits  map[string]bool
	history  []string // the reference's recent commits, newest first
	artifact *Artifact
	err      error
	calls    int
}

func (f *fakeForge) RecentCommits(_ context.Context, _, _ string, n int) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.history[:min(n, len(f.history))], nil
}

func (f *fakeForge) Repository(_ context.Context, fullName string) (*Repository, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	if f.repo == nil || (!strings.EqualFold(fullName, f.repo.FullName) && (f.rename == "" || !strings.EqualFold(fullName, f.rename))) {
		return nil, ErrNotFound
	}
	return f.repo, nil
}

func (f *fakeForge) RefCommits(_ context.Context, _, ref string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if c, ok := f.refs[ref]; ok {
		return c, nil
	}
	return nil, ErrNotFound
}

func (f *fakeForge) Artifact(_ context.Context, pkg, tag string) (*Artifact, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	if f.artifact == nil || !strings.HasSuffix(f.artifact.URL, "/"+pkg) || tag != "latest" {
		return nil, ErrNotFound
	}
	return f.artifact, nil
}

func (f *fakeForge) CommitExists(_ context.Context, _, sha string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.commits[sha], nil
}

type recordingRequester struct{ pushes []gitops.Push }

func (r *recordingRequester) Accept(_ context.Context, p gitops.Push) (gitops.Result, error) {
	r.pushes = append(r.pushes, p)
	return gitops.Result{Token: "t"}, nil
}

func TestIntake(t *testing.T) {
	head, old, forged, ancient := strings.Repeat("a", 40), strings.Repeat("b", 40), strings.Repeat("c", 40), strings.Repeat("e", 40)
	urls := []string{"http://gitea.example/Acme/App.git", "git@gitea.example:Acme/App.git", "http://gitea.example/Acme/App"}
	push := func(mod func(*gitops.Push)) gitops.Push {
		p := gitops.Push{Delivery: "d", Repository: "acme/app", URLs: urls, Ref: "refs/heads/main", SHA: head}
		if mod != nil {
			mod(&p)
		}
		return p
	}
	repoScope, _ := credentials.RepositoryScope("acme/app")
	otherScope, _ := credentials.RepositoryScope("acme/other")
	scoped := credentials.Principal{Kind: credentials.Scoped, Scope: repoScope}
	webhookSig := credentials.Principal{Kind: credentials.Webhook}
	tests := []struct {
		name      string
		principal credentials.Principal
		push      gitops.Push
		forgeErr  error
		want      error
		ignored   string
		requested bool
		stale     bool
	}{
		{"the reference is at the commit", scoped, push(nil), nil, nil, "", true, false},
		{"the webhook speaks for any repository", webhookSig, push(nil), nil, nil, "", true, false},
		{"a token of another repository", credentials.Principal{Kind: credentials.Scoped, Scope: otherScope}, push(nil), nil, credentials.ErrForbidden, "", false, false},
		{"full_name and URLs disagree", webhookSig, push(func(p *gitops.Push) { p.Repository = "acme/other" }), nil, ErrBadPayload, "", false, false},
		{"a URL of another repository", scoped, push(func(p *gitops.Push) { p.URLs = append(p.URLs, "http://gitea.example/acme/other") }), nil, ErrBadPayload, "", false, false},
		{"a URL on another host", scoped, push(func(p *gitops.Push) { p.URLs = []string{"http://evil.example/acme/app"} }), nil, ErrContradicted, "", false, false},
		{"no such repository", webhookSig, push(func(p *gitops.Push) {
			p.Repository, p.URLs = "acme/gone", []string{"http://gitea.example/acme/gone"}
		}), nil, ErrContradicted, "", false, false},
		{"a commit the repository does not have", scoped, push(func(p *gitops.Push) { p.SHA = forged }), nil, ErrContradicted, "", false, false},
		{"a commit the reference has moved on from", scoped, push(func(p *gitops.Push) { p.SHA = old }), nil, nil, "", true, true},
		{"a commit older than the reference's recent history", scoped, push(func(p *gitops.Push) { p.SHA = ancient }), nil, ErrContradicted, "", false, false},
		{"a reference that is gone", scoped, push(func(p *gitops.Push) { p.Ref = "refs/heads/deleted" }), nil, nil, "no longer exists", false, false},
		{"a reference that never held a real commit", scoped, push(func(p *gitops.Push) { p.Ref, p.SHA = "refs/heads/deleted", forged }), nil, ErrContradicted, "", false, false},
		{"an annotated tag's object", scoped, push(func(p *gitops.Push) { p.Ref, p.SHA = "refs/tags/v1", "d"+head[1:] }), nil, nil, "", true, false},
		{"an annotated tag's commit", scoped, push(func(p *gitops.Push) { p.Ref = "refs/tags/v1" }), nil, nil, "", true, false},
		{"gitea unreachable", scoped, push(nil), errors.New("dial tcp: connection refused"), ErrForgeUnavailable, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forge := &fakeForge{
				repo:    &Repository{FullName: "Acme/App", URLs: urls},
				refs:    map[string][]string{"refs/heads/main": {head}, "refs/tags/v1": {"d" + head[1:], head}},
				commits: map[string]bool{head: true, old: true, ancient: true},
				history: append(append([]string{head, old}, slices.Repeat([]string{strings.Repeat("9", 40)}, staleDepth)...), ancient),
				err:     tt.forgeErr,
			}
			req := &recordingRequester{}
			in := &Intake{Forge: forge, Requester: req}
			acc, err := in.Accept(t.Context(), tt.principal, tt.push)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Accept = %v, want %v", err, tt.want)
			}
			if !strings.Contains(acc.Ignored, tt.ignored) || (tt.ignored == "") != (acc.Ignored == "") {
				t.Fatalf("ignored %q, want %q", acc.Ignored, tt.ignored)
			}
			if (len(req.pushes) == 1) != tt.requested || len(req.pushes) > 1 {
				t.Fatalf("requested %d times", len(req.pushes))
			}
			if tt.requested && (req.pushes[0].Repository != "Acme/App" || len(req.pushes[0].URLs) != 3) {
				t.Fatalf("requested %+v: want Gitea's spelling and URLs", req.pushes[0])
			}
			if tt.requested && (req.pushes[0].Head == head) != tt.stale {
				t.Fatalf("requested %+v: stale %v", req.pushes[0], tt.stale)
			}
		})
	}
}

// Gitea is asked once per repository and per verified push within their windows: the
// repeats of a push (the Actions step and the native webhook, retries) cost no call.
func TestIntakeCachesGiteasAnswers(t *testing.T) {
	head := strings.Repeat("a", 40)
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	forge := &fakeForge{repo: &Repository{FullName: "acme/app", URLs: []string{"http://gitea.example/acme/app"}},
		refs: map[string][]string{"refs/heads/main": {head}}, commits: map[string]bool{head: true}}
	in := &Intake{Forge: forge, Requester: &recordingRequester{}, Now: func() time.Time { return now }}
	p := gitops.Push{Repository: "acme/app", URLs: forge.repo.URLs, Ref: "refs/heads/main", SHA: head}
	for range 5 {
		if _, err := in.Accept(t.Context(), credentials.Principal{Kind: credentials.Webhook}, p); err != nil {
			t.Fatal(err)
		}
	}
	if forge.calls != 2 {
		t.Fatalf("%d calls to Gitea for 5 deliveries of one push, want 2", forge.calls)
	}
	now = now.Add(verifiedTTL)
	if _, err := in.Accept(t.Context(), credentials.Principal{Kind: credentials.Webhook}, p); err != nil {
		t.Fatal(err)
	}
	if forge.calls != 4 {
		t.Fatalf("%d calls after the windows, want 4", forge.calls)
	}
}

// Whether a push is public is the forge's answer alone: what the sender claims is reset,
// and without the forge nothing is public (registered clusters then follow their grants).
func TestIntakePublic(t *testing.T) {
	head := strings.Repeat("a", 40)
	urls := []string{"http://gitea.example/acme/app"}
	for _, tt := range []struct {
		name   string
		forge  bool
		public bool
	}{
		{"gitea says public", true, true},
		{"gitea says private or internal", true, false},
		{"no forge asked", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := &recordingRequester{}
			in := &Intake{Requester: req}
			if tt.forge {
				in.Forge = &fakeForge{repo: &Repository{FullName: "acme/app", URLs: urls, Public: tt.public},
					refs: map[string][]string{"refs/heads/main": {head}}, commits: map[string]bool{head: true}}
			}
			claimed := gitops.Push{Repository: "acme/app", URLs: urls, Ref: "refs/heads/main", SHA: head, Public: true}
			if _, err := in.Accept(t.Context(), credentials.Principal{Kind: credentials.Webhook}, claimed); err != nil {
				t.Fatal(err)
			}
			if len(req.pushes) != 1 || req.pushes[0].Public != tt.public {
				t.Fatalf("requested %+v, want public %v", req.pushes, tt.public)
			}
		})
	}
}
