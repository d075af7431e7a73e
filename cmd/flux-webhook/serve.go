package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/openova-io/flux-webhook/gitops"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/version"
	"github.com/openova-io/flux-webhook/server"
	"github.com/openova-io/flux-webhook/webhook"
)

type serveOptions struct {
	log     logOptions
	kube    kubeOptions
	hook    hookOptions
	gitea   giteaOptions
	cluster clusterOptions
	report  reportOptions
	probe   probeOptions
}

func newServeCmd() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve POST /hook and report Flux's answers as Gitea commit statuses",
		Long: `serve runs the service: POST /hook (and /hook/<anything>) on --listen, /healthz and /readyz on
--health-listen, Prometheus /metrics on --metrics-listen.

A push to a repository makes every Flux GitRepository that fetches the pushed reference, and the
HelmCharts, Kustomizations and HelmReleases built from it, reconcile now. Each gets a pending commit
status at once, then exactly one of success, failure, error (no answer within --result-timeout) or
warning (superseded by a newer push, or suspended).`,
		Example: `  flux-webhook serve --token-secret flux-system/flux-webhook-token \
    --gitea-url https://gitea.example.com --gitea-token-secret flux-system/flux-webhook-gitea \
    --cluster-name eu-central-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), o, cmd.ErrOrStderr()) },
	}
	fs := cmd.Flags()
	o.hook.BindFlags(fs)
	o.gitea.BindFlags(fs)
	o.cluster.BindFlags(fs)
	o.report.BindFlags(fs)
	o.probe.BindFlags(fs)
	o.kube.BindFlags(fs)
	o.log.BindFlags(fs)
	fs.SortFlags = false
	return cmd
}

func runServe(ctx context.Context, o *serveOptions, stderr interface{ Write([]byte) (int, error) }) error {
	refs, err := o.validate()
	if err != nil {
		return err
	}
	logger, err := o.log.Logger(stderr)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctrl.SetLogger(logger)
	version.RegisterMetric()
	cfg, err := o.kube.Config()
	if err != nil {
		return err
	}
	namespace := o.probe.Namespace
	if namespace == "" {
		namespace = os.Getenv("POD_NAMESPACE")
	}
	for _, ref := range []types.NamespacedName{refs.hookKey, refs.webhookKey, refs.sharedToken} {
		if namespace == "" {
			namespace = ref.Namespace
		}
	}
	leNamespace := o.probe.LeaderElectionNamespace
	if leNamespace == "" {
		leNamespace = namespace
	}
	lease, renew, retry := o.probe.LeaseDuration, o.probe.RenewDeadline, o.probe.RetryPeriod
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                  gitops.NewScheme(),
		Logger:                  logger,
		Metrics:                 metricsserver.Options{BindAddress: o.probe.MetricsListen},
		HealthProbeBindAddress:  o.probe.HealthListen,
		LeaderElection:          o.probe.LeaderElect,
		LeaderElectionID:        "flux-webhook",
		LeaderElectionNamespace: leNamespace,
		// A replica that stops hands leadership over at once instead of after the lease.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &lease,
		RenewDeadline:                 &renew,
		RetryPeriod:                   &retry,
		GracefulShutdownTimeout:       ptr(gracefulShutdown),
		// Only the Flux kinds are cached (their informers are made by the index set-up); a read
		// of anything else through the cache is an error, not a new cluster-wide watch.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ReaderFailOnMissingInformer: true},
		// Secrets are read by name through their own watches; reconcile jobs (ConfigMaps) by
		// name or label through the API reader.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}}}},
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := gitops.SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}

	// Every secret, each watched in its own Secret, into one keyring that refuses a weak
	// value or one serving two purposes.
	keys := &credentials.Keyring{Grace: o.hook.TokenGrace}
	var runnables []manager.Runnable
	watch := func(ref types.NamespacedName, p credentials.Purpose) *credentials.SecretWatcher {
		if ref.Name == "" {
			return nil
		}
		w := &credentials.SecretWatcher{Client: clientset, Dynamic: dyn, Secret: ref, Keys: keys, Purpose: p,
			Log: logger.WithName("secrets")}
		runnables = append(runnables, w)
		return w
	}
	hookWatches := slices.DeleteFunc([]*credentials.SecretWatcher{
		watch(refs.hookKey, credentials.HookKey),
		watch(refs.webhookKey, credentials.WebhookKey),
		watch(refs.sharedToken, credentials.SharedToken),
	}, func(w *credentials.SecretWatcher) bool { return w == nil })
	watch(refs.giteaToken, credentials.GiteaToken)
	watch(refs.platformToken, credentials.PlatformToken)
	recordKey := watch(refs.recordKey, credentials.RecordKey)

	var aliases []gitops.Alias
	for _, a := range o.cluster.GitURLAliases {
		al, _ := gitops.ParseAlias(a) // validated
		aliases = append(aliases, al)
	}
	var poster gitops.StatusPoster = logPoster{logger.WithName("results")}
	var lookup gitops.StatusLookup
	var notifier gitops.ResultNotifier
	var repositories *gitops.Repositories
	intake := &webhook.Intake{}
	if o.gitea.URL != "" {
		g := &webhook.Gitea{URL: o.gitea.URL, HTTP: &http.Client{Timeout: o.gitea.Timeout}, Keys: keys}
		poster, lookup, notifier = g, g, g
		if o.hook.VerifyClaims {
			intake.Forge = g
		}
		if repositories, err = gitops.NewRepositories(o.gitea.URL, aliases); err != nil {
			return fmt.Errorf("%w: --gitea-url: %v", errUsage, err)
		}
	}

	local := gitops.NewCluster(o.cluster.Name, o.cluster.Region, mgr, keys)
	clusters := gitops.NewClusterSet(local)
	pushes := &gitops.PushStore{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: namespace}
	requester := &gitops.Requester{Clusters: clusters, Backlog: pushes, Aliases: aliases}
	intake.Requester = requester
	srv := &server.Server{
		Addr:         o.hook.Listen,
		PlatformAddr: o.hook.PlatformListen,
		Keys:         keys,
		Intake:       intake,
		Awaiter:      requester,
		Log:          logger.WithName("http"),
	}
	if refs.platformToken.Name != "" {
		srv.Platform = &gitops.Platform{
			Clusters:      clusters,
			Jobs:          &gitops.JobStore{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: namespace},
			ResultTimeout: o.report.ResultTimeout,
		}
	}
	runnables = append(runnables, srv, gitops.LocalWatch{Cluster: local},
		&gitops.Backlog{Store: pushes, Clusters: clusters, Poster: poster, Lookup: lookup, ResultTimeout: o.report.ResultTimeout},
		&gitops.Reporters{Clusters: clusters, New: func(c *gitops.Cluster) *gitops.Reporter {
			return &gitops.Reporter{Cluster: c, Poster: poster, Lookup: lookup, Notifier: notifier, ResultTimeout: o.report.ResultTimeout,
				Repositories: repositories}
		}})
	if o.cluster.SecretsNamespace != "" {
		policy, _ := gitops.ParseKubeconfigPolicy(o.cluster.InsecureKubeconfig) // validated
		runnables = append(runnables, &gitops.ClusterSecrets{Client: clientset, Namespace: o.cluster.SecretsNamespace, Clusters: clusters,
			QPS: o.cluster.QPS, Burst: o.cluster.Burst, Policy: policy, Keys: keys, Events: mgr.GetEventRecorder(gitops.EventSource),
			Log: logger.WithName("clusters")})
	}
	for _, r := range runnables {
		if err := mgr.Add(r); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready means this cluster's caches are synced; a registered cluster that is down keeps
	// no replica out of service (flux_webhook_cluster_up and the log say which).
	if err := mgr.AddReadyzCheck("caches", func(*http.Request) error {
		if !local.Ready() {
			return errors.New("caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	// Ready means at least one way to authenticate /hook works; a Secret that stops working
	// while another still does is an error in the log and flux_webhook_secret_usable 0.
	if err := mgr.AddReadyzCheck("hook-credentials", func(*http.Request) error {
		var errs []error
		for _, w := range hookWatches {
			if err := w.Ready(); err == nil {
				return nil
			} else {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}); err != nil {
		return err
	}
	// Nothing can be requested or reported without the record key.
	if err := mgr.AddReadyzCheck("record-key", func(*http.Request) error { return recordKey.Ready() }); err != nil {
		return err
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if o.probe.LeaderElect {
			logger.Info("elected leader: this replica posts the results", "lease", leNamespace+"/flux-webhook")
		}
		<-ctx.Done()
		return nil
	})); err != nil {
		return err
	}
	logger.Info("starting", "cluster", o.cluster.Name, "region", o.cluster.Region, "gitea", o.gitea.URL,
		"verifyClaims", intake.Forge != nil, "namespace", namespace, "clusterSecretsNamespace", o.cluster.SecretsNamespace)
	if intake.Forge == nil {
		logger.Info("push claims are not checked against Gitea: a sender's credential and a consistent payload are trusted")
	}
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// gracefulShutdown bounds the manager's stop on SIGTERM: in-flight requests finish (the
// hook server gives them 20 s), runnables stop, and the process exits inside Kubernetes'
// default 30 s termination grace period. Pending reports are already in the API.
const gracefulShutdown = 25 * time.Second

func ptr[T any](v T) *T { return &v }

// logPoster "posts" statuses to the log when no Gitea is configured.
type logPoster struct{ log logr.Logger }

func (p logPoster) PostStatus(_ context.Context, s gitops.CommitStatus) error {
	p.log.Info("result", "repository", s.Repository, "commit", s.SHA, "context", s.Context, "state", s.State, "description", s.Description)
	return nil
}
