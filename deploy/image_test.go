package deploy_test

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// No image registry is reachable here, so the image is not built: its build stage is run
// as Docker would run it — on a build context filtered by .dockerignore, with the
// Dockerfile's own ARG, COPY, WORKDIR and RUN steps — and the final stage is checked
// against what the manifests expect of the image.

// instr is one Dockerfile instruction, continuation lines joined.
type instr struct{ cmd, args string }

type stage struct {
	from, name string
	instrs     []instr
}

func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	b, err := os.ReadFile(path("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		if line == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			line += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		line += trimmed
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		in := instr{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %s before FROM", in.cmd)
		}
		stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
	}
	return stages
}

// Build arguments the test passes, as `docker build --build-arg`.
const (
	imageVersion = "v0.0.0-deploy-test"
	imageCommit  = "0123456789abcdef0123456789abcdef01234567"
)

// imageBuild is the binary the Dockerfile's build stage produces, built once.
var imageBuild struct {
	once sync.Once
	bin  string
	log  string
	err  error
}

func imageBinary(t *testing.T) string {
	t.Helper()
	imageBuild.once.Do(func() {
		imageBuild.bin, imageBuild.log, imageBuild.err = buildStage(t, parseDockerfile(t))
	})
	if imageBuild.err != nil {
		t.Fatalf("the Dockerfile's build stage: %v\n%s", imageBuild.err, imageBuild.log)
	}
	return imageBuild.bin
}

// buildStage runs the first stage in a scratch root and returns the path of the file the
// final stage copies out of it.
func buildStage(t *testing.T, stages []stage) (bin, log string, err error) {
	if len(stages) != 2 {
		return "", "", fmt.Errorf("want a build stage and a final stage, got %d stages", len(stages))
	}
	build, final := stages[0], stages[1]
	root := filepath.Join(env.dir, "image-root")
	context := filepath.Join(env.dir, "image-context")
	if err := buildContext(t, context); err != nil {
		return "", "", err
	}
	args := map[string]string{"VERSION": imageVersion, "COMMIT": imageCommit}
	vars := map[string]string{}
	workdir := root
	var logb bytes.Buffer
	for _, in := range build.instrs {
		switch in.cmd {
		case "WORKDIR":
			workdir = filepath.Join(root, in.args)
			if err := os.MkdirAll(workdir, 0o755); err != nil {
				return "", "", err
			}
		case "ARG":
			name, def, _ := strings.Cut(in.args, "=")
			if _, ok := args[name]; !ok {
				args[name] = def
			}
			vars[name] = args[name]
		case "COPY":
			f := strings.Fields(in.args)
			dst := filepath.Join(workdir, f[len(f)-1])
			for _, src := range f[:len(f)-1] {
				if err := copyTree(filepath.Join(context, src), dst, strings.HasSuffix(f[len(f)-1], "/") || len(f) > 2 || src == "."); err != nil {
					return "", logb.String(), err
				}
			}
		case "RUN":
			script := in.args
			// BuildKit's cache mounts only speed the build up.
			for strings.HasPrefix(script, "--mount=") {
				_, script, _ = strings.Cut(script, " ")
				script = strings.TrimSpace(script)
			}
			cmd := exec.CommandContext(t.Context(), "sh", "-c", script)
			cmd.Dir = workdir
			cmd.Env = os.Environ()
			for k, v := range vars {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			cmd.Stdout, cmd.Stderr = &logb, &logb
			fmt.Fprintf(&logb, "RUN %s\n", script)
			if err := cmd.Run(); err != nil {
				return "", logb.String(), fmt.Errorf("RUN %s: %w", script, err)
			}
		default:
			return "", logb.String(), fmt.Errorf("the test does not emulate %s in the build stage", in.cmd)
		}
	}
	for _, in := range final.instrs {
		if in.cmd == "COPY" && strings.HasPrefix(in.args, "--from="+build.name+" ") {
			f := strings.Fields(in.args)
			return filepath.Join(root, f[1]), logb.String(), nil
		}
	}
	return "", logb.String(), fmt.Errorf("the final stage copies nothing from stage %q", build.name)
}

// buildContext copies what Docker would send: the work tree's files (tracked, or new and
// not ignored by git) that .dockerignore admits.
func buildContext(t *testing.T, dst string) error {
	ignore, err := os.ReadFile(path(".dockerignore"))
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(t.Context(), "git", "-C", env.root, "ls-files", "--cached", "--others", "--exclude-standard", "-z").Output()
	if err != nil {
		return fmt.Errorf("git ls-files: %w", err)
	}
	m := parseDockerignore(string(ignore))
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if m.excluded(f) {
			continue
		}
		if _, err := os.Stat(path(f)); err != nil {
			continue // deleted in the work tree
		}
		if err := copyTree(path(f), filepath.Join(dst, f), false); err != nil {
			return err
		}
	}
	return nil
}

// dockerignore is .dockerignore's matching: patterns in order, the last that matches a path
// or one of its parent directories decides, "!" re-admits; "**" spans directories.
type dockerignore []struct {
	re      *regexp.Regexp
	include bool
}

func parseDockerignore(s string) dockerignore {
	var d dockerignore
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		include := strings.HasPrefix(l, "!")
		l = strings.TrimPrefix(filepath.Clean(strings.TrimPrefix(l, "!")), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(l); i++ {
			switch {
			case strings.HasPrefix(l[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(l[i:], "**"):
				re.WriteString(".*")
				i++
			case l[i] == '*':
				re.WriteString("[^/]*")
			case l[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(l[i : i+1]))
			}
		}
		re.WriteString("$")
		d = append(d, struct {
			re      *regexp.Regexp
			include bool
		}{regexp.MustCompile(re.String()), include})
	}
	return d
}

func (d dockerignore) excluded(p string) bool {
	excluded := false
	for _, pat := range d {
		match := false
		for q := p; q != "." && q != "/" && q != ""; q = filepath.Dir(q) {
			if pat.re.MatchString(q) {
				match = true
				break
			}
		}
		if match {
			excluded = !pat.include
		}
	}
	return excluded
}

// copyTree copies a file or directory src to dst, or into dst when into is set.
func copyTree(src, dst string, into bool) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		if into {
			dst = filepath.Join(dst, filepath.Base(src))
		}
		return copyFile(src, dst, fi.Mode())
	}
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		return copyFile(p, filepath.Join(dst, rel), fi.Mode())
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode.Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// The image's binary, built by the Dockerfile's own build step from the context
// .dockerignore leaves, is static (no ELF interpreter, no dynamic section), built with the
// release flags, version-stamped from the build arguments, and runs `version`.
func TestImageBinary(t *testing.T) {
	integration(t)
	bin := imageBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("not static: program header %s", p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Errorf("not static: section .dynamic")
	}
	if s := f.Section(".symtab"); s != nil {
		t.Errorf("not stripped (-s): section .symtab")
	}

	out, err := exec.CommandContext(t.Context(), "go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	// (-ldflags is not recorded under -trimpath: `version` below shows its -X.) Without
	// grpcnotrace, gRPC's golang.org/x/net/trace makes the binary 19 MB larger.
	for _, want := range []string{"build\t-trimpath=true", "build\tCGO_ENABLED=0", "build\t-tags=grpcnotrace"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("go version -m: no %q in\n%s", want, out)
		}
	}

	out, err = exec.CommandContext(t.Context(), bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", bin, err, out)
	}
	if want := regexp.MustCompile(`^flux-webhook ` + regexp.QuoteMeta(imageVersion) + ` \(commit ` + imageCommit + `, go[0-9.]+\)\n$`); !want.Match(out) {
		t.Errorf("version printed %q, want %s", out, want)
	}
}

// The final stage: distroless static (or scratch), no shell, a numeric non-root user, the
// ports and command the manifests use.
func TestImageFinalStage(t *testing.T) {
	integration(t)
	stages := parseDockerfile(t)
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("final stage FROM %s: want distroless static or scratch (no shell)", final.from)
	}
	var user, entrypoint, command, copied string
	var exposed []int
	for _, in := range final.instrs {
		switch in.cmd {
		case "USER":
			user = in.args
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					t.Fatalf("EXPOSE %s", p)
				}
				exposed = append(exposed, n)
			}
		case "ENTRYPOINT":
			entrypoint = in.args
		case "CMD":
			command = in.args
		case "COPY":
			f := strings.Fields(in.args)
			copied = f[len(f)-1]
		case "RUN":
			t.Errorf("final stage RUN %s: it has no shell", in.args)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root UID (runAsNonRoot verifies only numbers)", user)
	}
	if entrypoint != fmt.Sprintf(`["%s"]`, copied) || command != `["serve"]` {
		t.Errorf("ENTRYPOINT %s CMD %s, binary at %s", entrypoint, command, copied)
	}

	// The Deployment's container ports and command are the image's.
	d := find(t, decode(t, kustomize(t, "deploy/base")), "Deployment", "flux-webhook")
	containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	c := containers[0].(map[string]any)
	var ports []int
	for _, p := range c["ports"].([]any) {
		n, _, _ := unstructured.NestedFieldNoCopy(p.(map[string]any), "containerPort")
		ports = append(ports, int(n.(float64)))
	}
	slices.Sort(ports)
	slices.Sort(exposed)
	// The contract's ports: http (--listen), health, metrics, platform (--platform-listen).
	if !slices.Equal(ports, exposed) || !slices.Equal(ports, []int{8080, 8081, 8082, 8083}) {
		t.Errorf("EXPOSE %v, Deployment ports %v, flag defaults [8080 8081 8082 8083]", exposed, ports)
	}
	if args, _ := c["args"].([]any); len(args) != 1 || args[0] != "serve" {
		t.Errorf("Deployment args %v", args)
	}

	// The guide's §14 endpoints, in the base and the chart: liveness on /healthz and
	// readiness on /readyz of the port health, /metrics on the port metrics (the binary serves
	// each there: TestShutdownFitsGracePeriod).
	for name, objs := range map[string][]*unstructured.Unstructured{
		"deploy/base": decode(t, kustomize(t, "deploy/base")), "the chart": decode(t, helmTemplate(t, catalystNS)),
	} {
		d := find(t, objs, "Deployment", "flux-webhook")
		containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		c := containers[0].(map[string]any)
		for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
			got, _, _ := unstructured.NestedString(c, probe, "httpGet", "path")
			port, _, _ := unstructured.NestedFieldNoCopy(c, probe, "httpGet", "port")
			if got != path || port != "health" {
				t.Errorf("%s: %s is %s on port %v, want %s on port health", name, probe, got, port, path)
			}
		}
		named := map[string]float64{}
		for _, p := range c["ports"].([]any) {
			p := p.(map[string]any)
			named[fmt.Sprint(p["name"])], _ = p["containerPort"].(float64)
		}
		if named["health"] != 8081 || named["metrics"] != 8082 {
			t.Errorf("%s: ports %v, want health 8081 and metrics 8082 (--health-listen, --metrics-listen)", name, named)
		}
	}
}

// The build context holds what `make build` needs and no tests, test data or VCS state.
func TestDockerignore(t *testing.T) {
	m := parseDockerignore(mustRead(t, ".dockerignore"))
	for p, want := range map[string]bool{
		"Makefile": false, "go.mod": false, "cmd/flux-webhook/main.go": false, "internal/version/version.go": false,
		".git/config": true, "bin/flux-webhook": true, "deploy/base/rbac.yaml": true, "README.md": true,
		"gitops/flux/match_test.go": true, "api/api.go": false, "gitops/request/request.go": false, "cmd/flux-webhook/testdata/help.golden": true,
	} {
		if got := m.excluded(p); got != want {
			t.Errorf("%s excluded: %v, want %v", p, got, want)
		}
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(path(p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
