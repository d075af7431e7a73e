package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"sigs.k8s.io/yaml"

	"github.com/openova-io/flux-webhook/api"
	"github.com/openova-io/flux-webhook/api/client"
	"github.com/openova-io/flux-webhook/internal/version"
)

// errFailed: the command ran, and some target did not succeed (exit status 1, no extra
// error line: the summary said it).
var errFailed = errors.New("not every target succeeded")

const (
	// pollInterval is how often reconcile --wait asks for the job's progress.
	pollInterval = time.Second
	// requestedPoll is how often reconcile asks whether the leader requested the job yet.
	requestedPoll = 200 * time.Millisecond
)

type reconcileOptions struct {
	Server     string
	TokenFile  string
	Region     string
	Clusters   []string
	Namespaces []string
	Kinds      []string
	Selector   string
	WithSource bool
	All        bool
	Wait       bool
	Timeout    time.Duration
	Output     string
	AllowHTTP  bool
}

func (o *reconcileOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Server, "server", "", "flux-webhook's URL, e.g. https://flux-webhook.fra1.example.eu (required)")
	fs.StringVar(&o.TokenFile, "token-file", "", "file holding the platform token (required)")
	fs.StringVar(&o.Region, "region", "", "reconcile the clusters of this region")
	fs.StringSliceVar(&o.Clusters, "cluster", nil, "reconcile these clusters (repeat or comma-separate)")
	fs.StringSliceVarP(&o.Namespaces, "namespace", "n", nil, "only objects in these namespaces")
	fs.StringSliceVar(&o.Kinds, "kind", nil, "only these kinds: GitRepository, OCIRepository, HelmChart, Kustomization, HelmRelease (default Kustomization and HelmRelease)")
	fs.StringVarP(&o.Selector, "selector", "l", "", "only objects with these labels, e.g. tier=platform")
	fs.BoolVar(&o.WithSource, "with-source", true, "also reconcile, first, the GitRepositories and HelmCharts they build from")
	fs.BoolVar(&o.All, "all", false, "allow a selector that narrows nothing: every Flux object of every cluster")
	fs.BoolVar(&o.Wait, "wait", false, "wait for Flux's answers, print each, exit 0 only if all succeeded")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long to wait for the leader to request the job, and with --wait, for Flux's answer")
	fs.StringVarP(&o.Output, "output", "o", "text", "text, json or yaml (json, yaml: the job's final state as one document)")
	fs.BoolVar(&o.AllowHTTP, "allow-http", false, "allow an http:// --server that is not on this machine (the token then crosses the network in clear)")
}

func newReconcileCmd() *cobra.Command {
	o := &reconcileOptions{}
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Ask many clusters' Flux to reconcile now (platform API)",
		Long: `reconcile asks flux-webhook's platform API to reconcile the Flux objects a selector chooses
across its clusters, sources first, and with --wait follows Flux's answers: one line per
object as it finishes, then a summary; its exit status is then 0 only if every object
succeeded and every selected cluster was reached. Without --wait it prints the job's targets
once the leader has requested it (for at most --timeout) and exits 0. A selector that narrows
nothing is refused unless --all is given.`,
		Example: `  flux-webhook reconcile --server https://flux-webhook.fra1.example.eu --token-file ~/.flux-webhook-token \
    --region eu-central --kind Kustomization --selector tier=platform --wait

  # The same, short, its final state as YAML:
  flux-webhook reconcile --server https://flux-webhook.fra1.example.eu --token-file ~/.flux-webhook-token \
    --region eu-central -n apps -l tier=platform --wait -o yaml`,
		Args:    noArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.check() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReconcile(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.BindFlags(cmd.Flags())
	cmd.Flags().SortFlags = false
	_ = cmd.RegisterFlagCompletionFunc("output", fixedValues(outputs...))
	_ = cmd.RegisterFlagCompletionFunc("kind", fixedValues("GitRepository", "OCIRepository", "HelmChart", "Kustomization", "HelmRelease"))
	return cmd
}

// check finds every usage error of reconcile's options.
func (o *reconcileOptions) check() error {
	switch {
	case o.Server == "":
		return fmt.Errorf("%w: --server is required", errUsage)
	case o.TokenFile == "":
		return fmt.Errorf("%w: --token-file is required", errUsage)
	case !slices.Contains(outputs, o.Output):
		return fmt.Errorf("%w: --output %q: want text, json or yaml", errUsage, o.Output)
	case o.Timeout <= 0:
		return fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	_, err := o.client("")
	return err
}

// client returns the platform API's client for --server, with token.
func (o *reconcileOptions) client(token string) (*client.Client, error) {
	c, err := client.New(o.Server, token, "flux-webhook/"+version.Version, o.AllowHTTP)
	switch {
	case errors.Is(err, client.ErrInsecureServer):
		return nil, fmt.Errorf("%w: --%v, or --allow-http", errUsage, err)
	case err != nil:
		return nil, fmt.Errorf("%w: --%v", errUsage, err)
	}
	return c, nil
}

func runReconcile(ctx context.Context, o *reconcileOptions, stdout, stderr io.Writer) error {
	if err := o.check(); err != nil {
		return err
	}
	tok, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return fmt.Errorf("read --token-file: %w", err)
	}
	c, err := o.client(strings.TrimSpace(string(tok)))
	if err != nil {
		return err
	}
	withSource := o.WithSource
	st, err := c.Reconcile(ctx, api.Selector{
		Region: o.Region, Clusters: o.Clusters, Namespaces: o.Namespaces, Kinds: o.Kinds,
		LabelSelector: o.Selector, WithSource: &withSource, All: o.All,
	})
	if err != nil {
		return err
	}
	p := &printer{w: stdout, format: o.Output}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !p.structured() {
		p.live = stderr
	}
	// The job is saved at once and requested by the leader moments later: its targets are
	// known then. No leader (or one that cannot reach the API server) leaves it queued.
	if st, err = waitRequested(ctx, c, st, o.Timeout); err != nil {
		return err
	}
	p.accepted(st)
	if o.Wait {
		ctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		start := time.Now()
		for !st.Done {
			p.progress(st, start)
			select {
			case <-ctx.Done():
				p.clearLive()
				p.timedOut(st, o.Timeout)
				return p.summary(st, time.Since(start))
			case <-time.After(pollInterval):
			}
			next, err := c.Job(ctx, st.ID)
			if err != nil {
				if ctx.Err() != nil {
					continue
				}
				return err
			}
			st = next
			p.clearLive()
			p.finished(st, start)
		}
		return p.summary(st, time.Since(start))
	}
	if p.structured() {
		return p.encode(st)
	}
	return nil
}

// errNotRequested: the job stayed queued for --timeout.
var errNotRequested = errors.New("job not requested")

// waitRequested polls the job until the leader requested it, for at most timeout.
func waitRequested(ctx context.Context, c *client.Client, st *api.JobStatus, timeout time.Duration) (*api.JobStatus, error) {
	deadline := time.Now().Add(timeout)
	for !st.Requested {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w in %s: job %s is saved, but no replica of flux-webhook leads to request it (see its logs and the leader election Lease)", errNotRequested, timeout, st.ID)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(requestedPoll):
		}
		next, err := c.Job(ctx, st.ID)
		if err != nil {
			return nil, err
		}
		st = next
	}
	return st, nil
}

// outputs are reconcile's --output formats.
var outputs = []string{"text", "json", "yaml"}

// printer renders a job for people (text) or scripts (json, yaml: the final state only).
type printer struct {
	w      io.Writer
	format string
	live   io.Writer // a terminal for the progress line, or nil
	seen   map[api.Target]bool
}

// structured reports whether the output is one document for scripts.
func (p *printer) structured() bool { return p.format != "text" }

func (p *printer) accepted(st *api.JobStatus) {
	if p.structured() {
		return
	}
	how := "requested"
	if st.Coalesced {
		how = "joined (the same request was already in flight)"
	}
	fmt.Fprintf(p.w, "reconcile job %s %s: %d targets\n", client.Clean(st.ID), how, len(st.Targets))
	for _, t := range st.Targets {
		fmt.Fprintf(p.w, "  %s\n", targetName(t))
	}
	for _, s := range st.Skipped {
		reason := s.Result
		if s.Error != "" {
			reason += ": " + s.Error
		}
		fmt.Fprintf(p.w, "  skipped %s (%s)\n", targetName(s.Target), client.Clean(reason))
	}
	for _, u := range st.Unreachable {
		fmt.Fprintf(p.w, "  unreachable cluster %s: %s\n", client.Clean(u.Cluster), client.Clean(u.Error))
	}
}

// finished prints the targets that finished since the last call, in target order.
func (p *printer) finished(st *api.JobStatus, start time.Time) {
	if p.structured() {
		return
	}
	if p.seen == nil {
		p.seen = map[api.Target]bool{}
	}
	for _, pr := range st.Progress {
		if pr.State == api.StatePending || p.seen[pr.Target] {
			continue
		}
		p.seen[pr.Target] = true
		fmt.Fprintf(p.w, "%s %-7s %s  %s  (%.1fs)\n", mark(pr.State), client.Clean(pr.State), targetName(pr.Target), client.Clean(pr.Description), time.Since(start).Seconds())
	}
}

func (p *printer) progress(st *api.JobStatus, start time.Time) {
	if p.live == nil {
		return
	}
	done := len(st.Progress) - st.Counts[api.StatePending]
	fmt.Fprintf(p.live, "\r\x1b[K… %d/%d done, %d failed, %.0fs", done, len(st.Progress),
		st.Counts[api.StateFailure]+st.Counts[api.StateError], time.Since(start).Seconds())
}

func (p *printer) clearLive() {
	if p.live != nil {
		fmt.Fprint(p.live, "\r\x1b[K")
	}
}

func (p *printer) timedOut(st *api.JobStatus, after time.Duration) {
	for i, pr := range st.Progress {
		if pr.State == api.StatePending {
			st.Progress[i].State, st.Progress[i].Description = api.StateError, "no answer within --timeout "+after.String()
			st.Counts[api.StatePending]--
			st.Counts[api.StateError]++
			if !p.structured() {
				fmt.Fprintf(p.w, "%s %-7s %s  %s\n", mark(api.StateError), api.StateError, targetName(pr.Target), st.Progress[i].Description)
			}
		}
	}
}

// summary prints the end and returns errFailed unless every target succeeded and every
// selected cluster was reached.
func (p *printer) summary(st *api.JobStatus, took time.Duration) error {
	ok := len(st.Unreachable) == 0
	for _, pr := range st.Progress {
		ok = ok && pr.State == api.StateSuccess
	}
	if p.structured() {
		if err := p.encode(st); err != nil {
			return err
		}
	} else {
		verdict := "all succeeded"
		if !ok {
			verdict = "NOT all succeeded"
		}
		fmt.Fprintf(p.w, "summary: %d success, %d failure, %d error, %d skipped, %d unreachable clusters in %.1fs: %s\n",
			st.Counts[api.StateSuccess], st.Counts[api.StateFailure], st.Counts[api.StateError], len(st.Skipped),
			len(st.Unreachable), took.Seconds(), verdict)
	}
	if !ok {
		return errFailed
	}
	return nil
}

// encode writes the job as one JSON or YAML document (YAML from the JSON, so the field
// names are the API's).
func (p *printer) encode(st *api.JobStatus) error {
	if p.format == "yaml" {
		b, err := yaml.Marshal(st)
		if err != nil {
			return err
		}
		_, err = p.w.Write(b)
		return err
	}
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

func targetName(t api.Target) string {
	return client.Clean(fmt.Sprintf("%s %s %s/%s", t.Cluster, t.Kind, t.Namespace, t.Name))
}

func mark(state string) string {
	switch state {
	case api.StateSuccess:
		return "✔"
	case api.StateWarning:
		return "!"
	}
	return "✗"
}
