package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The README's promises that code can check: the workflows it shows are the ones the
// end-to-end tests run, the first of them the short form, its two commands exist, and CI runs
// its test command.
func TestReadme(t *testing.T) {
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readme := read("../../README.md")
	for _, f := range []string{"notify-flux.yaml", "notify-flux-event.yaml", "deploy-and-wait.yaml"} {
		workflow := read("../../examples/.gitea/workflows/" + f)
		if !strings.Contains(readme, "```yaml\n"+workflow+"```") {
			t.Errorf("README.md does not show examples/.gitea/workflows/%s verbatim", f)
		}
	}
	if first, _, _ := strings.Cut(readme[strings.Index(readme, "```yaml\n"):], "```\n"); !strings.Contains(first, "name: notify-flux\n") {
		t.Error("README.md's first workflow is not notify-flux.yaml, the short form")
	}
	firstScreen := strings.Join(strings.SplitN(readme, "\n", 25)[:24], "\n")
	for _, cmd := range []string{"make demo", "make test"} {
		if !strings.Contains(firstScreen, cmd) {
			t.Errorf("README's first screen lacks %q", cmd)
		}
	}
	makefile := read("../../Makefile")
	for _, target := range []string{"\ndemo:", "\ntest:"} {
		if !strings.Contains(makefile, target) {
			t.Errorf("Makefile has no %s target", strings.TrimSpace(target))
		}
	}
	ci := read("../../.ci/run")
	for _, target := range []string{"make test", "make demo"} {
		// as a line of its own, or timed by .ci/run's step
		if !strings.Contains(ci, "\n"+target+"\n") && !strings.Contains(ci, "\nstep "+target+"\n") {
			t.Errorf(".ci/run does not run %s", target)
		}
	}
	// make demo builds only the parts it names, each a component hack/testbin.sh knows.
	parts := regexp.MustCompile(`(?m)^DEMO_PARTS := (.+)$`).FindStringSubmatch(makefile)
	if parts == nil || !strings.Contains(makefile, "hack/testbin.sh $(DEMO_PARTS)") {
		t.Fatal("the Makefile's demo target does not build $(DEMO_PARTS)")
	}
	testbin := read("../../hack/testbin.sh")
	for _, p := range strings.Fields(parts[1]) {
		if !regexp.MustCompile(`(?m)^build_` + regexp.QuoteMeta(p) + `\(\)`).MatchString(testbin) {
			t.Errorf("DEMO_PARTS names %s, no component of hack/testbin.sh", p)
		}
	}
}

// The README's diagram of a push's path names packages that exist, each in the table of
// "Layout and dependencies", and the path's every step.
func TestReadmeDiagram(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	_, rest, ok := strings.Cut(readme, "## Layout and dependencies\n")
	if !ok {
		t.Fatal("README has no Layout and dependencies section")
	}
	_, diagram, ok := strings.Cut(rest, "```mermaid\n")
	diagram, _, closed := strings.Cut(diagram, "```")
	if !ok || !closed {
		t.Fatal("Layout and dependencies has no mermaid diagram")
	}
	packages := regexp.MustCompile(`\b(?:gitops/[a-z]+|webhook/gitea|webhook|server)\b`).FindAllString(diagram, -1)
	for _, p := range packages {
		if fi, err := os.Stat("../../" + p); err != nil || !fi.IsDir() {
			t.Errorf("the diagram names %s, which is no package", p)
		}
		if !strings.Contains(rest, "| `"+p+"` |") {
			t.Errorf("the diagram names %s, which the package table lacks", p)
		}
	}
	for _, step := range []string{"Gitea", "POST /hook", "server", "webhook/gitea", "webhook<br/>", "gitops/request",
		"gitops/cluster", "Flux controllers", "gitops/report", "gitops/observe"} {
		if !strings.Contains(diagram, step) {
			t.Errorf("the diagram lacks %q", step)
		}
	}
}
