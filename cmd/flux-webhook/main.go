// Command flux-webhook closes the loop between Gitea and Flux: a push becomes a Flux
// reconcile within a second, and Flux's answer becomes a commit status on the pushed commit.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage marks an error in how the command was called: exit status 2.
var errUsage = errors.New("usage")

// run executes the command line and returns the exit status: 0 on success, 2 for a usage
// error, 1 for anything else. It prints one line per error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	if args == nil {
		args = []string{} // cobra would read os.Args instead
	}
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errFailed):
		return 1 // the command's own output said what failed
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "flux-webhook: %s (see --help)\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	default:
		fmt.Fprintf(stderr, "flux-webhook: %v\n", err)
		return 1
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "flux-webhook",
		Short: "Turn Gitea pushes into Flux reconciles, and Flux's answer into commit statuses",
		Long: `flux-webhook receives Gitea push events on POST /hook, asks the Flux objects the pushed
repository and branch feed to reconcile now (reconcile.fluxcd.io/requestedAt, source first),
and reports Flux's answer on the pushed commit as Gitea commit statuses.

Every flag can also be set from the environment as FLUX_WEBHOOK_<FLAG>, upper case with
'-' as '_' (e.g. FLUX_WEBHOOK_HOOK_KEY_SECRET for --hook-key-secret); a flag on the command
line wins.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Arguments are checked here, not by cobra (whose errors are plain strings).
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return noArgs(cmd, args)
			}
			return cmd.Help()
		},
	}
	// Cobra's own completion command is replaced by completion.go's, which says how to
	// install each script and keeps usage errors to exit status 2.
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %v", errUsage, err) })
	root.AddCommand(newServeCmd(), newTokenCmd(), newEnrollCmd(), newEnrollmentCmd(), newReconcileCmd(), newVersionCmd(), newCompletionCmd())
	// Every command reads its flags from the environment too, then checks them (its own
	// PreRunE): a usage error is found before anything is done.
	for _, c := range root.Commands() {
		check := c.PreRunE
		c.PreRunE = func(cmd *cobra.Command, args []string) error {
			if err := envFlags(cmd, args); err != nil || check == nil {
				return err
			}
			return check(cmd, args)
		}
	}
	return root
}

// noArgs refuses arguments where a command takes none, as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: unknown command %q for %q", errUsage, args[0], cmd.CommandPath())
	}
	return nil
}

// envFlags sets every flag not given on the command line from FLUX_WEBHOOK_<FLAG>.
func envFlags(cmd *cobra.Command, _ []string) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := envName(f.Name)
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if serr := f.Value.Set(v); serr != nil {
			err = fmt.Errorf("%w: invalid %s: %v", errUsage, name, serr)
		}
		f.Changed = true
	})
	return err
}

func envName(flag string) string {
	b := []byte("FLUX_WEBHOOK_" + flag)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
