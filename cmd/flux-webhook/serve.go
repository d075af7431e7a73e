package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/openova-io/flux-webhook/gitops"
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
	tokenRef, giteaRef, platformRef, err := o.validate()
	if err != nil {
		return err
	}
	logger, err := o.log.Logger(stderr)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctrl.SetLogger(logger)
	cfg, err := o.kube.Config()
	if err != nil {
		return err
	}
	leNamespace := o.probe.LeaderElectionNamespace
	if leNamespace == "" {
		leNamespace = tokenRef.Namespace
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

	tokens := &webhook.Tokens{Grace: o.hook.TokenGrace}
	tokenWatch := &webhook.SecretWatcher{Client: clientset, Dynamic: dyn, Secret: tokenRef, Set: tokens.Set, Log: logger.WithName("token")}
	if err := mgr.Add(tokenWatch); err != nil {
		return err
	}
	var poster gitops.StatusPoster = logPoster{logger.WithName("results")}
	var lookup gitops.StatusLookup
	var notifier gitops.ResultNotifier
	if o.gitea.URL != "" {
		g := &webhook.Gitea{URL: o.gitea.URL, HTTP: &http.Client{Timeout: o.gitea.Timeout}}
		poster, lookup, notifier = g, g, g
		if err := mgr.Add(&webhook.SecretWatcher{Client: clientset, Dynamic: dyn, Secret: giteaRef, Set: g.SetToken, Log: logger.WithName("gitea-token")}); err != nil {
			return err
		}
	}

	local := gitops.NewCluster(o.cluster.Name, o.cluster.Region, mgr)
	clusters := gitops.NewClusterSet(local)
	secretsNS := o.cluster.SecretsNamespace
	if secretsNS == "" {
		secretsNS = tokenRef.Namespace
	}
	var aliases []gitops.Alias
	for _, a := range o.cluster.GitURLAliases {
		al, _ := gitops.ParseAlias(a) // validated
		aliases = append(aliases, al)
	}
	srv := &server.Server{
		Addr:      o.hook.Listen,
		Auth:      tokens,
		Requester: &gitops.Requester{Clusters: clusters, Errors: poster, ErrorDeadline: o.report.ResultTimeout, Aliases: aliases},
		Log:       logger.WithName("hook"),
	}
	runnables := []manager.Runnable{srv}
	if o.hook.PlatformTokenSecret != "" {
		platformTokens := &webhook.Tokens{Grace: o.hook.TokenGrace}
		runnables = append(runnables, &webhook.SecretWatcher{Client: clientset, Dynamic: dyn, Secret: platformRef, Set: platformTokens.Set, Log: logger.WithName("platform-token")})
		srv.PlatformAuth = platformTokens
		srv.Platform = &gitops.Platform{
			Clusters:      clusters,
			Jobs:          &gitops.JobStore{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: secretsNS},
			ResultTimeout: o.report.ResultTimeout,
		}
	}
	for _, r := range append(runnables,
		gitops.LocalWatch{Cluster: local},
		&gitops.ClusterSecrets{Client: clientset, Namespace: secretsNS, Clusters: clusters,
			QPS: o.cluster.QPS, Burst: o.cluster.Burst, Log: logger.WithName("clusters")},
		&gitops.Reporters{Clusters: clusters, New: func(c *gitops.Cluster) *gitops.Reporter {
			return &gitops.Reporter{Cluster: c, Poster: poster, Lookup: lookup, Notifier: notifier, ResultTimeout: o.report.ResultTimeout}
		}},
	) {
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
	if err := mgr.AddReadyzCheck("token", func(*http.Request) error { return tokenWatch.Ready() }); err != nil {
		return err
	}
	go func() {
		select {
		case <-mgr.Elected():
			if o.probe.LeaderElect {
				logger.Info("elected leader: this replica posts the results", "lease", leNamespace+"/flux-webhook")
			}
		case <-ctx.Done():
		}
	}()
	logger.Info("starting", "cluster", o.cluster.Name, "region", o.cluster.Region, "gitea", o.gitea.URL,
		"tokenSecret", tokenRef.String(), "clusterSecretsNamespace", secretsNS)
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
