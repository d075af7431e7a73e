// Package tracing is flux-webhook's OpenTelemetry tracing: off unless the standard
// OTEL_EXPORTER_OTLP_* environment names where to send traces, then one trace per push, from
// /hook through the intake, the leader's requests in each cluster and the statuses posted.
//
// A push crosses processes and time: it is accepted by any replica, requested later by the
// leader's worker, reported later still by the leader's reporters (possibly another leader
// after a takeover). The trace context travels with the push's own records (record.Request
// carries it as a W3C traceparent), so each stage continues the trace the previous one left
// there. The rest of the code sees only Start, StartFrom, Carry and End.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// instrumentation names flux-webhook's tracer (the instrumentation scope of its spans).
const instrumentation = "github.com/openova-io/flux-webhook"

// FlushTimeout bounds the export of the spans still buffered when the service stops: after
// the manager's own 25 s, inside Kubernetes' default 30 s termination grace period.
const FlushTimeout = 3 * time.Second

// The environment that turns tracing on and picks the exporter (the OpenTelemetry
// specification's names; the exporters read the rest of OTEL_EXPORTER_OTLP_*: headers,
// timeout, compression, certificates).
const (
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envExporter       = "OTEL_TRACES_EXPORTER"
	envDisabled       = "OTEL_SDK_DISABLED"
)

// Attribute keys of flux-webhook's own (the rest are OpenTelemetry's semantic conventions).
const (
	// DeliveryKey is the delivery id of the push: the sender's (X-Gitea-Delivery), else
	// the one flux-webhook gave the request. It is what the logs, the answer, the Events
	// and the records name the push by.
	DeliveryKey = attribute.Key("flux_webhook.delivery")
	// ContextKey is a commit status's context (flux/<cluster>/<kind>/<ns>/<name>).
	ContextKey = attribute.Key("flux_webhook.status.context")
	// StateKey is a commit status's state (pending, success, failure, error, warning).
	StateKey = attribute.Key("flux_webhook.status.state")
	// TargetsKey is how many Flux objects a push matched.
	TargetsKey = attribute.Key("flux_webhook.targets")
	// PrincipalKey is who a request authenticated as.
	PrincipalKey = attribute.Key("flux_webhook.principal")
)

// Config says whether and where traces are exported, as the environment asks.
type Config struct {
	Enabled bool
	// Protocol is "http/protobuf" (the specification's default) or "grpc".
	Protocol string
}

// String says where traces go, for the log: "off", or "otlp " and the protocol.
func (c Config) String() string {
	if !c.Enabled {
		return "off"
	}
	return "otlp " + c.Protocol
}

// FromEnv reads the configuration from the environment (getenv, os.Getenv when nil).
// Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is
// set, or OTEL_TRACES_EXPORTER is "otlp" (then to the default endpoint, localhost:4318, or
// :4317 for grpc); off by default, with OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true.
func FromEnv(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if strings.EqualFold(strings.TrimSpace(getenv(envDisabled)), "true") {
		return Config{}, nil
	}
	on := getenv(envEndpoint) != "" || getenv(envTracesEndpoint) != ""
	switch e := strings.TrimSpace(getenv(envExporter)); e {
	case "":
	case "none":
		return Config{}, nil
	case "otlp":
		on = true
	default:
		return Config{}, fmt.Errorf("%s=%q: flux-webhook exports traces with otlp only (or none)", envExporter, e)
	}
	if !on {
		return Config{}, nil
	}
	proto := getenv(envTracesProtocol)
	if proto == "" {
		proto = getenv(envProtocol)
	}
	switch proto {
	case "", "http/protobuf":
		proto = "http/protobuf"
	case "grpc":
	default:
		return Config{}, fmt.Errorf("OTLP protocol %q: want http/protobuf or grpc", proto)
	}
	return Config{Enabled: true, Protocol: proto}, nil
}

// Setup installs, when cfg is enabled, a tracer provider exporting to the OTLP endpoint of
// the environment in batches, and the W3C trace-context propagator (so /hook continues a
// caller's traceparent); service.name is flux-webhook unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise, sampling is OTEL_TRACES_SAMPLER's (parent-based,
// always on by default). Export failures go to logger. The returned function flushes and
// stops the provider; with tracing off it does nothing, and so do the spans.
func Setup(ctx context.Context, cfg Config, version string, logger logr.Logger) (shutdown func(context.Context) error, err error) {
	if !cfg.Enabled {
		return func(context.Context) error { return nil }, nil
	}
	var exp sdktrace.SpanExporter
	switch cfg.Protocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("flux-webhook"), semconv.ServiceVersion(version)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetLogger(logger)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { logger.Error(err, "tracing failed") }))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	return tp.Shutdown, nil
}

// tracer is flux-webhook's; it follows the provider Setup installs (a no-op one until then).
var tracer = otel.Tracer(instrumentation)

// Start starts a span under ctx's (a new trace when ctx has none).
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// StartServer starts the span of a request served, continuing the caller's trace when the
// headers carry one (W3C traceparent, with tracing on).
func StartServer(ctx context.Context, h http.Header, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(h))
	return tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// StartFrom starts a span continuing the trace carried (Carry's value, from a record): work
// picked up later, or by another replica, joins its push's trace. Without a carried context
// (a push accepted with tracing off, a record from before) no span is made: ctx is returned
// with a span that records nothing.
func StartFrom(ctx context.Context, carried, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
		propagation.MapCarrier{traceparent: carried}))
	if !parent.IsValid() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return tracer.Start(trace.ContextWithRemoteSpanContext(ctx, parent), name, trace.WithAttributes(attrs...))
}

// traceparent is the W3C header Carry's value is.
const traceparent = "traceparent"

// Carry returns the W3C traceparent of ctx's span, for a record to carry to the stage that
// continues it (StartFrom); "" when ctx has no span being recorded (tracing off, or the
// trace not sampled: nothing to continue).
func Carry(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c[traceparent]
}

// TraceID returns the id of ctx's trace, for the logs, "" when none is recorded.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return ""
	}
	return sc.TraceID().String()
}

// End ends span, recording err (nil: the work succeeded).
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Push returns the attributes naming a push: its delivery, repository, reference and commit
// (OpenTelemetry's vcs.* conventions).
func Push(delivery, repository, ref, sha string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{DeliveryKey.String(delivery)}
	if repository != "" {
		attrs = append(attrs, semconv.VCSRepositoryName(repository))
	}
	if ref != "" {
		attrs = append(attrs, semconv.VCSRefHeadName(ref))
	}
	if sha != "" {
		attrs = append(attrs, semconv.VCSRefHeadRevision(sha))
	}
	return attrs
}

// Cluster is the attribute naming a cluster.
func Cluster(name string) attribute.KeyValue { return semconv.K8SClusterName(name) }
