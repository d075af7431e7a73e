package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/openova-io/flux-webhook/internal/version"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit flux-webhook was built from",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "flux-webhook %s\n", version.String())
			return err
		},
	}
}
