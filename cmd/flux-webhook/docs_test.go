package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/internal/docs"
	"github.com/openova-io/flux-webhook/internal/testenv"
	"github.com/openova-io/flux-webhook/server"
)

// The documents held to the code, as paths from this package's directory.
var docFiles = []string{"../../README.md", "../../deploy/README.md", "../../platform/flux-webhook/README.md"}

// A document's text and where it is.
type doc struct {
	path, text string
}

func readDocs(t *testing.T) []doc {
	t.Helper()
	var ds []doc
	for _, p := range docFiles {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, doc{strings.TrimPrefix(p, "../../"), string(b)})
	}
	return ds
}

// helpText is one text of the command tree's help: a command's Short, Long or Example, or
// a flag's usage.
type helpText struct {
	where, text string
	example     bool
}

// helpTexts returns every help text of the binary's command tree.
func helpTexts() []helpText {
	var texts []helpText
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		name := c.CommandPath()
		texts = append(texts, helpText{name + " Short", c.Short, false}, helpText{name + " Long", c.Long, false},
			helpText{name + " Example", c.Example, true})
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			texts = append(texts, helpText{name + " --" + f.Name, f.Usage, false})
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd(io.Discard, io.Discard))
	return texts
}

// allFlags returns every flag of every command, by name (and shorthand).
func allFlags() map[string]bool {
	names := map[string]bool{"help": true}
	for _, c := range newRootCmd(io.Discard, io.Discard).Commands() {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			names[f.Name] = true
		})
	}
	return names
}

// noFlagEnv keeps FLUX_WEBHOOK_<FLAG> variables of the test's environment out of a parse.
func noFlagEnv(t *testing.T) {
	t.Helper()
	for name := range allFlags() {
		env := envName(name)
		if _, ok := os.LookupEnv(env); ok {
			t.Setenv(env, "") // restored after the test
			os.Unsetenv(env)
		}
	}
}

// logicalLines joins a shell text's continued lines ("\" at the end), and numbers each
// logical line by its first physical line.
func logicalLines(text string) (lines []string, at []int) {
	var cur strings.Builder
	start := 0
	for i, l := range strings.Split(text, "\n") {
		if cur.Len() == 0 {
			start = i
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cur.WriteString(l)
		lines, at = append(lines, cur.String()), append(at, start)
		cur.Reset()
	}
	return lines, at
}

// token is a shell word, or an operator (|, ;, &&, (, $(, <(, ), >, ...).
type token struct {
	text string
	op   bool
}

// shellWords splits one logical line as a POSIX shell would into words and operators, up
// to a comment; quotes and backslashes are removed as the shell removes them.
func shellWords(line string) []token {
	var toks []token
	var w strings.Builder
	inWord := false
	emit := func() {
		if inWord {
			toks = append(toks, token{text: w.String()})
			w.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'' || c == '"':
			end := strings.IndexByte(line[i+1:], c)
			if end < 0 {
				end = len(line) - i - 1
			}
			w.WriteString(line[i+1 : i+1+end])
			inWord, i = true, i+1+end
		case c == '\\' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
			inWord = true
		case c == ' ' || c == '\t':
			emit()
		case c == '#' && !inWord:
			emit()
			return toks
		case (c == '$' || c == '<') && i+1 < len(line) && line[i+1] == '(':
			emit()
			toks = append(toks, token{text: line[i : i+2], op: true})
			i++
		case c == '$' && i+1 < len(line) && line[i+1] == '{':
			// ${VAR} and ${{ expression }}: one word.
			end := strings.IndexByte(line[i:], '}')
			if end < 0 {
				end = len(line) - i - 1
			}
			for end+i+1 < len(line) && line[end+i+1] == '}' {
				end++
			}
			w.WriteString(line[i : i+end+1])
			inWord, i = true, i+end
		case strings.IndexByte("|&;()<>", c) >= 0:
			emit()
			op := string(c)
			if i+1 < len(line) && (line[i+1] == c && c != '(' && c != ')') {
				op += string(c)
				i++
			}
			toks = append(toks, token{text: op, op: true})
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	emit()
	return toks
}

// commands returns the flux-webhook command lines in a logical line: the words after each
// flux-webhook that stands where a command does, up to the next operator.
func commands(line string) [][]string {
	toks := shellWords(line)
	var cmds [][]string
	for i, tk := range toks {
		atCommand := i == 0 || toks[i-1].op && slices.Contains([]string{"|", "||", "&&", ";", "(", "$(", "<("}, toks[i-1].text)
		if tk.op || !atCommand || path.Base(tk.text) != "flux-webhook" {
			continue
		}
		args := []string{}
		for _, a := range toks[i+1:] {
			if a.op {
				break
			}
			args = append(args, a.text)
		}
		cmds = append(cmds, args)
	}
	return cmds
}

// mention is a flux-webhook command named in prose or a comment: its subcommand and the
// flags it names, which must exist; the values and the rest are not held to anything.
type mention struct {
	where string
	sub   string
	flags []string
}

var mentionRE = regexp.MustCompile(`flux-webhook\s+([a-z]+)\b([^\n` + "`" + `]*)`)

// mentions finds "flux-webhook <sub> --flag ..." in text; withoutFlags also counts those
// naming no flag (an inline code span is a command; a comment's "flux-webhook asks" is not).
func mentions(where, text string, withoutFlags bool) []mention {
	var ms []mention
	for _, m := range mentionRE.FindAllStringSubmatch(text, -1) {
		var flags []string
		for _, f := range strings.Fields(m[2]) {
			if strings.ContainsAny(f, "()") {
				break
			}
			if f = strings.TrimRight(f, ",;:."); strings.HasPrefix(f, "-") && len(f) > 1 {
				flags = append(flags, strings.SplitN(f, "=", 2)[0])
			}
		}
		if len(flags) > 0 || withoutFlags {
			ms = append(ms, mention{where, m[1], flags})
		}
	}
	return ms
}

// example is a complete command line shown as one to run.
type example struct {
	where string
	args  []string
}

// collect returns the complete examples of a shell text, and the commands its comments
// mention.
func collect(where string, text string, line0 int) (exs []example, ms []mention) {
	lines, at := logicalLines(text)
	for i, l := range lines {
		here := fmt.Sprintf("%s:%d", where, line0+at[i])
		if trimmed := strings.TrimSpace(l); strings.HasPrefix(trimmed, "#") {
			ms = append(ms, mentions(here, trimmed, false)...)
			continue
		}
		for _, args := range commands(l) {
			exs = append(exs, example{here, args})
		}
	}
	return exs, ms
}

// examplesAndMentions gathers every flux-webhook command of the help texts and the
// documents: complete examples (help Examples, code block lines) and mentions (comments,
// inline code, help prose).
func examplesAndMentions(t *testing.T) (exs []example, ms []mention) {
	for _, h := range helpTexts() {
		if h.example {
			e, m := collect(h.where, h.text, 1)
			exs, ms = append(exs, e...), append(ms, m...)
			continue
		}
		ms = append(ms, mentions(h.where, h.text, false)...)
	}
	for _, d := range readDocs(t) {
		for _, b := range docs.Blocks(d.text) {
			e, m := collect(d.path, b.Text, b.Line)
			exs, ms = append(exs, e...), append(ms, m...)
		}
		for _, s := range docs.Spans(d.text) {
			if strings.HasPrefix(s.Text, "flux-webhook ") {
				ms = append(ms, mentions(fmt.Sprintf("%s:%d", d.path, s.Line), s.Text, true)...)
			}
		}
	}
	return exs, ms
}

// parse runs args through the binary's command tree as far as its usage checks (flags,
// environment, arguments, each command's own checks), without running the command.
func parse(ctx context.Context, args []string) error {
	root := newRootCmd(io.Discard, io.Discard)
	for _, c := range root.Commands() {
		c.RunE = func(*cobra.Command, []string) error { return nil }
	}
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// Every command line the help texts and the READMEs show parses with the binary's real
// flag sets and passes each command's usage checks: a removed or misspelt flag, a bad value,
// or a missing required flag fails. Commands named in prose, comments and inline code name
// existing commands and flags.
func TestHelpAndReadmeExamples(t *testing.T) {
	noFlagEnv(t)
	exs, ms := examplesAndMentions(t)
	t.Logf("%d complete command lines, %d mentions", len(exs), len(ms))
	if len(exs) < 5 || len(ms) < 5 {
		t.Fatalf("found only %d examples and %d mentions: the collector is broken", len(exs), len(ms))
	}
	for _, ex := range exs {
		if err := parse(t.Context(), ex.args); err != nil {
			t.Errorf("%s: flux-webhook %s: %v", ex.where, strings.Join(ex.args, " "), err)
		}
	}
	root := newRootCmd(io.Discard, io.Discard)
	for _, m := range ms {
		c, _, err := root.Find([]string{m.sub})
		if err != nil || c == root {
			t.Errorf("%s: flux-webhook %s: no such command", m.where, m.sub)
			continue
		}
		c.InitDefaultHelpFlag()
		for _, f := range m.flags {
			var found *pflag.Flag
			if name, ok := strings.CutPrefix(f, "--"); ok {
				found = c.Flags().Lookup(name)
			} else if len(f) == 2 {
				found = c.Flags().ShorthandLookup(f[1:])
			}
			if found == nil {
				t.Errorf("%s: flux-webhook %s has no flag %s", m.where, m.sub, f)
			}
		}
	}
}

// The checker itself fails on the defects it is there for.
func TestExampleCheckerFails(t *testing.T) {
	noFlagEnv(t)
	for _, bad := range []string{
		`flux-webhook serve --token-secret flux-system/flux-webhook-token --record-key-secret a/b`, // a removed flag
		`flux-webhook serve --hook-key-secret a/b \
  --gitea-url https://gitea.example.com --gitea-token-secret a/c`, // --record-key-secret missing
		`flux-webhook token --repository acme/app`,              // no hook key
		`flux-webhook reconcile --server https://x.example.com`, // no --token-file
		`flux-webhook reconcile --server https://x --token-file t -o xml`,
		`source <(flux-webhook completion tcsh)`,
		`flux-webhook deploy`,
	} {
		exs, _ := collect("bad", bad, 1)
		if len(exs) != 1 {
			t.Fatalf("%q: %d commands found, want 1", bad, len(exs))
		}
		if err := parse(t.Context(), exs[0].args); err == nil {
			t.Errorf("%q parses", bad)
		}
	}
	if ms := mentions("bad", "  #   flux-webhook token --repositry <owner>/<name>", false); len(ms) != 1 || ms[0].flags[0] != "--repositry" {
		t.Errorf("the misspelt flag of a comment is not found: %+v", ms)
	}
	if ms := mentions("bad", "# flux-webhook asks Gitea where the branch is", false); len(ms) != 0 {
		t.Errorf("prose counted as a command: %+v", ms)
	}
}

// README's flags table (section Interface) documents every flag of serve, once, and only
// those, each with serve's default.
func TestReadmeFlagsTable(t *testing.T) {
	readme := readDocs(t)[0].text
	section, err := docs.Section(readme, "Interface")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := docs.Table(section, "flag", "default")
	if err != nil {
		t.Fatal(err)
	}
	serve := newServeCmd()
	documented := map[string]int{}
	for _, r := range rows {
		names, defaults := codeSpans(r.Cells[0]), codeSpans(r.Cells[1])
		if len(defaults) > 0 && len(defaults) != len(names) {
			t.Errorf("README.md:%d: %d flags, %d defaults", r.Line, len(names), len(defaults))
			continue
		}
		for i, n := range names {
			name, ok := strings.CutPrefix(n, "--")
			f := serve.Flags().Lookup(name)
			if !ok || f == nil {
				t.Errorf("README.md:%d: %s is no flag of serve", r.Line, n)
				continue
			}
			documented[name]++
			var def string
			if len(defaults) > 0 {
				def = defaults[i]
			}
			if msg := checkDefault(f, def); msg != "" {
				t.Errorf("README.md:%d: %s: %s", r.Line, n, msg)
			}
		}
	}
	serve.Flags().VisitAll(func(f *pflag.Flag) {
		switch documented[f.Name] {
		case 1:
		case 0:
			t.Errorf("README.md's flags table (Interface) lacks serve's --%s", f.Name)
		default:
			t.Errorf("README.md's flags table (Interface) has --%s %d times", f.Name, documented[f.Name])
		}
	})
}

// checkDefault compares a flag's default with the README's: a value the flag has must be
// given as is (durations compared as durations); a flag without one may name where its
// value comes from (`$POD_NAMESPACE`, `--namespace`) or nothing.
func checkDefault(f *pflag.Flag, doc string) string {
	if f.DefValue == "" || f.DefValue == "[]" {
		if doc != "" && !strings.HasPrefix(doc, "$") && !strings.HasPrefix(doc, "--") {
			return fmt.Sprintf("default %q documented, the flag has none", doc)
		}
		return ""
	}
	if f.Value.Type() == "duration" {
		want, _ := time.ParseDuration(f.DefValue)
		if got, err := time.ParseDuration(doc); err != nil || got != want {
			return fmt.Sprintf("default %q documented, the flag's is %s", doc, f.DefValue)
		}
		return ""
	}
	if doc != f.DefValue {
		return fmt.Sprintf("default %q documented, the flag's is %q", doc, f.DefValue)
	}
	return ""
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

func codeSpans(s string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// route is one route flux-webhook serves, how the help and the documents write it, and the
// flag of the address it is served on. path is echo's route ("" for controller-runtime's).
type route struct {
	flag, method, path, doc string
}

var routes = []route{
	{"--listen", http.MethodPost, "/hook", "POST /hook"},
	{"--listen", http.MethodPost, "/hook/*", "POST /hook/<owner>/<repo>[/<ref>]"},
	{"--platform-listen", http.MethodPost, "/api/v1/reconcile", "POST /api/v1/reconcile"},
	{"--platform-listen", http.MethodGet, "/api/v1/reconcile/:id", "GET /api/v1/reconcile/<id>"},
	{"--health-listen", http.MethodGet, "", "GET /healthz"},
	{"--health-listen", http.MethodGet, "", "GET /readyz"},
	{"--metrics-listen", http.MethodGet, "", "GET /metrics"},
}

// foreignRoutes are routes the documents name that are not flux-webhook's, and why.
var foreignRoutes = []string{
	"GET /repos/{owner}/{repo}/commits/{sha}/status",  // Gitea's combined-status API, which auditors read
	"/hook/<sha256 of its token, name and namespace>", // Flux notification-controller's Receiver
}

// managerRoutes are served in the binary by controller-runtime's manager, not by the
// server: Go's profiles on --pprof-listen (off by default, so no deployed port).
var managerRoutes = []string{"GET /debug/pprof/"}

type stubPlatform struct{}

func (stubPlatform) Reconcile(context.Context, api.Selector) (*api.JobStatus, error) { return nil, nil }
func (stubPlatform) Status(context.Context, string) (*api.JobStatus, error)          { return nil, nil }

var routeMention = regexp.MustCompile(`\b(GET|POST|PUT|PATCH|DELETE) (/[^\s,;)"'|` + "`" + `]*)|/hook/<[^>]*>`)

// docForms returns the ways a route's doc may be written: as is, and with each optional
// part ("[/<ref>]") left out.
func docForms(doc string) []string {
	i := strings.Index(doc, "[")
	j := strings.Index(doc, "]")
	if i < 0 || j < i {
		return []string{doc}
	}
	return slices.Concat([]string{doc}, docForms(doc[:i]+doc[i+1:j]+doc[j+1:]), docForms(doc[:i]+doc[j+1:]))
}

// The routes the server registers are those of the table above, and serve's help, README's
// flags table and deploy/README.md's ports table name each on its address's flag; every
// route the help texts and the documents name is one of them.
func TestRoutesDocumented(t *testing.T) {
	srv := &server.Server{Platform: stubPlatform{}}
	registered := map[string]bool{}
	for flag, h := range map[string]http.Handler{"--listen": srv.HookHandler(), "--platform-listen": srv.PlatformHandler()} {
		for _, r := range h.(*echo.Echo).Routes() {
			if r.Method == echo.RouteNotFound {
				continue // echo's own: a group's middleware before its 404
			}
			registered[flag+" "+r.Method+" "+r.Path] = true
		}
	}
	for _, r := range routes {
		if r.path == "" {
			continue
		}
		if !registered[r.flag+" "+r.method+" "+r.path] {
			t.Errorf("the server does not register %s %s on %s", r.method, r.path, r.flag)
		}
		delete(registered, r.flag+" "+r.method+" "+r.path)
	}
	for r := range registered {
		t.Errorf("the server registers %s, which the route table of this test (and so the docs) lacks", r)
	}

	serve := newServeCmd()
	readme := readDocs(t)[0].text
	section, err := docs.Section(readme, "Interface")
	if err != nil {
		t.Fatal(err)
	}
	flagsTable, err := docs.Table(section, "flag", "default")
	if err != nil {
		t.Fatal(err)
	}
	deployReadme := readDocs(t)[1].text
	ports, err := docs.Table(deployReadme, "port", "", "flag", "serves")
	if err != nil {
		t.Fatal(err)
	}
	rowOf := func(rows []docs.Row, col int, flag string) *docs.Row {
		for i, r := range rows {
			if slices.Contains(codeSpans(r.Cells[col]), flag) {
				return &rows[i]
			}
		}
		return nil
	}
	for _, r := range routes {
		if !strings.Contains(serve.Long, r.doc) {
			t.Errorf("serve --help does not name %s", r.doc)
		}
		if f := serve.Flags().Lookup(strings.TrimPrefix(r.flag, "--")); f == nil || !strings.Contains(f.Usage, r.doc) {
			t.Errorf("serve's %s help does not name %s", r.flag, r.doc)
		}
		if row := rowOf(flagsTable, 0, r.flag); row == nil || !slices.Contains(codeSpans(row.Cells[2]), r.doc) {
			t.Errorf("README.md's flags table: the row of %s does not name `%s`", r.flag, r.doc)
		}
		row := rowOf(ports, 2, r.flag)
		if row == nil || !slices.Contains(codeSpans(row.Cells[3]), r.doc) {
			t.Errorf("deploy/README.md's ports table: the row of %s does not name `%s`", r.flag, r.doc)
			continue
		}
		// The port given is the flag's default.
		if f := serve.Flags().Lookup(strings.TrimPrefix(r.flag, "--")); f != nil && ":"+row.Cells[1] != f.DefValue {
			t.Errorf("deploy/README.md's ports table: %s on %s, its default is %s", r.flag, row.Cells[1], f.DefValue)
		}
	}

	known := func(m string) bool {
		for _, r := range routes {
			if slices.Contains(docForms(r.doc), m) {
				return true
			}
		}
		// The short form's placeholder, in a path written without its method.
		return slices.Contains(foreignRoutes, m) || slices.Contains(managerRoutes, m) || m == "/hook/<owner>"
	}
	texts := map[string]string{}
	for _, h := range helpTexts() {
		texts[h.where] = h.text
	}
	for _, d := range readDocs(t) {
		texts[d.path] = d.text
	}
	for where, text := range texts {
		for _, m := range routeMention.FindAllString(text, -1) {
			if !known(strings.TrimRight(m, ".:")) {
				t.Errorf("%s names the route %q, which flux-webhook does not serve", where, m)
			}
		}
	}
}

// Every check of /readyz is named in --health-listen's help and README's row of it.
func TestReadyChecksDocumented(t *testing.T) {
	checks := (&service{}).readyChecks()
	if len(checks) == 0 {
		t.Fatal("no readiness checks")
	}
	usage := newServeCmd().Flags().Lookup("health-listen").Usage
	section, err := docs.Section(readDocs(t)[0].text, "Interface")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := docs.Table(section, "flag", "default")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, r := range rows {
		if slices.Contains(codeSpans(r.Cells[0]), "--health-listen") {
			row = r.Cells[2]
		}
	}
	for name := range checks {
		if !regexp.MustCompile(`\b` + name + ` \(`).MatchString(usage) {
			t.Errorf("--health-listen's help does not name the readiness check %s", name)
		}
		if !slices.Contains(codeSpans(row), name) {
			t.Errorf("README.md's row of --health-listen does not name the readiness check `%s`", name)
		}
	}
}

// Flags of other programs the documents show, which are no flags of flux-webhook.
var foreignFlags = []string{
	"--retry", "--retry-connrefused", "--fail-with-body", // curl, in the workflows
	"--kube-version", // helm template
	"--build-arg",    // docker build
}

// Variables named FLUX_WEBHOOK_* that are not flags' (FLUX_WEBHOOK_<FLAG>).
var foreignVariables = []string{
	"FLUX_WEBHOOK_TOKEN", "FLUX_WEBHOOK_URL", // the Actions secret and variable of the workflows
}

var (
	flagMention     = regexp.MustCompile(`(^|[\s(` + "`" + `'"])(--[a-z][a-z0-9-]*\*?)`)
	variableMention = regexp.MustCompile(`\bFLUX_WEBHOOK_[A-Z0-9_]+\b`)
	repoPath        = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.*-]+)+/?$`)
	link            = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	goSymbol        = regexp.MustCompile(`\.[A-Z][A-Za-z0-9]*$`)
)

// What the help texts and the documents name exists: every --flag is a flag of the binary
// (or of the other program shown, listed above), every FLUX_WEBHOOK_* variable a flag's (or
// one listed above, or a variable hack/testbin.sh prints), every path of the repository and
// every relative link a file or directory.
func TestDocMentionsExist(t *testing.T) {
	flags := allFlags()
	flagKnown := func(f string) bool {
		if prefix, ok := strings.CutSuffix(f, "*"); ok {
			for name := range flags {
				if strings.HasPrefix("--"+name, prefix) {
					return true
				}
			}
			return false
		}
		return flags[strings.TrimPrefix(f, "--")] || slices.Contains(foreignFlags, f)
	}
	envOfFlag := map[string]bool{}
	for name := range flags {
		envOfFlag[envName(name)] = true
	}
	assets := map[string]bool{"FLUX_WEBHOOK_CACHE": true, "FLUX_WEBHOOK_BENCH_OBJECTS": true}
	for _, e := range []string{testenv.EnvCRDs, testenv.EnvGitea, testenv.EnvGiteaRunner, testenv.EnvFluxBin, testenv.EnvTools,
		testenv.EnvESO, testenv.EnvKwok, testenv.EnvFlagger} {
		assets[e] = true
	}

	for _, h := range helpTexts() {
		for _, m := range flagMention.FindAllStringSubmatch(h.text, -1) {
			if !flags[strings.TrimPrefix(m[2], "--")] {
				t.Errorf("%s names %s, no flag of flux-webhook", h.where, m[2])
			}
		}
		for _, v := range variableMention.FindAllString(h.text, -1) {
			if !envOfFlag[v] && !slices.Contains(foreignVariables, v) {
				t.Errorf("%s names %s, the variable of no flag", h.where, v)
			}
		}
	}
	for _, d := range readDocs(t) {
		for _, s := range docs.Spans(d.text) {
			where := fmt.Sprintf("%s:%d", d.path, s.Line)
			for _, m := range flagMention.FindAllStringSubmatch(s.Text, -1) {
				// Only a span that is a flag, or a flux-webhook command: other programs'
				// command lines (helm install ..., curl ...) have flags of their own.
				if (strings.HasPrefix(s.Text, "--") || strings.HasPrefix(s.Text, "flux-webhook ")) && !flagKnown(m[2]) {
					t.Errorf("%s: `%s` names %s, no flag of flux-webhook", where, s.Text, m[2])
				}
			}
			if repoPath.MatchString(s.Text) && !pathExists(d.path, s.Text) {
				t.Errorf("%s: `%s`: no such file or directory in the repository", where, s.Text)
			}
		}
		for _, v := range variableMention.FindAllString(d.text, -1) {
			if !envOfFlag[v] && !slices.Contains(foreignVariables, v) && !assets[v] {
				t.Errorf("%s names %s, the variable of no flag", d.path, v)
			}
		}
		for _, m := range link.FindAllStringSubmatch(d.text, -1) {
			target, _, _ := strings.Cut(m[1], "#")
			if target == "" || strings.Contains(target, "://") {
				continue
			}
			if _, err := os.Stat(filepath.Join("../..", filepath.Dir(d.path), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", d.path, m[1])
			}
		}
	}
}

// pathExists reports whether p names a file or directory of the repository, from its root
// or from the document's directory; a path whose first segment is neither is not the
// repository's (an OpenBao key, a namespace/name) and counts as existing.
func pathExists(docPath, p string) bool {
	p = strings.TrimPrefix(p, "./")
	if goSymbol.MatchString(p) {
		return true // a package's identifier, e.g. webhook/gitea.Gitea
	}
	// platform/ holds this repository's Blueprint only; platform/<other> is the Catalyst
	// platform's (openova-io/openova), which the documents cite.
	if strings.HasPrefix(p, "platform/") && !strings.HasPrefix(p, "platform/flux-webhook") {
		return true
	}
	for _, base := range []string{"../..", filepath.Join("../..", filepath.Dir(docPath))} {
		first, _, _ := strings.Cut(p, "/")
		if _, err := os.Stat(filepath.Join(base, first)); err != nil {
			continue
		}
		if matches, _ := filepath.Glob(filepath.Join(base, p)); len(matches) > 0 {
			return true
		}
		return false
	}
	return true
}

// giteaTokenScopes are the scopes of the Gitea token the end-to-end tests give the service
// (e2e_main_test.go): what its help and the documents must ask for, no more, no less.
var giteaTokenScopes = []string{"write:repository", "write:issue", "read:user", "read:package"}

var scope = regexp.MustCompile(`\b(?:read|write):[a-z]+\b`)

// --gitea-token-secret's help and every place the documents list the Gitea token's scopes
// name the scopes the end-to-end tests prove it needs.
func TestGiteaScopesDocumented(t *testing.T) {
	want := slices.Sorted(slices.Values(giteaTokenScopes))
	check := func(where, text string) {
		got := slices.Compact(slices.Sorted(slices.Values(scope.FindAllString(text, -1))))
		if !slices.Equal(got, want) {
			t.Errorf("%s names the Gitea token's scopes %v, want %v", where, got, want)
		}
	}
	check("serve's --gitea-token-secret help", newServeCmd().Flags().Lookup("gitea-token-secret").Usage)
	ds := readDocs(t)
	section, err := docs.Section(ds[0].text, "Interface")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := docs.Table(section, "flag", "default")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, r := range rows {
		if slices.Contains(codeSpans(r.Cells[0]), "--gitea-token-secret") {
			check(fmt.Sprintf("README.md:%d", r.Line), r.Cells[2])
			found++
		}
	}
	// The tables of the keys to store: deploy/README.md's ExternalSecrets, the chart's OpenBao keys.
	for _, d := range ds[1:] {
		for i, line := range strings.Split(d.text, "\n") {
			if strings.Contains(line, "gitea-token") && strings.HasPrefix(strings.TrimSpace(line), "|") {
				check(fmt.Sprintf("%s:%d", d.path, i+1), line)
				found++
			}
		}
	}
	if found != 3 {
		t.Errorf("found %d lists of the Gitea token's scopes, want 3 (README's flags table, deploy/README.md's and the chart README's key tables)", found)
	}
}

var servicePort = regexp.MustCompile("Service's `([a-z]+)` port(?:, (\\d+))?")

// README's platform API section names the Service port that serves it, as deploy/README.md's
// ports table has it.
func TestPlatformAPIPortDocumented(t *testing.T) {
	ds := readDocs(t)
	section, err := docs.Section(ds[0].text, "Platform API and CLI")
	if err != nil {
		t.Fatal(err)
	}
	ms := servicePort.FindAllStringSubmatch(strings.Join(strings.Fields(section), " "), -1)
	if len(ms) != 1 {
		t.Fatalf("README.md's Platform API section names %d Service ports, want 1", len(ms))
	}
	ports, err := docs.Table(ds[1].text, "port", "", "flag", "serves")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ports {
		if slices.Contains(codeSpans(r.Cells[0]), ms[0][1]) {
			if !slices.Contains(codeSpans(r.Cells[2]), "--platform-listen") {
				t.Errorf("README.md: the platform API is on the Service's `%s` port, which serves %s", ms[0][1], r.Cells[2])
			}
			if ms[0][2] != "" && ms[0][2] != r.Cells[1] {
				t.Errorf("README.md: the Service's `%s` port is %s, deploy/README.md says %s", ms[0][1], ms[0][2], r.Cells[1])
			}
			return
		}
	}
	t.Errorf("README.md names the Service's `%s` port, which deploy/README.md's ports table lacks", ms[0][1])
}

var metricName = regexp.MustCompile(`Name:\s+"(flux_webhook_[a-z_]+)"`)

// The README names every metric flux-webhook registers, and no other of its own.
func TestMetricsDocumented(t *testing.T) {
	registered := map[string]bool{}
	err := filepath.WalkDir("../..", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		for _, m := range metricName.FindAllStringSubmatch(string(b), -1) {
			registered[m[1]] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(registered) < 10 {
		t.Fatalf("found %d metrics in the source: the scan is broken", len(registered))
	}
	readme := readDocs(t)[0].text
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bflux_webhook_[a-z_]+`).FindAllString(readme, -1) {
		if !registered[m] && !named[m] {
			t.Errorf("README.md names the metric %s, which flux-webhook does not register", m)
		}
		named[m] = true
	}
	for m := range registered {
		if !named[m] {
			t.Errorf("README.md does not name the metric %s", m)
		}
	}
}
