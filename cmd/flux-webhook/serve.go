package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/jobs"
	"github.com/openova-io/flux-webhook/gitops/observe"
	"github.com/openova-io/flux-webhook/gitops/record"
	"github.com/openova-io/flux-webhook/gitops/report"
	"github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/internal/probe"
	"github.com/openova-io/flux-webhook/internal/tracing"
	"github.com/openova-io/flux-webhook/internal/version"
	"github.com/openova-io/flux-webhook/server"
	"github.com/openova-io/flux-webhook/webhook"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

type serveOptions struct {
	log     logOptions
	kube    kubeOptions
	hook    hookOptions
	gitea   giteaOptions
	cluster clusterOptions
	report  reportOptions
	probe   probeOptions
	enroll  enrollOptions
}

func newServeCmd() *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve POST /hook and report Flux's answers as Gitea commit statuses",
		Long: `serve runs the service: POST /hook and POST /hook/<owner>/<repo>[/<ref>] (the short form, no
body) on --listen; with --platform-token-secret, the platform API (POST /api/v1/reconcile and
GET /api/v1/reconcile/<id>) on --platform-listen; GET /healthz and GET /readyz on
--health-listen; Prometheus GET /metrics on --metrics-listen.

A push to a repository makes every Flux GitRepository that fetches the pushed reference, and the
HelmCharts, Kustomizations and HelmReleases built from it, reconcile now; a tag pushed to Gitea's
registry (a package event) does the same for the OCIRepositories and OCI HelmCharts that follow
it. Each object (or, per --status-granularity, each cluster) gets a pending commit status once it
is requested, then exactly one of success, failure, error (no answer within --result-timeout)
or warning (superseded by a newer push, suspended, or Flux settled on another revision).

Traces (OpenTelemetry, one per push) are off unless the standard environment asks for them:
OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (or OTEL_TRACES_EXPORTER=otlp),
over HTTP/protobuf, or gRPC with OTEL_EXPORTER_OTLP_PROTOCOL=grpc; the rest of OTEL_* as the SDK
reads it.`,
		Example: `  flux-webhook serve --hook-key-secret flux-webhook/flux-webhook-hook-key \
    --record-key-secret flux-webhook/flux-webhook-record-key \
    --gitea-url https://gitea.example.com --gitea-token-secret flux-webhook/flux-webhook-gitea \
    --cluster-name eu-central-1`,
		// Usage errors first, before anything is started.
		PreRunE: func(*cobra.Command, []string) error { return o.check() },
		Args:    noArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), o, cmd.ErrOrStderr()) },
	}
	fs := cmd.Flags()
	o.hook.BindFlags(fs)
	o.gitea.BindFlags(fs)
	o.cluster.BindFlags(fs)
	o.report.BindFlags(fs)
	o.probe.BindFlags(fs)
	o.enroll.BindFlags(fs)
	o.kube.BindFlags(fs)
	o.log.BindFlags(fs)
	fs.SortFlags = false
	return cmd
}

// check finds every usage error of serve's options.
func (o *serveOptions) check() error {
	if _, err := o.validate(); err != nil {
		return err
	}
	if _, err := o.log.Logger(io.Discard); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func runServe(ctx context.Context, o *serveOptions, stderr io.Writer) error {
	refs, err := o.validate()
	if err != nil {
		return err
	}
	if err := o.enroll.validate(o, refs); err != nil {
		return err
	}
	logger, err := o.log.Logger(stderr)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ctrl.SetLogger(logger)
	// client-go's own lines (reflectors, leader election, its event broadcaster) through the
	// same structured logger: every line of the log is one JSON object.
	klog.SetLogger(logger)
	version.RegisterMetric()
	// Unless GOMEMLIMIT is set, the garbage collector's soft limit is 90% of the container's
	// memory limit (its cgroup's): it works harder before the kernel would kill the process.
	if limit, err := memlimit.Set(memlimit.WithRatio(memoryLimitRatio)); err != nil {
		logger.Error(err, "memory limit not read from the container")
	} else if limit < math.MaxInt64 {
		logger.Info("memory limit", "gomemlimit", limit)
	}
	traces, err := tracing.FromEnv(nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	stopTracing, err := tracing.Setup(ctx, traces, version.Version, logger.WithName("tracing"))
	if err != nil {
		return err
	}
	defer func() {
		// The spans still buffered go out once the manager has stopped.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracing.FlushTimeout)
		defer cancel()
		if err := stopTracing(fctx); err != nil {
			logger.Error(err, "traces not flushed")
		}
	}()
	cfg, err := o.kube.Config()
	if err != nil {
		return err
	}
	mgr, err := newManager(cfg, o, refs, logger)
	if err != nil {
		return err
	}
	svc, err := wire(mgr, cfg, o, refs, logger)
	if err != nil {
		return err
	}
	for _, r := range svc.runnables {
		if err := mgr.Add(r); err != nil {
			return err
		}
	}
	if err := svc.addChecks(mgr); err != nil {
		return err
	}
	logger.Info("starting", "cluster", o.cluster.Name, "region", o.cluster.Region, "gitea", o.gitea.URL,
		"verifyClaims", svc.verifyClaims, "namespace", svc.namespace, "clusterSecretsNamespace", o.cluster.SecretsNamespace,
		"traces", traces.String())
	if !svc.verifyClaims {
		logger.Info("push claims are not checked against Gitea: a sender's credential and a consistent payload are trusted")
	}
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// namespaceOf returns the service's own namespace: --namespace, else the pod's, else that of
// its first Secret.
func namespaceOf(o *serveOptions, refs secretRefs) string {
	if o.probe.Namespace != "" {
		return o.probe.Namespace
	}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	for _, ref := range []types.NamespacedName{refs.hookKey, refs.webhookKey, refs.sharedToken} {
		if ref.Namespace != "" {
			return ref.Namespace
		}
	}
	return ""
}

// newManager returns the manager of the local cluster: its cache of the Flux kinds (no
// Secrets, no ConfigMaps), leader election, health and metrics endpoints.
func newManager(cfg *rest.Config, o *serveOptions, refs secretRefs, logger logr.Logger) (manager.Manager, error) {
	leNamespace := o.probe.LeaderElectionNamespace
	if leNamespace == "" {
		leNamespace = namespaceOf(o, refs)
	}
	lease, renew, retry := o.probe.LeaseDuration, o.probe.RenewDeadline, o.probe.RetryPeriod
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:  flux.NewScheme(),
		Logger:  logger,
		Metrics: metricsserver.Options{BindAddress: o.probe.MetricsListen},
		// The probes are served by internal/probe (controller-runtime's format, plus notes):
		// the checks added to the manager go there.
		HealthProbeBindAddress:  "0",
		PprofBindAddress:        o.probe.PprofListen,
		LeaderElection:          o.probe.LeaderElect,
		LeaderElectionID:        "flux-webhook",
		LeaderElectionNamespace: leNamespace,
		// A replica that stops hands leadership over at once instead of after the lease.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &lease,
		RenewDeadline:                 &renew,
		RetryPeriod:                   &retry,
		GracefulShutdownTimeout:       ptr(gracefulShutdown),
		// Only the Flux kinds the cluster serves are cached (their informers are made as
		// they are discovered); a read of anything else through the cache is an error.
		Cache: cluster.CacheOptions(o.cluster.Name),
		// Secrets are read by name through their own watches; reconcile jobs and push
		// records (ConfigMaps) by name or label through the API reader.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	probes := &probe.Probes{}
	if err := mgr.Add(probes.Server(o.probe.HealthListen)); err != nil {
		return nil, err
	}
	mgr = probe.Manager{Manager: mgr, Probes: probes}
	if o.probe.LeaderElect {
		err = mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			logger.Info("elected leader: this replica posts the results", "lease", leNamespace+"/flux-webhook")
			<-ctx.Done()
			return nil
		}))
	}
	return mgr, err
}

// service is the wired service: what the manager runs, and what readiness reads.
type service struct {
	runnables    []manager.Runnable
	namespace    string
	local        *cluster.Cluster
	hookWatches  []*credentials.SecretWatcher
	recordKey    *credentials.SecretWatcher
	verifyClaims bool
}

// wire builds the service's parts on a manager: the secrets' watches into one keyring, the
// forge, the clusters, the intake and requester, the server, the reporters and the backlog.
func wire(mgr manager.Manager, cfg *rest.Config, o *serveOptions, refs secretRefs, logger logr.Logger) (*service, error) {
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	svc := &service{namespace: namespaceOf(o, refs)}
	// Every secret, each watched in its own Secret, into one keyring that refuses a weak
	// value or one serving two purposes.
	keys := &credentials.Keyring{Grace: o.hook.TokenGrace}
	watch := func(ref types.NamespacedName, p credentials.Purpose) *credentials.SecretWatcher {
		if ref.Name == "" {
			return nil
		}
		w := &credentials.SecretWatcher{Client: clientset, Dynamic: dyn, Secret: ref, Keys: keys, Purpose: p,
			Log: logger.WithName("secrets")}
		svc.runnables = append(svc.runnables, w)
		return w
	}
	svc.hookWatches = slices.DeleteFunc([]*credentials.SecretWatcher{
		watch(refs.hookKey, credentials.HookKey),
		watch(refs.webhookKey, credentials.WebhookKey),
		watch(refs.sharedToken, credentials.SharedToken),
	}, func(w *credentials.SecretWatcher) bool { return w == nil })
	watch(refs.giteaToken, credentials.GiteaToken)
	watch(refs.platformToken, credentials.PlatformToken)
	svc.recordKey = watch(refs.recordKey, credentials.RecordKey)

	var aliases []flux.Alias
	for _, a := range o.cluster.GitURLAliases {
		al, _ := flux.ParseAlias(a) // validated
		aliases = append(aliases, al)
	}
	out := outbound{poster: logPoster{logger.WithName("results")}}
	intake := &webhook.Intake{}
	if o.gitea.URL != "" {
		g := &gitea.Gitea{URL: o.gitea.URL, HTTP: &http.Client{Timeout: o.gitea.Timeout}, Keys: keys, TargetURL: o.gitea.targetURL}
		out = outbound{poster: g, lookup: g, notifier: g}
		if o.hook.VerifyClaims {
			intake.Forge = g
		}
		if out.repositories, err = flux.NewRepositories(o.gitea.URL, aliases); err != nil {
			return nil, fmt.Errorf("%w: --gitea-url: %v", errUsage, err)
		}
	}
	svc.verifyClaims = intake.Forge != nil
	intake.Repositories = out.repositories

	// The clusters' Events: a few writers for all of them, off the push's client limit.
	instance, _ := os.Hostname() // the pod's name in a Deployment; "" names no instance
	events := &cluster.EventWriter{Instance: instance}
	svc.local = cluster.New(o.cluster.Name, o.cluster.Region, mgr, keys)
	svc.local.WriteEventsWith(events)
	svc.local.DiscoveryInterval = o.cluster.KindDiscovery
	clusters := cluster.NewSet(svc.local)
	pushes := &record.PushStore{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: svc.namespace}
	intake.Requester = &request.Requester{Clusters: clusters, Store: pushes, Aliases: aliases, MaxTargets: o.report.MaxPushTargets,
		Granularity: request.Granularity(o.report.Granularity), AutoThreshold: o.report.AutoThreshold}
	aggregator := &report.Aggregator{Store: pushes, Poster: out.poster, Lookup: out.lookup, Notifier: out.notifier,
		ResultTimeout: o.report.ResultTimeout, Busy: svc.local.Busy}
	srv := &server.Server{
		Addr:           o.hook.Listen,
		PlatformAddr:   o.hook.PlatformListen,
		TrustedProxies: o.hook.trustedProxies,
		Keys:           keys,
		Forge:          gitea.Events{},
		Intake:         intake,
		Awaiter:        &observe.Awaiter{Clusters: clusters},
		Log:            logger.WithName("http"),
	}
	if refs.platformToken.Name != "" {
		store := &jobs.JobStore{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: svc.namespace}
		srv.Platform = &jobs.Platform{Clusters: clusters, Jobs: store, ResultTimeout: o.report.ResultTimeout}
		svc.runnables = append(svc.runnables, &jobs.Worker{Clusters: clusters, Jobs: store, Client: clientset,
			QPS: o.cluster.JobQPS, Burst: o.cluster.JobBurst})
	}
	svc.runnables = append(svc.runnables, srv, events, cluster.LocalWatch{Cluster: svc.local},
		&request.Worker{Clusters: clusters, Store: pushes, Client: clientset, ResultTimeout: o.report.ResultTimeout},
		&report.Backlog{Store: pushes, Clusters: clusters, Poster: out.poster, Lookup: out.lookup, Aggregator: aggregator,
			ResultTimeout: o.report.ResultTimeout},
		aggregator,
		&report.Witnesses{Clusters: clusters},
		&report.Reporters{Clusters: clusters, New: func(c *cluster.Cluster) *report.Reporter {
			return &report.Reporter{Cluster: c, Poster: out.poster, Lookup: out.lookup, Notifier: out.notifier, Aggregator: aggregator,
				ResultTimeout: o.report.ResultTimeout, Repositories: out.repositories}
		}})
	if o.cluster.SecretsNamespace != "" {
		policy, _ := cluster.ParseKubeconfigPolicy(o.cluster.InsecureKubeconfig) // validated
		svc.runnables = append(svc.runnables, &cluster.Secrets{Client: clientset, Namespace: o.cluster.SecretsNamespace, Clusters: clusters,
			QPS: o.cluster.QPS, Burst: o.cluster.Burst, MaxObjects: o.cluster.MaxObjects, DiscoveryInterval: o.cluster.KindDiscovery, Policy: policy, Keys: keys, Events: mgr.GetEventRecorder(cluster.EventSource), EventWriter: events,
			DefaultGrant: o.cluster.DefaultGrant, Log: logger.WithName("clusters")})
	}
	o.enroll.wire(svc, mgr, o, keys, clientset, dyn, clusters, out.repositories, logger)
	return svc, nil
}

// outbound is where results go: the forge, or the log when there is none.
type outbound struct {
	poster       report.StatusPoster
	lookup       report.StatusLookup
	notifier     report.ResultNotifier
	repositories *flux.Repositories
}

// addChecks adds the liveness and readiness checks.
func (svc *service) addChecks(mgr manager.Manager) error {
	checks := svc.readyChecks()
	for _, name := range slices.Sorted(maps.Keys(checks)) {
		if err := mgr.AddReadyzCheck(name, checks[name]); err != nil {
			return err
		}
	}
	return mgr.AddHealthzCheck("ping", healthz.Ping)
}

// readyChecks are the checks of /readyz, by name (/readyz?verbose lists them; --health-listen's
// help and the README name each).
func (svc *service) readyChecks() map[string]healthz.Checker {
	return map[string]healthz.Checker{
		// Ready means this cluster's caches are synced; a registered cluster that is down
		// keeps no replica out of service (flux_webhook_cluster_up and the log say which).
		"caches": func(*http.Request) error {
			if !svc.local.Ready() {
				return errors.New("caches not synced")
			}
			return nil
		},
		// A Flux kind this cluster serves only at a version flux-webhook does not read:
		// this replica would miss its objects. Not ready, so that a rollout of a
		// flux-webhook newer than the cluster's Flux stops with the old replicas serving.
		"flux-kinds": func(*http.Request) error {
			if u := svc.local.Unusable(); len(u) > 0 {
				return errors.New(strings.Join(u, "; "))
			}
			return nil
		},
		// At least one way to authenticate /hook works; a Secret that stops working while
		// another still does is an error in the log and flux_webhook_secret_usable 0.
		"hook-credentials": func(*http.Request) error {
			var errs []error
			for _, w := range svc.hookWatches {
				err := w.Ready()
				if err == nil {
					return nil
				}
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		},
		// Nothing can be requested or reported without the record key.
		"record-key": func(*http.Request) error { return svc.recordKey.Ready() },
	}
}

// memoryLimitRatio is the share of the container's memory limit GOMEMLIMIT is set to when
// not given: the rest is for what the Go runtime does not count (stacks' and the binary's
// pages, the kernel's buffers of its connections).
const memoryLimitRatio = 0.9

// gracefulShutdown bounds the manager's stop on SIGTERM: in-flight requests finish (the
// hook server gives them 20 s), runnables stop, and the process exits inside Kubernetes'
// default 30 s termination grace period. Pending reports are already in the API.
const gracefulShutdown = 25 * time.Second

func ptr[T any](v T) *T { return &v }

// logPoster "posts" statuses to the log when no Gitea is configured.
type logPoster struct{ log logr.Logger }

func (p logPoster) PostStatus(_ context.Context, s report.CommitStatus) error {
	p.log.Info("result", "repository", s.Repository, "commit", s.SHA, "context", s.Context, "state", s.State, "description", s.Description)
	return nil
}
