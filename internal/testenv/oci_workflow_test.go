package testenv

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"code.gitea.io/sdk/gitea"
)

// TestOCIWorkflow publishes a Helm chart from a Gitea Actions workflow (host mode) with
// the real helm CLI into the organisation's registry, as a CI building Blueprints would,
// and has the workflow post what it pushed. It records which token may push: the job's
// own token, or a personal access token kept as an Actions secret.
func TestOCIWorkflow(t *testing.T) {
	real(t)
	ctx := t.Context()
	begin := time.Now()
	tools, err := Paths().RequireTools()
	if err != nil {
		t.Fatal(err)
	}
	g := NewGitea(t)
	NewRunner(t, g)

	const org = "platform"
	if err := g.CreateOrg(ctx, org, gitea.VisibleTypePrivate); err != nil {
		t.Fatal(err)
	}
	repo, err := g.CreateOrgRepo(ctx, org, "blueprints")
	if err != nil {
		t.Fatal(err)
	}
	hooks, srv := newDeliveries(t)
	if _, err := g.AddOrgHook(ctx, org, Hook{URL: srv.URL + "/org", Secret: captureSecret, Events: []string{"package"}}); err != nil {
		t.Fatal(err)
	}
	pat, err := g.CreateToken(ctx, "registry-push", "write:package")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.SetActionSecret(ctx, "REGISTRY_TOKEN", pat); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"chart/Chart.yaml":  "apiVersion: v2\nname: blueprint\nversion: 0.2.0\ndescription: a blueprint\nsources:\n  - " + repo.CloneURL + "\n",
		"chart/values.yaml": "value: hello\n",
		"chart/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-blueprint\n" +
			"data:\n  value: {{ .Values.value | quote }}\n",
		// No checkout action in host mode (it would come from the internet): the job clones
		// with its own token. helm push copies Chart.yaml's annotations onto the manifest, so
		// the job records the commit there.
		".gitea/workflows/publish.yml": `name: publish
on: [push]
jobs:
  publish:
    runs-on: linux
    steps:
      - run: |
          set -eu
          HELM=` + filepath.Join(tools, "helm") + `
          REG=` + g.Registry() + `
          export HELM_CONFIG_HOME="$PWD/.helm/config" HELM_CACHE_HOME="$PWD/.helm/cache" HELM_DATA_HOME="$PWD/.helm/data"
          rm -rf src && git clone -q "http://x:${{ github.token }}@${REG}/${{ github.repository }}.git" src
          cd src/chart
          printf 'annotations:\n  org.opencontainers.image.revision: "%s@sha1:%s"\n' "${{ github.ref_name }}" "${{ github.sha }}" >> Chart.yaml
          "$HELM" package . >/dev/null
          # The job's own token.
          if "$HELM" push blueprint-0.2.0.tgz "oci://${REG}/${{ github.repository_owner }}" --plain-http \
              --username "${{ github.actor }}" --password "${{ github.token }}" > job-token.out 2>&1; then
            job=ok
          else
            job=failed
          fi
          # A personal access token (write:package) kept as an Actions secret.
          "$HELM" push blueprint-0.2.0.tgz "oci://${REG}/${{ github.repository_owner }}" --plain-http \
              --username ` + g.AdminUser + ` --password "${{ secrets.REGISTRY_TOKEN }}" > pat.out 2>&1
          digest=$(sed -n 's/^Digest: //p' pat.out)
          jq -n --arg job "$job" --arg jobout "$(cat job-token.out)" --arg digest "$digest" --arg out "$(cat pat.out)" \
            --arg repo "${{ github.repository }}" --arg sha "${{ github.sha }}" --arg ref "${{ github.ref }}" \
            '{repository: $repo, sha: $sha, ref: $ref, artifact: "oci://` + g.Registry() + `/${{ github.repository_owner }}/blueprint:0.2.0",
              digest: $digest, jobTokenPush: $job, jobTokenOutput: $jobout, patOutput: $out}' |
            curl -fsS -H 'Content-Type: application/json' --data-binary @- ` + srv.URL + `/from-workflow
`,
	}
	for p, content := range files {
		if err := repo.WriteFile(p, content); err != nil {
			t.Fatal(err)
		}
	}
	sha, err := repo.Commit(ctx, "blueprint 0.2.0")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := repo.Push(ctx); err != nil {
		t.Fatal(err)
	}
	// helm push (oras-go) puts the manifest twice, by digest then by tag: Gitea records
	// two versions of the package, "sha256:<digest>" and the tag, and sends an event for each.
	ds := nextDeliveries(t, hooks, 3, 2*time.Minute)
	var (
		post struct {
			Repository, SHA, Ref, Artifact, Digest, JobTokenPush, JobTokenOutput, PATOutput string
		}
		versions []string
	)
	for _, d := range ds {
		t.Logf("%s %s after the git push", d.path, d.at.Sub(t0).Round(time.Millisecond))
		switch d.path {
		case "/org":
			var ev packageEvent
			if err := json.Unmarshal(d.body, &ev); err != nil || ev.Package == nil {
				t.Fatalf("package event: %v: %s", err, d.body)
			}
			checkPackageEvent(t, d, org, "blueprint", ev.Package.Version, "")
			versions = append(versions, ev.Package.Version)
		case "/from-workflow":
			if err := json.Unmarshal(d.body, &post); err != nil {
				t.Fatalf("workflow post: %v: %s", err, d.body)
			}
		default:
			t.Errorf("unexpected delivery to %s", d.path)
		}
	}
	t.Logf("workflow posted: %+v", post)
	if post.SHA != sha || post.Repository != repo.FullName || !strings.HasPrefix(post.Digest, "sha256:") {
		t.Fatalf("workflow post %+v; want %s at %s and a digest", post, repo.FullName, sha)
	}
	slices.Sort(versions)
	if want := []string{"0.2.0", post.Digest}; !slices.Equal(versions, want) {
		t.Errorf("package events for versions %v, want %v", versions, want)
	}
	if post.JobTokenPush != "failed" {
		t.Logf("the job's token pushed too: %s", post.JobTokenOutput)
	}
	if code, body, err := g.API(ctx, "GET", "/packages/"+org+"/container/blueprint", nil); err == nil {
		t.Logf("GET /api/v1/packages/%s/container/blueprint (versions): %d %s", org, code, compactJSON(body))
	}
	d, ann, err := g.ManifestAnnotations(ctx, org+"/blueprint:0.2.0", "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm push wrote manifest %s with annotations %v", d, ann)
	if d != post.Digest || ann[AnnotationRevision] != GitRevision("main", sha) || ann[AnnotationSource] != repo.CloneURL {
		t.Errorf("manifest %s annotations %v; want %s with the revision and source", d, ann, post.Digest)
	}
	t.Logf("TestOCIWorkflow took %s", time.Since(begin).Round(time.Millisecond))
}
