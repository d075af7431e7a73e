package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/probe"
	"github.com/openova-io/flux-webhook/webhook/enroll"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// enrollOptions configures enrollment: the Actions secrets and variables (and organization
// webhooks) flux-webhook keeps in Gitea itself. Off unless a scope is given.
type enrollOptions struct {
	Organizations   []string
	Repositories    []string
	ScopesConfigMap string
	Followed        bool
	TokenSecret     string
	URL             string
	Webhook         bool
	SecretName      string
	VariableName    string
	Resync          time.Duration
	RotationMax     time.Duration

	scopes   []credentials.Scope  // parsed by validate
	tokenRef types.NamespacedName // TokenSecret, parsed
}

func (o *enrollOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringSliceVar(&o.Organizations, "enroll-organization", nil, "keep the organization's Actions secret (--enroll-secret-name: the organization's token) and variable (--enroll-variable-name: --enroll-url) in Gitea, through every rotation of the hook key; new repositories of the organization are covered at once (repeatable)")
	fs.StringSliceVar(&o.Repositories, "enroll-repository", nil, "keep the repository's Actions secret (the repository's token) and variable in Gitea, owner/name (repeatable)")
	fs.StringVar(&o.ScopesConfigMap, "enroll-scopes-configmap", "", "NAME of a ConfigMap in --namespace listing more scopes to enroll: key \""+enroll.ScopesOrganizations+"\" (owners) and key \""+enroll.ScopesRepositories+"\" (owner/name), separated by spaces, commas or new lines; read every 15s")
	fs.BoolVar(&o.Followed, "enroll-followed", false, "also enroll every repository a Flux GitRepository in any registered cluster follows (its URL mapped to Gitea's owner/name as for statuses, through --git-url-alias), within a minute of the source appearing; repositories of an enrolled organization are covered by its secret, and a repository whose variable names another URL is left alone")
	fs.StringVar(&o.TokenSecret, "enroll-token-secret", "", "NAMESPACE/NAME of the Secret whose key \"token\" is the Gitea API token enrollment writes with (required to enroll; watched): a user owning each enrolled organization, scopes write:organization and write:repository; kept apart from --gitea-token-secret, which only posts statuses")
	fs.StringVar(&o.URL, "enroll-url", "", "the URL workflows post to, written into the Actions variable, e.g. https://flux-webhook.fra1.example.eu (required to enroll)")
	fs.BoolVar(&o.Webhook, "enroll-webhook", false, "also keep, on every enrolled organization, a Gitea webhook posting push and package events to <--enroll-url>/hook, signed with the webhook key (--webhook-key-secret): recreated when deleted, corrected when changed, replaced when the webhook key changes")
	fs.StringVar(&o.SecretName, "enroll-secret-name", enroll.DefaultSecretName, "name of the Actions secret holding the token (${{ secrets.NAME }})")
	fs.StringVar(&o.VariableName, "enroll-variable-name", enroll.DefaultVariableName, "name of the Actions variable holding --enroll-url (${{ vars.NAME }})")
	fs.DurationVar(&o.Resync, "enroll-resync-interval", enroll.DefaultResync, "how often each enrolled scope is checked when nothing changed (its secret present, its variable and webhook as they should be: two or three Gitea calls a scope)")
	fs.DurationVar(&o.RotationMax, "enroll-rotation-max", enroll.DefaultRotationMax, "after the hook key changes, the replaced key stays valid until every enrolled secret holds the new token (then --token-grace more), but never longer than this")
}

// enabled reports whether any scope is to be enrolled.
func (o *enrollOptions) enabled() bool {
	return len(o.Organizations)+len(o.Repositories) > 0 || o.ScopesConfigMap != "" || o.Followed
}

// validate checks the enrollment options against the rest of serve's.
func (o *enrollOptions) validate(s *serveOptions, refs secretRefs) error {
	if !o.enabled() {
		if o.TokenSecret != "" || o.URL != "" || o.Webhook {
			return fmt.Errorf("%w: --enroll-token-secret, --enroll-url and --enroll-webhook need something to enroll: --enroll-organization, --enroll-repository, --enroll-scopes-configmap or --enroll-followed", errUsage)
		}
		return nil
	}
	for _, n := range o.Organizations {
		sc, err := credentials.OrganizationScope(n)
		if err != nil {
			return fmt.Errorf("%w: --enroll-organization: %v", errUsage, err)
		}
		o.scopes = append(o.scopes, sc)
	}
	for _, n := range o.Repositories {
		sc, err := credentials.RepositoryScope(n)
		if err != nil {
			return fmt.Errorf("%w: --enroll-repository: %v", errUsage, err)
		}
		o.scopes = append(o.scopes, sc)
	}
	switch {
	case s.gitea.URL == "":
		return fmt.Errorf("%w: enrollment needs --gitea-url: it writes into Gitea", errUsage)
	case refs.hookKey.Name == "":
		return fmt.Errorf("%w: enrollment needs --hook-key-secret: the tokens it writes derive from the hook key", errUsage)
	case o.TokenSecret == "":
		return fmt.Errorf("%w: enrollment needs --enroll-token-secret: a Gitea token of its own, allowed to write Actions secrets", errUsage)
	case o.URL == "":
		return fmt.Errorf("%w: enrollment needs --enroll-url: the URL workflows post to", errUsage)
	case o.Webhook && refs.webhookKey.Name == "":
		return fmt.Errorf("%w: --enroll-webhook needs --webhook-key-secret: the webhooks are signed with the webhook key", errUsage)
	case o.ScopesConfigMap != "" && !dnsSubdomain(o.ScopesConfigMap):
		return fmt.Errorf("%w: --enroll-scopes-configmap %q: want the NAME of a ConfigMap in --namespace", errUsage, o.ScopesConfigMap)
	case o.Resync < 10*time.Second:
		return fmt.Errorf("%w: --enroll-resync-interval must be at least 10s", errUsage)
	case o.RotationMax <= 0:
		return fmt.Errorf("%w: --enroll-rotation-max must be positive", errUsage)
	}
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%w: --enroll-url %q: want http(s)://host[:port][/path], what workflows post /hook under", errUsage, o.URL)
	}
	o.URL = strings.TrimRight(o.URL, "/")
	for flag, name := range map[string]string{"--enroll-secret-name": o.SecretName, "--enroll-variable-name": o.VariableName} {
		if err := enroll.CheckName(name); err != nil {
			return fmt.Errorf("%w: %s %v", errUsage, flag, err)
		}
	}
	if o.tokenRef, err = credentials.ParseSecretRef(o.TokenSecret); err != nil {
		return fmt.Errorf("%w: --enroll-token-secret: %v", errUsage, err)
	}
	// One Secret, one purpose.
	for flag, ref := range map[string]types.NamespacedName{"--hook-key-secret": refs.hookKey, "--webhook-key-secret": refs.webhookKey,
		"--shared-token-secret": refs.sharedToken, "--platform-token-secret": refs.platformToken, "--gitea-token-secret": refs.giteaToken,
		"--record-key-secret": refs.recordKey} {
		if ref == o.tokenRef {
			return fmt.Errorf("%w: %s and --enroll-token-secret name the same Secret %s: each secret serves one purpose", errUsage, flag, ref)
		}
	}
	return nil
}

// dnsSubdomain reports whether s is a valid object name.
func dnsSubdomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !dnsLabel.MatchString(label) {
			return false
		}
	}
	return true
}

// wire adds enrollment's parts: the enrollment token's watch, the hold on the hook key, the
// leader's controller, every replica's releaser and its readiness note.
func (o *enrollOptions) wire(svc *service, mgr manager.Manager, s *serveOptions, keys *credentials.Keyring, clientset kubernetes.Interface,
	dyn dynamic.Interface, clusters *cluster.Set, repositories *flux.Repositories, logger logr.Logger) {
	if !o.enabled() {
		return
	}
	logger = logger.WithName("enroll")
	token := &credentials.SecretWatcher{Client: clientset, Dynamic: dyn, Secret: o.tokenRef, Keys: keys,
		Purpose: credentials.EnrollToken, Log: logger}
	// The replaced hook key (and webhook key, with webhooks) stays valid until every
	// enrolled copy holds the new one, at most RotationMax.
	keys.HoldRotation(credentials.HookKey, o.RotationMax)
	if o.Webhook {
		keys.HoldRotation(credentials.WebhookKey, o.RotationMax)
	}
	store := &enroll.Store{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: svc.namespace}
	ctrl := &enroll.Controller{
		Enroller: &enroll.Enroller{
			Forge: &gitea.Enrollment{URL: s.gitea.URL, HTTP: &http.Client{Timeout: s.gitea.Timeout}, Keys: keys},
			Keys:  keys,
			Settings: enroll.Settings{SecretName: o.SecretName, VariableName: o.VariableName, URL: o.URL,
				Webhook: o.Webhook},
		},
		Store:           store,
		Static:          o.scopes,
		ScopesConfigMap: o.ScopesConfigMap,
		Resync:          o.Resync,
		Events:          mgr.GetEventRecorder(cluster.EventSource),
		Log:             logger,
	}
	if o.Followed && repositories != nil {
		ctrl.Followed = enroll.FluxSources{Clusters: clusters, Repositories: repositories}
	}
	releaser := &enroll.Releaser{Client: clientset, Namespace: svc.namespace, Keys: keys, Log: logger}
	svc.runnables = append(svc.runnables, token, ctrl, releaser)
	if pm, ok := mgr.(probe.Manager); ok {
		pm.Probes.AddNote("enrollment", func() string {
			d := releaser.Detail()
			if err := token.Ready(); err != nil {
				d = "enrollment token: " + err.Error() + "; " + d
			}
			return d
		})
	}
}
