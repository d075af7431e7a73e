package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/webhook/enroll"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// enrollCallTimeout bounds each Gitea call of `flux-webhook enroll`, as serve's
// --gitea-timeout default does.
const enrollCallTimeout = 10 * time.Second

type enrollCmdOptions struct {
	kube             kubeOptions
	Organization     string
	Repository       string
	GiteaURL         string
	TokenSecret      string
	TokenFile        string
	HookKeySecret    string
	HookKeyFile      string
	URL              string
	Webhook          bool
	WebhookKeySecret string
	WebhookKeyFile   string
	SecretName       string
	VariableName     string
	Output           string
}

func (o *enrollCmdOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Organization, "organization", "", "enroll this organization: its Actions secret holds the organization's token")
	fs.StringVar(&o.Repository, "repository", "", "enroll this repository, owner/name: its Actions secret holds the repository's token")
	fs.StringVar(&o.URL, "url", "", "the URL workflows post to, written into the Actions variable, e.g. https://flux-webhook.fra1.example.eu (required)")
	fs.StringVar(&o.GiteaURL, "gitea-url", "", "Gitea's base URL (required)")
	fs.StringVar(&o.TokenSecret, "enroll-token-secret", "", "NAMESPACE/NAME of the Secret holding the enrollment's Gitea token (key \"token\"; serve's --enroll-token-secret), read through --kubeconfig")
	fs.StringVar(&o.TokenFile, "enroll-token-file", "", "file holding the enrollment's Gitea token, instead of --enroll-token-secret")
	fs.StringVar(&o.HookKeySecret, "hook-key-secret", "", "NAMESPACE/NAME of the Secret holding the hook key (key \"token\"), read through --kubeconfig")
	fs.StringVar(&o.HookKeyFile, "hook-key-file", "", "file holding the hook key, instead of --hook-key-secret")
	fs.BoolVar(&o.Webhook, "webhook", false, "also put a webhook on the organization, posting push and package events to <--url>/hook, signed with the webhook key (replacing one already there)")
	fs.StringVar(&o.WebhookKeySecret, "webhook-key-secret", "", "with --webhook: NAMESPACE/NAME of the Secret holding the webhook key")
	fs.StringVar(&o.WebhookKeyFile, "webhook-key-file", "", "with --webhook: file holding the webhook key, instead of --webhook-key-secret")
	fs.StringVar(&o.SecretName, "secret-name", enroll.DefaultSecretName, "name of the Actions secret")
	fs.StringVar(&o.VariableName, "variable-name", enroll.DefaultVariableName, "name of the Actions variable")
	fs.StringVarP(&o.Output, "output", "o", "text", "text, json or yaml")
	fs.StringVar(&o.kube.Kubeconfig, "kubeconfig", "", "kubeconfig file, as kubectl's (default: in-cluster config in a pod, else $KUBECONFIG or ~/.kube/config)")
}

func newEnrollCmd() *cobra.Command {
	o := &enrollCmdOptions{}
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Write an organization's or repository's Actions secret and variable into Gitea, once",
		Long: `enroll writes, through Gitea's API, what a workflow needs to tell flux-webhook about pushes:
the Actions secret FLUX_WEBHOOK_TOKEN holding the scope's token (derived from the hook key, as
flux-webhook token prints it) and the Actions variable FLUX_WEBHOOK_URL holding --url: at
organization level with --organization (every repository of the organization, new ones too),
at repository level with --repository. With --webhook it also puts an organization webhook
signed with the webhook key. It prints what it wrote, never the token.

It does once, for an operator, what serve keeps doing for the scopes it enrolls
(--enroll-organization, --enroll-repository, --enroll-scopes-configmap, --enroll-followed):
only those are written again when the hook key rotates.

The Gitea token is the enrollment's (serve's --enroll-token-secret): its user owns the
organization, scopes write:organization and write:repository. Keys and token are read from
the Secrets serve reads them from (with the kubeconfig's identity), or from files.`,
		Example: `  flux-webhook enroll --organization acme --url https://flux-webhook.fra1.example.eu \
    --gitea-url https://gitea.example.eu \
    --hook-key-secret flux-webhook/flux-webhook-hook-key --enroll-token-secret flux-webhook/flux-webhook-enroll`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEnroll(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	o.BindFlags(cmd.Flags())
	cmd.Flags().SortFlags = false
	_ = cmd.RegisterFlagCompletionFunc("output", fixedValues(outputs...))
	return cmd
}

func runEnroll(ctx context.Context, o *enrollCmdOptions, stdout io.Writer) error {
	var (
		scope credentials.Scope
		err   error
	)
	switch {
	case (o.Repository == "") == (o.Organization == ""):
		return fmt.Errorf("%w: give exactly one of --repository and --organization", errUsage)
	case (o.HookKeySecret == "") == (o.HookKeyFile == ""):
		return fmt.Errorf("%w: give exactly one of --hook-key-secret and --hook-key-file", errUsage)
	case (o.TokenSecret == "") == (o.TokenFile == ""):
		return fmt.Errorf("%w: give exactly one of --enroll-token-secret and --enroll-token-file", errUsage)
	case o.Webhook && (o.WebhookKeySecret == "") == (o.WebhookKeyFile == ""):
		return fmt.Errorf("%w: --webhook needs exactly one of --webhook-key-secret and --webhook-key-file", errUsage)
	case o.Webhook && o.Organization == "":
		return fmt.Errorf("%w: --webhook is for an --organization", errUsage)
	case o.URL == "":
		return fmt.Errorf("%w: --url is required: what workflows post to", errUsage)
	case o.GiteaURL == "":
		return fmt.Errorf("%w: --gitea-url is required", errUsage)
	case !slices.Contains(outputs, o.Output):
		return fmt.Errorf("%w: --output %q: want text, json or yaml", errUsage, o.Output)
	case o.Repository != "":
		scope, err = credentials.RepositoryScope(o.Repository)
	default:
		scope, err = credentials.OrganizationScope(o.Organization)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	for flag, raw := range map[string]string{"--url": o.URL, "--gitea-url": o.GiteaURL} {
		if u, err := url.Parse(raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.User != nil {
			return fmt.Errorf("%w: %s %q: want http(s)://host[:port][/path]", errUsage, flag, raw)
		}
	}
	for flag, name := range map[string]string{"--secret-name": o.SecretName, "--variable-name": o.VariableName} {
		if err := enroll.CheckName(name); err != nil {
			return fmt.Errorf("%w: %s %v", errUsage, flag, err)
		}
	}
	// The same rules as serve: a weak key or token, or one value for two purposes, is
	// refused.
	keys := &credentials.Keyring{}
	read := reader{kube: &o.kube}
	for _, k := range []struct {
		p            credentials.Purpose
		secret, file string
		flag         string
	}{
		{credentials.HookKey, o.HookKeySecret, o.HookKeyFile, "--hook-key"},
		{credentials.EnrollToken, o.TokenSecret, o.TokenFile, "--enroll-token"},
		{credentials.WebhookKey, o.WebhookKeySecret, o.WebhookKeyFile, "--webhook-key"},
	} {
		if k.secret == "" && k.file == "" {
			continue
		}
		v, err := read.value(ctx, k.flag, k.secret, k.file)
		if err != nil {
			return err
		}
		if err := keys.Set(k.p, string(v)); err != nil {
			return err
		}
	}
	settings := enroll.Settings{SecretName: o.SecretName, VariableName: o.VariableName, URL: strings.TrimRight(o.URL, "/"), Webhook: o.Webhook}
	e := &enroll.Enroller{
		Forge:    &gitea.Enrollment{URL: o.GiteaURL, HTTP: &http.Client{Timeout: enrollCallTimeout}, Keys: keys},
		Keys:     keys,
		Settings: settings,
	}
	r, err := e.Apply(ctx, scope, enroll.Plan{WriteSecret: true, CheckVariable: true, Hook: o.Webhook})
	if err != nil {
		return fmt.Errorf("enroll %s: %w", scope, err)
	}
	out := enrolled{
		Scope: scope.String(), Level: enroll.Level(scope),
		Secret:   enrolledItem{Name: settings.SecretName, Action: string(r.Secret), KeyGeneration: r.KeyGeneration},
		Variable: enrolledItem{Name: settings.VariableName, Action: string(r.Variable), Value: settings.URL},
		Calls:    r.Calls,
	}
	if r.Hook != enroll.Skipped {
		out.Webhook = &enrolledItem{Action: string(r.Hook), ID: r.HookID, Value: settings.URL + "/hook", KeyGeneration: r.HookKeyGeneration}
	}
	if o.Output != "text" {
		return encodeDoc(stdout, o.Output, out)
	}
	fmt.Fprintf(stdout, "%s %s:\n", out.Level, scope.Name)
	fmt.Fprintf(stdout, "  secret   %-20s %s: the %s's token (key generation %s)\n", out.Secret.Name, out.Secret.Action, out.Level, out.Secret.KeyGeneration)
	fmt.Fprintf(stdout, "  variable %-20s %s: %s\n", out.Variable.Name, out.Variable.Action, out.Variable.Value)
	if w := out.Webhook; w != nil {
		fmt.Fprintf(stdout, "  webhook  %-20s %s: %s (webhook key generation %s)\n", fmt.Sprintf("id %d", w.ID), w.Action, w.Value, w.KeyGeneration)
	}
	fmt.Fprintf(stdout, "%d Gitea calls. serve writes it again at the next hook key rotation only if it enrolls %s itself (--enroll-%s, or its scopes ConfigMap).\n",
		out.Calls, scope.Name, out.Level)
	return nil
}

// enrolled is what `enroll` prints with -o json|yaml.
type enrolled struct {
	Scope    string        `json:"scope"`
	Level    string        `json:"level"`
	Secret   enrolledItem  `json:"secret"`
	Variable enrolledItem  `json:"variable"`
	Webhook  *enrolledItem `json:"webhook,omitempty"`
	Calls    int           `json:"calls"`
}

type enrolledItem struct {
	Name          string `json:"name,omitempty"`
	ID            int64  `json:"id,omitempty"`
	Action        string `json:"action"`
	Value         string `json:"value,omitempty"`
	KeyGeneration string `json:"keyGeneration,omitempty"`
}

// reader reads a key or token from its Secret or its file.
type reader struct {
	kube *kubeOptions
	cs   kubernetes.Interface
}

func (r *reader) value(ctx context.Context, flag, secret, file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read %s-file: %w", flag, err)
		}
		return b, nil
	}
	ref, err := credentials.ParseSecretRef(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %s-secret: %v", errUsage, flag, err)
	}
	if r.cs == nil {
		cfg, err := r.kube.Config()
		if err != nil {
			return nil, err
		}
		if r.cs, err = kubernetes.NewForConfig(cfg); err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
	}
	s, err := r.cs.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	v, ok := s.Data[credentials.SecretKey]
	if !ok || strings.TrimSpace(string(v)) == "" {
		return nil, fmt.Errorf("secret %s has no %q key", ref, credentials.SecretKey)
	}
	return v, nil
}

// encodeDoc writes v as one JSON or YAML document (YAML from the JSON: the same names).
func encodeDoc(w io.Writer, format string, v any) error {
	if format == "yaml" {
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type enrollmentOptions struct {
	kube      kubeOptions
	Namespace string
	Output    string
}

func (o *enrollmentOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.Namespace, "namespace", "n", "flux-webhook", "the service's namespace, where its leader records enrollment (ConfigMap "+enroll.RecordName+")")
	fs.StringVarP(&o.Output, "output", "o", "text", "text, json or yaml (json, yaml: the record as one document)")
	fs.StringVar(&o.kube.Kubeconfig, "kubeconfig", "", "kubeconfig file, as kubectl's (default: in-cluster config in a pod, else $KUBECONFIG or ~/.kube/config)")
}

func newEnrollmentCmd() *cobra.Command {
	o := &enrollmentOptions{}
	cmd := &cobra.Command{
		Use:   "enrollment",
		Short: "Show what serve enrolled in Gitea: each scope, written when, with which key generation, last error",
		Long: `enrollment prints what serve's leader recorded of enrollment (the ConfigMap ` + enroll.RecordName + ` in
--namespace, read with the kubeconfig's identity: get on that ConfigMap; no token is ever in
it): the hook key generation tokens are derived from, the last rotation and whether every
enrolled secret holds the new token yet, and per scope where its secret and variable live,
why it is enrolled, when its secret was last written and with which key generation, its
organization webhook, and its last error and next attempt. It exits 1 when a scope is
failing.`,
		Example: `  flux-webhook enrollment -n flux-webhook
  flux-webhook enrollment -n flux-webhook -o yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEnrollment(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	o.BindFlags(cmd.Flags())
	cmd.Flags().SortFlags = false
	_ = cmd.RegisterFlagCompletionFunc("output", fixedValues(outputs...))
	return cmd
}

func runEnrollment(ctx context.Context, o *enrollmentOptions, stdout io.Writer) error {
	if !slices.Contains(outputs, o.Output) {
		return fmt.Errorf("%w: --output %q: want text, json or yaml", errUsage, o.Output)
	}
	if !dnsLabel.MatchString(o.Namespace) {
		return fmt.Errorf("%w: --namespace %q: want a namespace's name", errUsage, o.Namespace)
	}
	cfg, err := o.kube.Config()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	cm, err := cs.CoreV1().ConfigMaps(o.Namespace).Get(ctx, enroll.RecordName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("no enrollment recorded in namespace %s: serve enrolls nothing there (no --enroll-* scope), or no replica has led yet", o.Namespace)
	}
	if err != nil {
		return fmt.Errorf("read the enrollment record: %w", err)
	}
	rec, err := enroll.DecodeRecord(cm)
	if err != nil {
		return err
	}
	failing := 0
	for _, s := range rec.Scopes {
		if s.Error != "" {
			failing++
		}
	}
	if o.Output != "text" {
		if err := encodeDoc(stdout, o.Output, rec); err != nil {
			return err
		}
	} else {
		printEnrollment(stdout, rec, cm)
	}
	if failing > 0 {
		return errFailed
	}
	return nil
}

// printEnrollment renders the record for people.
func printEnrollment(w io.Writer, rec *enroll.Record, cm *corev1.ConfigMap) {
	stamp := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	or := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintf(w, "hook key generation %s, recorded %s (%s/%s)\n", or(rec.KeyGeneration), rec.Updated.UTC().Format(time.RFC3339), cm.Namespace, cm.Name)
	if r := rec.Rotation; r != nil {
		if r.Settled != nil {
			fmt.Fprintf(w, "last rotation %s → %s: every enrolled secret rewritten in %s (%s)\n", r.From, r.To, r.Settled.Sub(r.Started).Round(time.Millisecond), stamp(r.Settled))
		} else {
			fmt.Fprintf(w, "rotation %s → %s since %s: secrets still holding the old key's token: %d (it stays valid until none does)\n", r.From, r.To, stamp(&r.Started), r.Pending)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCOPE\tLEVEL\tSOURCES\tWRITTEN\tKEY\tCHECKED\tLAST ERROR")
	current, pending, failing, alone := 0, 0, 0, 0
	for _, s := range rec.Scopes {
		last := "-"
		switch {
		case s.LeftAlone != "":
			alone++
			last = "left alone: " + s.LeftAlone
		case s.Error != "":
			failing++
			last = s.Error
			if s.NextAttempt != nil {
				last += " (next attempt " + stamp(s.NextAttempt) + ")"
			}
		case s.KeyGeneration == rec.KeyGeneration:
			current++
		default:
			pending++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Scope, s.Level, strings.Join(s.Sources, ","), stamp(s.Written), or(s.KeyGeneration), stamp(s.Checked), last)
		if h := s.Webhook; h != nil {
			fmt.Fprintf(tw, "  webhook %d\t\t\t%s\t%s\t-\t-\n", h.ID, stamp(h.Written), or(h.KeyGeneration))
		}
	}
	_ = tw.Flush()
	for _, r := range rec.Refused {
		fmt.Fprintf(w, "refused (scopes ConfigMap): %s\n", r)
	}
	if rec.Omitted > 0 {
		fmt.Fprintf(w, "%d more scopes not enrolled: over the limit of %d\n", rec.Omitted, enroll.MaxScopes)
	}
	verdict := "all current"
	if failing > 0 {
		verdict = "FAILING"
	} else if pending > 0 {
		verdict = "writing"
	}
	fmt.Fprintf(w, "summary: %d scopes, %d current, %d pending, %d failing, %d left alone: %s\n", len(rec.Scopes), current, pending, failing, alone, verdict)
}
