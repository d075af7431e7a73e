package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// shells are those completion writes a script for.
var shells = []string{"bash", "zsh", "fish", "powershell"}

func newCompletionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script of flux-webhook",
		Long: `completion prints a script that makes the shell complete flux-webhook's commands, flags and
the values some flags take (reconcile --output, completion's shells). Load it in the current
shell, or install it where the shell loads completions from; each shell's way is below.
The bash script needs the bash-completion package (v2).`,
		Example: `  # bash, this shell only:
  source <(flux-webhook completion bash)
  # bash, every new shell (as root; or ~/.local/share/bash-completion/completions/flux-webhook):
  flux-webhook completion bash > /etc/bash_completion.d/flux-webhook

  # zsh (compinit enabled: autoload -U compinit; compinit):
  flux-webhook completion zsh > "${fpath[1]}/_flux-webhook"

  # fish:
  flux-webhook completion fish > ~/.config/fish/completions/flux-webhook.fish

  # PowerShell, this session (add the line to $PROFILE for every session):
  flux-webhook completion powershell | Out-String | Invoke-Expression`,
		ValidArgs: shells,
		Args:      shellArg, // usage errors, exit status 2
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCompletion(cmd.Context(), cmd.Root(), args, cmd.OutOrStdout())
		},
	}
}

// shellArg checks completion's one argument, a shell it writes a script for.
func shellArg(_ *cobra.Command, args []string) error {
	switch {
	case len(args) != 1:
		return fmt.Errorf("%w: completion takes one shell: %s", errUsage, strings.Join(shells, ", "))
	case !slices.Contains(shells, args[0]):
		return fmt.Errorf("%w: completion: unknown shell %q: want %s", errUsage, args[0], strings.Join(shells, ", "))
	}
	return nil
}

// runCompletion writes the completion script of root for the shell args names.
func runCompletion(_ context.Context, root *cobra.Command, args []string, stdout io.Writer) error {
	if err := shellArg(nil, args); err != nil {
		return err
	}
	switch args[0] {
	case "bash":
		return root.GenBashCompletionV2(stdout, true)
	case "zsh":
		return root.GenZshCompletion(stdout)
	case "fish":
		return root.GenFishCompletion(stdout, true)
	case "powershell":
		return root.GenPowerShellCompletionWithDesc(stdout)
	}
	return fmt.Errorf("%w: completion: unknown shell %q: want %s", errUsage, args[0], strings.Join(shells, ", "))
}

// fixedValues completes a flag with a fixed list of values.
func fixedValues(values ...string) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return slices.DeleteFunc(slices.Clone(values), func(v string) bool { return !strings.HasPrefix(v, toComplete) }),
			cobra.ShellCompDirectiveNoFileComp
	}
}
