package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/openova-io/flux-webhook/internal/credentials"
)

type tokenOptions struct {
	kube          kubeOptions
	HookKeySecret string
	HookKeyFile   string
	Repository    string
	Organization  string
}

func (o *tokenOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Repository, "repository", "", "the repository the token speaks for, owner/name")
	fs.StringVar(&o.Organization, "organization", "", "the owner (organization or user) whose every repository the token speaks for")
	fs.StringVar(&o.HookKeySecret, "hook-key-secret", "", "NAMESPACE/NAME of the Secret holding the hook key (key \"token\"), read as serve reads it, through --kubeconfig")
	fs.StringVar(&o.HookKeyFile, "hook-key-file", "", "file holding the hook key, instead of --hook-key-secret")
	fs.StringVar(&o.kube.Kubeconfig, "kubeconfig", "", "kubeconfig file, as kubectl's (default: in-cluster config in a pod, else $KUBECONFIG or ~/.kube/config)")
}

func newTokenCmd() *cobra.Command {
	o := &tokenOptions{}
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print the /hook token of one repository or organization, for its Actions secret",
		Long: `token prints the Bearer token a Gitea Actions workflow presents on /hook, derived from the
hook key: with --repository owner/name it speaks for that repository only, with
--organization owner for every repository of that owner. Put it into the repository's (or the
organization's) Actions secret FLUX_WEBHOOK_TOKEN.

The token cannot be used for another repository, nor turned into one: that needs the hook key,
which stays in flux-webhook's Secret. Rotating the hook key changes every token (the previous
key stays valid for serve's --token-grace): print and store them again.

The hook key is read from the Secret serve reads it from (--hook-key-secret, with the
kubeconfig's identity, which needs get on that Secret), or from a file. Only the token is
printed, on standard output.`,
		Example: `  flux-webhook token --hook-key-secret flux-webhook/flux-webhook-hook-key --repository acme/app
  flux-webhook token --hook-key-file ./hook-key --organization acme`,
		Args:    noArgs,
		PreRunE: func(*cobra.Command, []string) error { _, err := o.scope(); return err },
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runToken(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	o.BindFlags(cmd.Flags())
	cmd.Flags().SortFlags = false
	return cmd
}

// scope checks token's options and returns the scope the token speaks for.
func (o *tokenOptions) scope() (credentials.Scope, error) {
	var (
		scope credentials.Scope
		err   error
	)
	switch {
	case (o.Repository == "") == (o.Organization == ""):
		return scope, fmt.Errorf("%w: give exactly one of --repository and --organization", errUsage)
	case (o.HookKeySecret == "") == (o.HookKeyFile == ""):
		return scope, fmt.Errorf("%w: give exactly one of --hook-key-secret and --hook-key-file", errUsage)
	case o.Repository != "":
		scope, err = credentials.RepositoryScope(o.Repository)
	default:
		scope, err = credentials.OrganizationScope(o.Organization)
	}
	if err != nil {
		return scope, fmt.Errorf("%w: %v", errUsage, err)
	}
	return scope, nil
}

func runToken(ctx context.Context, o *tokenOptions, stdout io.Writer) error {
	scope, err := o.scope()
	if err != nil {
		return err
	}
	key, err := o.hookKey(ctx)
	if err != nil {
		return err
	}
	// The same rules as serve: a key serve would refuse makes no token.
	keys := &credentials.Keyring{}
	if err := keys.Set(credentials.HookKey, string(key)); err != nil {
		return err
	}
	if keys.Current(credentials.HookKey) == nil {
		return errors.New("the hook key is empty")
	}
	_, err = fmt.Fprintln(stdout, credentials.DeriveToken(keys.Current(credentials.HookKey), scope))
	return err
}

// hookKey reads the hook key from its file or its Secret.
func (o *tokenOptions) hookKey(ctx context.Context) ([]byte, error) {
	if o.HookKeyFile != "" {
		b, err := os.ReadFile(o.HookKeyFile)
		if err != nil {
			return nil, fmt.Errorf("read --hook-key-file: %w", err)
		}
		return b, nil
	}
	ref, err := credentials.ParseSecretRef(o.HookKeySecret)
	if err != nil {
		return nil, fmt.Errorf("%w: --hook-key-secret: %v", errUsage, err)
	}
	cfg, err := o.kube.Config()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	var s *corev1.Secret
	if s, err = cs.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err != nil {
		return nil, fmt.Errorf("read the hook key: %w", err)
	}
	v, ok := s.Data[credentials.SecretKey]
	if !ok || strings.TrimSpace(string(v)) == "" {
		return nil, fmt.Errorf("secret %s has no %q key", ref, credentials.SecretKey)
	}
	return v, nil
}
