package main

import (
	"strings"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"

	"github.com/openova-io/flux-webhook/internal/testenv"
)

// A pull request merged into main, in each of Gitea's merge styles, hears where its change
// went: the push its merge made is applied by Flux, the statuses are on the commit main
// points at (the merge commit, the rebased head, the squashed commit; main moved on since the
// branch was made, so none of them is the pull request's head), and the pull request gets
// the summary of that push, in one comment.
func TestMergedPullRequestHearsWhereItWent(t *testing.T) {
	integration(t)
	for _, style := range []gitea.MergeStyle{gitea.MergeStyleMerge, gitea.MergeStyleRebase, gitea.MergeStyleSquash} {
		t.Run(string(style), func(t *testing.T) {
			ctx := t.Context()
			a := newApp(t, "merged-"+string(style)+"-"+randomSuffix(), "main")
			if _, err := a.repo.AddHook(ctx, testenv.Hook{URL: e2e.hookURL + "/hook", Secret: e2e.webhookKey}); err != nil {
				t.Fatal(err)
			}
			// A feature branch two commits ahead of main (nothing in Flux follows it), and
			// its pull request.
			if err := a.repo.Branch(ctx, "feature"); err != nil {
				t.Fatal(err)
			}
			a.branch = "feature"
			a.commit(t, "README.md", "the change of "+string(style)+"\n", "docs")
			head := a.commit(t, "deploy/configmap.yaml", configMap(a.name, "merged-by-"+string(style)), "the change")
			// Meanwhile main moves on, and Flux applies it.
			if err := a.repo.Checkout(ctx, "main"); err != nil {
				t.Fatal(err)
			}
			a.branch = "main"
			before := a.commit(t, "NOTES.md", "main moved on\n", "notes")
			a.waitFinal(t, before, "Kustomization", "success")
			pr, err := a.repo.CreatePullRequest(ctx, "feature", "main", "Change by "+string(style))
			if err != nil {
				t.Fatal(err)
			}
			if err := a.repo.MergePullRequest(ctx, pr.Index, style); err != nil {
				t.Fatal(err)
			}
			merged, err := a.repo.BranchHead(ctx, "main")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: pull request #%d (head %s) merged as %s", style, pr.Index, head[:12], merged[:12])
			if merged == head || merged == before {
				t.Fatalf("%s: main points at %s (head %s, main before %s)", style, merged[:12], head[:12], before[:12])
			}
			a.waitFinal(t, merged, "GitRepository", "success")
			if ks := a.waitFinal(t, merged, "Kustomization", "success"); ks.Description != "applied main@sha1:"+merged[:12] {
				t.Fatalf("Kustomization: %q", ks.Description)
			}
			if v := configMapValue(t, a.name); v != "merged-by-"+string(style) {
				t.Fatalf("ConfigMap value %q", v)
			}
			// The branch's head was never what main pointed at: no Flux status on it.
			if got, _ := a.states(t, head, a.context("Kustomization")); len(got) > 0 {
				t.Fatalf("the pull request's head %s has Kustomization statuses %v", head[:12], got)
			}
			var comments []*gitea.Comment
			waitFor(t, 30*time.Second, "the merged pull request's summary", func() bool {
				comments, err = a.repo.IssueComments(ctx, pr.Index)
				return err == nil && len(comments) > 0 && strings.Contains(comments[len(comments)-1].Body, merged)
			})
			time.Sleep(time.Second) // a second comment would come now
			comments, _ = a.repo.IssueComments(ctx, pr.Index)
			if len(comments) != 1 || !strings.Contains(comments[0].Body, merged) ||
				!strings.Contains(comments[0].Body, "kustomization/"+fluxNS+"/"+a.name) {
				var bodies []string
				for _, c := range comments {
					bodies = append(bodies, c.Body)
				}
				t.Fatalf("want one summary naming %s and the Kustomization, got %d: %q", merged[:12], len(comments), bodies)
			}
		})
	}
}
