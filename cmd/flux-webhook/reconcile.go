package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/version"
)

// errFailed: the command ran, and some target did not succeed (exit status 1, no extra
// error line: the summary said it).
var errFailed = errors.New("not every target succeeded")

const (
	// pollInterval is how often reconcile --wait asks for the job's progress.
	pollInterval = time.Second
	// requestTimeout bounds each call to the platform API.
	requestTimeout = 30 * time.Second
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
	fs.StringSliceVar(&o.Namespaces, "namespace", nil, "only objects in these namespaces")
	fs.StringSliceVar(&o.Kinds, "kind", nil, "only these kinds: GitRepository, HelmChart, Kustomization, HelmRelease (default Kustomization and HelmRelease)")
	fs.StringVar(&o.Selector, "selector", "", "only objects with these labels, e.g. tier=platform")
	fs.BoolVar(&o.WithSource, "with-source", true, "also reconcile, first, the GitRepositories and HelmCharts they build from")
	fs.BoolVar(&o.All, "all", false, "allow a selector that narrows nothing: every Flux object of every cluster")
	fs.BoolVar(&o.Wait, "wait", false, "wait for Flux's answers, print each, exit 0 only if all succeeded")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long --wait waits")
	fs.StringVarP(&o.Output, "output", "o", "text", "text, or json (the job's final state as one JSON document)")
	fs.BoolVar(&o.AllowHTTP, "allow-http", false, "allow an http:// --server that is not on this machine (the token then crosses the network in clear)")
}

func newReconcileCmd() *cobra.Command {
	o := &reconcileOptions{}
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Ask many clusters' Flux to reconcile now (platform API)",
		Long: `reconcile asks flux-webhook's platform API to reconcile the Flux objects a selector chooses
across its clusters, sources first, and with --wait follows Flux's answers: one line per
object as it finishes, then a summary. The exit status is 0 only if every object succeeded.
A selector that narrows nothing is refused unless --all is given.`,
		Example: `  flux-webhook reconcile --server https://flux-webhook.fra1.example.eu --token-file ~/.flux-webhook-token \
    --region eu-central --kind Kustomization --selector tier=platform --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runReconcile(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.BindFlags(cmd.Flags())
	cmd.Flags().SortFlags = false
	return cmd
}

// platformClient calls the platform API.
type platformClient struct {
	base  string
	token string
	http  *http.Client
}

func (c *platformClient) do(ctx context.Context, method, path string, body any) (*gitops.JobStatus, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "flux-webhook/"+version.Version)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Never followed: the token would go wherever the server points.
		return nil, fmt.Errorf("%s %s: %d: the server redirects to %q; not followed (give that URL as --server if it is flux-webhook's)",
			method, path, resp.StatusCode, clean(resp.Header.Get("Location")))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			e.Error += " (retry after " + ra + "s)"
		}
		return nil, fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, clean(e.Error))
	}
	var st gitops.JobStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return &st, nil
}

func runReconcile(ctx context.Context, o *reconcileOptions, stdout, stderr io.Writer) error {
	switch {
	case o.Server == "":
		return fmt.Errorf("%w: --server is required", errUsage)
	case o.TokenFile == "":
		return fmt.Errorf("%w: --token-file is required", errUsage)
	case o.Output != "text" && o.Output != "json":
		return fmt.Errorf("%w: --output %q: want text or json", errUsage, o.Output)
	case o.Timeout <= 0:
		return fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	u, err := url.Parse(o.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: --server %q: want http(s)://host[:port]", errUsage, o.Server)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) && !o.AllowHTTP {
		return fmt.Errorf("%w: --server %q: http:// would send the token in clear; use https://, or --allow-http", errUsage, o.Server)
	}
	tok, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return fmt.Errorf("read --token-file: %w", err)
	}
	c := &platformClient{base: strings.TrimSuffix(o.Server, "/"), token: strings.TrimSpace(string(tok)), http: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	withSource := o.WithSource
	st, err := c.do(ctx, http.MethodPost, "/api/v1/reconcile", gitops.Selector{
		Region: o.Region, Clusters: o.Clusters, Namespaces: o.Namespaces, Kinds: o.Kinds,
		LabelSelector: o.Selector, WithSource: &withSource, All: o.All,
	})
	if err != nil {
		return err
	}
	p := &printer{w: stdout, json: o.Output == "json"}
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !p.json {
		p.live = stderr
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
			next, err := c.do(ctx, http.MethodGet, "/api/v1/reconcile/"+st.ID, nil)
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
	if p.json {
		return p.encode(st)
	}
	return nil
}

// printer renders a job for people (text) or scripts (json).
type printer struct {
	w    io.Writer
	json bool
	live io.Writer // a terminal for the progress line, or nil
	seen map[gitops.Target]bool
}

func (p *printer) accepted(st *gitops.JobStatus) {
	if p.json {
		return
	}
	how := "requested"
	if st.Coalesced {
		how = "joined (the same request was already in flight)"
	}
	fmt.Fprintf(p.w, "reconcile job %s %s: %d targets\n", clean(st.ID), how, len(st.Targets))
	for _, t := range st.Targets {
		fmt.Fprintf(p.w, "  %s\n", targetName(t))
	}
	for _, s := range st.Skipped {
		reason := s.Result
		if s.Error != "" {
			reason += ": " + s.Error
		}
		fmt.Fprintf(p.w, "  skipped %s (%s)\n", targetName(s.Target), clean(reason))
	}
	for _, u := range st.Unreachable {
		fmt.Fprintf(p.w, "  unreachable cluster %s: %s\n", clean(u.Cluster), clean(u.Error))
	}
}

// finished prints the targets that finished since the last call, in target order.
func (p *printer) finished(st *gitops.JobStatus, start time.Time) {
	if p.json {
		return
	}
	if p.seen == nil {
		p.seen = map[gitops.Target]bool{}
	}
	for _, pr := range st.Progress {
		if pr.State == gitops.StatePending || p.seen[pr.Target] {
			continue
		}
		p.seen[pr.Target] = true
		fmt.Fprintf(p.w, "%s %-7s %s  %s  (%.1fs)\n", mark(pr.State), clean(pr.State), targetName(pr.Target), clean(pr.Description), time.Since(start).Seconds())
	}
}

func (p *printer) progress(st *gitops.JobStatus, start time.Time) {
	if p.live == nil {
		return
	}
	done := len(st.Progress) - st.Counts[gitops.StatePending]
	fmt.Fprintf(p.live, "\r\x1b[K… %d/%d done, %d failed, %.0fs", done, len(st.Progress),
		st.Counts[gitops.StateFailure]+st.Counts[gitops.StateError], time.Since(start).Seconds())
}

func (p *printer) clearLive() {
	if p.live != nil {
		fmt.Fprint(p.live, "\r\x1b[K")
	}
}

func (p *printer) timedOut(st *gitops.JobStatus, after time.Duration) {
	for i, pr := range st.Progress {
		if pr.State == gitops.StatePending {
			st.Progress[i].State, st.Progress[i].Description = gitops.StateError, "no answer within --timeout "+after.String()
			st.Counts[gitops.StatePending]--
			st.Counts[gitops.StateError]++
			if !p.json {
				fmt.Fprintf(p.w, "%s %-7s %s  %s\n", mark(gitops.StateError), gitops.StateError, targetName(pr.Target), st.Progress[i].Description)
			}
		}
	}
}

// summary prints the end and returns errFailed unless every target succeeded and every
// selected cluster was reached.
func (p *printer) summary(st *gitops.JobStatus, took time.Duration) error {
	ok := len(st.Unreachable) == 0
	for _, pr := range st.Progress {
		ok = ok && pr.State == gitops.StateSuccess
	}
	if p.json {
		if err := p.encode(st); err != nil {
			return err
		}
	} else {
		verdict := "all succeeded"
		if !ok {
			verdict = "NOT all succeeded"
		}
		fmt.Fprintf(p.w, "summary: %d success, %d failure, %d error, %d skipped, %d unreachable clusters in %.1fs: %s\n",
			st.Counts[gitops.StateSuccess], st.Counts[gitops.StateFailure], st.Counts[gitops.StateError], len(st.Skipped),
			len(st.Unreachable), took.Seconds(), verdict)
	}
	if !ok {
		return errFailed
	}
	return nil
}

func (p *printer) encode(st *gitops.JobStatus) error {
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	return enc.Encode(st)
}

func targetName(t gitops.Target) string {
	return clean(fmt.Sprintf("%s %s %s/%s", t.Cluster, t.Kind, t.Namespace, t.Name))
}

// clean makes text from the server safe to print on a terminal: control characters
// (escape sequences, carriage returns) and invisible formatting characters (bidirectional
// overrides) become '?'.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return '?'
		}
		return r
	}, s)
}

// loopback reports whether host names this machine: plain http to it keeps the token local.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func mark(state string) string {
	switch state {
	case gitops.StateSuccess:
		return "✔"
	case gitops.StateWarning:
		return "!"
	}
	return "✗"
}
