package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/openova-io/flux-webhook/gitops/cluster"
	"github.com/openova-io/flux-webhook/gitops/flux"
	"github.com/openova-io/flux-webhook/gitops/jobs"
	"github.com/openova-io/flux-webhook/gitops/request"
	"github.com/openova-io/flux-webhook/internal/credentials"
	"github.com/openova-io/flux-webhook/server"
	"github.com/openova-io/flux-webhook/webhook/gitea"
)

// logOptions configures the structured logger.
type logOptions struct {
	Level    string
	Encoding string
}

func (o *logOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Level, "log-level", "info", "log verbosity: debug, info or error")
	fs.StringVar(&o.Encoding, "log-encoding", "json", "log format: json (one object per line) or console")
}

// Logger builds the service's logger: every line is written. controller-runtime's own
// production logger samples (after 100 lines of one message in a second, one in 100), which
// would drop the very request and result lines an auditor or an operator looks for when a
// push arrives in a burst.
func (o *logOptions) Logger(w io.Writer) (logr.Logger, error) {
	lvl, err := zapcore.ParseLevel(o.Level)
	if err != nil {
		return logr.Logger{}, fmt.Errorf("--log-level %q: want debug, info or error", o.Level)
	}
	var enc zapcore.Encoder
	switch o.Encoding {
	case "json":
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	case "console":
		enc = zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	default:
		return logr.Logger{}, fmt.Errorf("--log-encoding %q: want json or console", o.Encoding)
	}
	sink := zapcore.AddSync(w)
	// KubeAwareEncoder: a Kubernetes object logged as a value is its kind, namespace and name.
	core := zapcore.NewCore(&crzap.KubeAwareEncoder{Encoder: enc}, sink, lvl)
	return zapr.NewLogger(zap.New(core, zap.ErrorOutput(sink), zap.AddStacktrace(zapcore.PanicLevel))), nil
}

// kubeOptions configures the connection to the cluster flux-webhook runs in.
type kubeOptions struct {
	Kubeconfig string
	QPS        float32
	Burst      int
}

func (o *kubeOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file, as kubectl's (default: in-cluster config in a pod, else $KUBECONFIG or ~/.kube/config)")
	fs.Float32Var(&o.QPS, "kube-qps", 50, "queries per second to the Kubernetes API (50 and a burst of 300: what Flux's own controllers use)")
	fs.IntVar(&o.Burst, "kube-burst", 300, "burst of queries to the Kubernetes API")
}

func (o *kubeOptions) Config() (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	} else {
		cfg, err = ctrl.GetConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	cfg.QPS, cfg.Burst = o.QPS, o.Burst
	// Uncompressed, as registered clusters' (cluster.NewRemote): the API server is the
	// cluster's own, and gzip cost both sides CPU on every watch event besides a reader
	// of 43 KiB per open watch.
	cfg.DisableCompression = true
	return cfg, nil
}

// hookOptions configures /hook, the platform API, and the secrets they authenticate with.
type hookOptions struct {
	Listen              string
	PlatformListen      string
	HookKeySecret       string
	WebhookKeySecret    string
	SharedTokenSecret   string
	PlatformTokenSecret string
	TokenGrace          time.Duration
	VerifyClaims        bool
	TrustedProxies      []string

	trustedProxies []netip.Prefix // TrustedProxies, parsed by validate
}

func (o *hookOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", ":8080", "address of POST /hook and POST /hook/<owner>/<repo>[/<ref>] (the short form)")
	fs.StringVar(&o.PlatformListen, "platform-listen", ":8083", "address of the platform API, POST /api/v1/reconcile and GET /api/v1/reconcile/<id> (served only with --platform-token-secret)")
	fs.StringVar(&o.HookKeySecret, "hook-key-secret", "", "NAMESPACE/NAME of the Secret whose key \"token\" is the hook key: the per-repository and per-organization Bearer tokens of Actions workflows are derived from it (flux-webhook token)")
	fs.StringVar(&o.WebhookKeySecret, "webhook-key-secret", "", "NAMESPACE/NAME of the Secret whose key \"token\" is the HMAC key of native Gitea webhooks (their Secret field; X-Gitea-Signature): configured in Gitea only, never handed to a workflow")
	fs.StringVar(&o.SharedTokenSecret, "shared-token-secret", "", "COMPATIBILITY: NAMESPACE/NAME of the Secret whose key \"token\" is one Bearer token that speaks for EVERY repository (off without it; prefer --hook-key-secret)")
	fs.StringVar(&o.PlatformTokenSecret, "platform-token-secret", "", "NAMESPACE/NAME of the Secret whose key \"token\" authenticates the platform API (not served without it)")
	fs.DurationVar(&o.TokenGrace, "token-grace", 5*time.Minute, "how long a secret's previous value stays valid after the Secret changes")
	fs.BoolVar(&o.VerifyClaims, "verify-claims", true, "ask Gitea (--gitea-url) to confirm every push before acting on it: the repository's URLs, and that the reference is at the pushed commit")
	fs.StringSliceVar(&o.TrustedProxies, "trusted-proxies", nil, "address ranges (CIDR) of the proxies in front of /hook and the platform API (the ingress controller's pods, the Gateway's Envoy): a request from one of them is its client's, the address the proxy wrote into X-Forwarded-For, for the per-client budgets of failed authentications and signed reads; any other request is its TCP peer's, whatever its headers say (default: none, every client is its TCP peer)")
}

// secretRefs are the Secrets serve reads, parsed.
type secretRefs struct {
	hookKey, webhookKey, sharedToken, platformToken, giteaToken, recordKey types.NamespacedName
}

// giteaOptions configures where commit statuses go.
type giteaOptions struct {
	URL             string
	TokenSecret     string
	Timeout         time.Duration
	StatusTargetURL string

	targetURL *gitea.TargetURL // StatusTargetURL, parsed by validate
}

func (o *giteaOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.URL, "gitea-url", "", "Gitea base URL commit statuses are posted to, e.g. https://gitea.example.com (without it, results are only logged and recorded as Events)")
	fs.StringVar(&o.TokenSecret, "gitea-token-secret", "", "NAMESPACE/NAME of the Secret whose key \"token\" is the Gitea API token (scopes write:repository for statuses and to verify pushes; write:issue and read:user for pull request summaries, since only comments by the token's own user are its summaries; read:package for registry pushes; watched)")
	fs.DurationVar(&o.Timeout, "gitea-timeout", 10*time.Second, "timeout of each Gitea API call")
	fs.StringVar(&o.StatusTargetURL, "status-target-url", "", "the link of every commit status (Gitea's \"Details\"), a template of {"+strings.Join(gitea.TargetPlaceholders, "}, {")+"}, e.g. https://grafana.example.com/d/flux?var-cluster={cluster}&var-name={name} (default: Gitea's page of the commit, <gitea-url>/{repository}/commit/{commit})")
}

// reportOptions configures how Flux's answer is awaited and reported.
type reportOptions struct {
	ResultTimeout   time.Duration
	RecordKeySecret string
	MaxPushTargets  int
	Granularity     string
	AutoThreshold   int
}

func (o *reportOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.RecordKeySecret, "record-key-secret", "", "NAMESPACE/NAME of the Secret whose key \"token\" is the key request records on Flux objects are authenticated with (and \"previous\", during a rotation): a record flux-webhook did not write never makes it post (required)")
	fs.DurationVar(&o.ResultTimeout, "result-timeout", 10*time.Minute, "how long Flux has to answer before a target is reported as error")
	fs.StringVar(&o.Granularity, "status-granularity", string(request.Auto), "commit statuses per push: object (flux/<cluster>/<kind>/<namespace>/<name>, one per Flux object), cluster (flux/<cluster>, one per cluster: \"38/40 ready, 2 failed: ...\"), or auto (per object up to --status-auto-threshold objects, per cluster beyond)")
	fs.IntVar(&o.AutoThreshold, "status-auto-threshold", request.DefaultAutoThreshold, "with --status-granularity auto: the number of Flux objects a push feeds beyond which its statuses are per cluster")
	fs.IntVar(&o.MaxPushTargets, "max-push-targets", request.DefaultMaxTargets, "refuse (422) a push that feeds more Flux objects than this, across all clusters: a safety cap on the work one push makes")
}

// clusterOptions configures the clusters flux-webhook requests and watches: its own, and
// those registered by kubeconfig Secrets.
type clusterOptions struct {
	GitURLAliases      []string
	InsecureKubeconfig []string
	Name               string
	Region             string
	SecretsNamespace   string
	DefaultGrant       string
	QPS                float32
	Burst              int
	MaxObjects         int
	KindDiscovery      time.Duration
	JobQPS             float64
	JobBurst           int
}

func (o *clusterOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Name, "cluster-name", "local", "name of this cluster in commit status contexts (flux/<cluster>/<kind>/<namespace>/<name>)")
	fs.StringVar(&o.Region, "region", "", "region of this cluster, for region-wide reconciles")
	fs.StringVar(&o.SecretsNamespace, "cluster-secrets-namespace", "", "namespace whose Secrets labelled "+cluster.ClusterLabel+"=<name> register more clusters, by a kubeconfig under key kubeconfig or config (vcluster's vc-<name>), with an optional "+cluster.RegionLabel+" label; whoever may write Secrets there decides which API servers flux-webhook connects to (default: none, only this cluster)")
	fs.StringVar(&o.DefaultGrant, "cluster-default-repositories", "", "the repositories a registered cluster follows besides public ones when its Secret has no "+cluster.RepositoriesAnnotation+" annotation: owner/name, owner/* or *, comma-separated; "+cluster.ClusterPlaceholder+" stands for the cluster's name ("+cluster.ClusterPlaceholder+"/*: a cluster registered under an organization's name follows that organization's repositories). A cluster follows a push of another repository only if Gitea says it is public (default: none, public repositories only)")
	fs.StringSliceVar(&o.GitURLAliases, "git-url-alias", nil, "EXTERNAL=INTERNAL base URLs of one Gitea, e.g. https://gitea.example.com=http://gitea-http.gitea.svc:3000: pushes reporting the first also match GitRepositories fetching through the second (repeatable)")
	fs.StringSliceVar(&o.InsecureKubeconfig, "insecure-kubeconfig", nil, "allow registered clusters' kubeconfigs these refused categories: "+strings.Join(cluster.KubeconfigCategories, ", ")+" (each lets whoever writes a cluster Secret make flux-webhook run a program, read a file of its pod, skip TLS verification, call its own pod's, node's or cloud's metadata services, ...)")
	fs.Float32Var(&o.QPS, "cluster-qps", 50, "queries per second to each registered cluster's API")
	fs.IntVar(&o.Burst, "cluster-burst", 300, "burst of queries to each registered cluster's API")
	fs.IntVar(&o.MaxObjects, "cluster-max-objects", cluster.DefaultMaxObjects, "most Flux objects cached of one registered cluster: one holding more is counted before its objects are listed (or as they come) and not cached, refused as a cluster Secret is (log, flux_webhook_clusters_refused_total{reason=\"too-many-objects\"}, an Event on its Secret), and counted again every minute")
	fs.Float64Var(&o.JobQPS, "job-qps", jobs.DefaultQPS, "patches per second a platform job makes in each cluster: kept below the clients' QPS, so that pushes always have most of it")
	fs.IntVar(&o.JobBurst, "job-burst", jobs.DefaultBurst, "burst of a platform job's patches in each cluster")
	fs.DurationVar(&o.KindDiscovery, "kind-discovery-interval", time.Minute, "how often each cluster is asked which Flux kinds it serves: a Flux CRD installed later is used from then on, without a restart")
}

// probeOptions configures health, metrics, leader election and the service's own namespace.
type probeOptions struct {
	Namespace               string
	HealthListen            string
	MetricsListen           string
	PprofListen             string
	LeaderElect             bool
	LeaderElectionNamespace string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	RetryPeriod             time.Duration
}

func (o *probeOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Namespace, "namespace", "", "the service's own namespace, of its leader election Lease, push records and platform jobs (default: $POD_NAMESPACE, else that of the first given of --hook-key-secret, --webhook-key-secret, --shared-token-secret)")
	fs.StringVar(&o.HealthListen, "health-listen", ":8081", "address of GET /healthz and GET /readyz, ready when its checks pass: caches (this cluster's caches synced), flux-kinds (no Flux kind this cluster serves only at an API version flux-webhook does not read), hook-credentials (a /hook credential usable), record-key (the record key usable); /readyz?verbose lists them")
	fs.StringVar(&o.MetricsListen, "metrics-listen", ":8082", "address of Prometheus GET /metrics (\"0\" disables it)")
	fs.StringVar(&o.PprofListen, "pprof-listen", "0", "address of Go's profiles, GET /debug/pprof/ (heap, goroutine, profile…), for diagnosing memory and CPU; unauthenticated, so keep it on localhost (\"0\", the default, disables it)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "elect one replica to post results (all replicas serve /hook)")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (default: --namespace)")
	fs.DurationVar(&o.LeaseDuration, "leader-election-lease-duration", 15*time.Second, "how long a replica waits for a silent leader's lease before taking over")
	fs.DurationVar(&o.RenewDeadline, "leader-election-renew-deadline", 10*time.Second, "how long the leader tries to renew its lease before giving it up")
	fs.DurationVar(&o.RetryPeriod, "leader-election-retry-period", 2*time.Second, "how often replicas try to acquire or renew the lease")
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// validate checks the options of serve and returns the parsed Secret references.
func (o *serveOptions) validate() (secretRefs, error) {
	var refs secretRefs
	if o.hook.HookKeySecret == "" && o.hook.WebhookKeySecret == "" && o.hook.SharedTokenSecret == "" {
		return refs, fmt.Errorf("%w: nothing could authenticate /hook: give --hook-key-secret (Actions workflows), --webhook-key-secret (native Gitea webhooks), or both", errUsage)
	}
	seen := map[types.NamespacedName]string{}
	for _, s := range []struct {
		flag, value string
		ref         *types.NamespacedName
	}{
		{"--hook-key-secret", o.hook.HookKeySecret, &refs.hookKey},
		{"--webhook-key-secret", o.hook.WebhookKeySecret, &refs.webhookKey},
		{"--shared-token-secret", o.hook.SharedTokenSecret, &refs.sharedToken},
		{"--platform-token-secret", o.hook.PlatformTokenSecret, &refs.platformToken},
		{"--gitea-token-secret", o.gitea.TokenSecret, &refs.giteaToken},
		{"--record-key-secret", o.report.RecordKeySecret, &refs.recordKey},
	} {
		if s.value == "" {
			continue
		}
		ref, err := credentials.ParseSecretRef(s.value)
		if err != nil {
			return refs, fmt.Errorf("%w: %s: %v", errUsage, s.flag, err)
		}
		// One Secret, one purpose: the same value for two would be refused anyway.
		if other, dup := seen[ref]; dup {
			return refs, fmt.Errorf("%w: %s and %s name the same Secret %s: each secret serves one purpose", errUsage, other, s.flag, ref)
		}
		seen[ref] = s.flag
		*s.ref = ref
	}
	if o.report.RecordKeySecret == "" {
		return refs, fmt.Errorf("%w: --record-key-secret is required: request records are authenticated with its key", errUsage)
	}
	if o.gitea.URL != "" {
		u, err := url.Parse(o.gitea.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return refs, fmt.Errorf("%w: --gitea-url %q: want http(s)://host[/path]", errUsage, o.gitea.URL)
		}
		if o.gitea.TokenSecret == "" {
			return refs, fmt.Errorf("%w: --gitea-url needs --gitea-token-secret", errUsage)
		}
	}
	if o.gitea.StatusTargetURL != "" {
		if o.gitea.URL == "" {
			return refs, fmt.Errorf("%w: --status-target-url needs --gitea-url: without it no status is posted", errUsage)
		}
		t, err := gitea.ParseTargetURL(o.gitea.StatusTargetURL)
		if err != nil {
			return refs, fmt.Errorf("%w: --status-target-url %q: %v", errUsage, o.gitea.StatusTargetURL, err)
		}
		o.gitea.targetURL = t
	}
	if !dnsLabel.MatchString(o.cluster.Name) {
		return refs, fmt.Errorf("%w: --cluster-name %q: want a DNS label (a-z, 0-9, '-')", errUsage, o.cluster.Name)
	}
	if o.cluster.Region != "" && !dnsLabel.MatchString(o.cluster.Region) {
		return refs, fmt.Errorf("%w: --region %q: want a DNS label (a-z, 0-9, '-')", errUsage, o.cluster.Region)
	}
	for _, a := range o.cluster.GitURLAliases {
		if _, err := flux.ParseAlias(a); err != nil {
			return refs, fmt.Errorf("%w: --git-url-alias: %v", errUsage, err)
		}
	}
	if err := cluster.CheckDefaultGrant(o.cluster.DefaultGrant); err != nil {
		return refs, fmt.Errorf("%w: --cluster-default-repositories: %v", errUsage, err)
	}
	proxies, err := server.ParseTrustedProxies(o.hook.TrustedProxies)
	if err != nil {
		return refs, fmt.Errorf("%w: --trusted-proxies: %v", errUsage, err)
	}
	o.hook.trustedProxies = proxies
	if _, err := cluster.ParseKubeconfigPolicy(o.cluster.InsecureKubeconfig); err != nil {
		return refs, fmt.Errorf("%w: --insecure-kubeconfig: %v", errUsage, err)
	}
	if !slices.Contains(request.Granularities, request.Granularity(o.report.Granularity)) {
		return refs, fmt.Errorf("%w: --status-granularity %q: want object, cluster or auto", errUsage, o.report.Granularity)
	}
	if o.report.AutoThreshold < 1 {
		return refs, fmt.Errorf("%w: --status-auto-threshold must be positive", errUsage)
	}
	if o.report.MaxPushTargets < 1 {
		return refs, fmt.Errorf("%w: --max-push-targets must be positive", errUsage)
	}
	if o.cluster.JobQPS <= 0 || o.cluster.JobBurst <= 0 {
		return refs, fmt.Errorf("%w: --job-qps and --job-burst must be positive", errUsage)
	}
	if o.cluster.KindDiscovery < time.Second {
		return refs, fmt.Errorf("%w: --kind-discovery-interval must be at least 1s", errUsage)
	}
	if o.cluster.MaxObjects < 1 {
		return refs, fmt.Errorf("%w: --cluster-max-objects must be positive", errUsage)
	}
	if o.cluster.QPS <= 0 || o.cluster.Burst <= 0 || o.kube.QPS <= 0 || o.kube.Burst <= 0 {
		return refs, fmt.Errorf("%w: --kube-qps, --kube-burst, --cluster-qps and --cluster-burst must be positive", errUsage)
	}
	if !(o.probe.LeaseDuration > o.probe.RenewDeadline && o.probe.RenewDeadline > o.probe.RetryPeriod && o.probe.RetryPeriod > 0) {
		return refs, fmt.Errorf("%w: want --leader-election-lease-duration > --leader-election-renew-deadline > --leader-election-retry-period > 0", errUsage)
	}
	for name, d := range map[string]time.Duration{"--token-grace": o.hook.TokenGrace, "--result-timeout": o.report.ResultTimeout, "--gitea-timeout": o.gitea.Timeout} {
		if d <= 0 && !(name == "--token-grace" && d == 0) {
			return refs, fmt.Errorf("%w: %s must be positive", errUsage, name)
		}
	}
	for name, addr := range map[string]string{"--listen": o.hook.Listen, "--platform-listen": o.hook.PlatformListen, "--health-listen": o.probe.HealthListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return refs, fmt.Errorf("%w: %s %q: want [host]:port", errUsage, name, addr)
		}
	}
	return refs, nil
}
