package tracing

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string // Config.String(), or the error's start
	}{
		{"off by default", nil, "off"},
		{"endpoint", map[string]string{envEndpoint: "http://collector:4318"}, "otlp http/protobuf"},
		{"traces endpoint", map[string]string{envTracesEndpoint: "http://collector:4318/v1/traces"}, "otlp http/protobuf"},
		{"grpc", map[string]string{envEndpoint: "http://collector:4317", envProtocol: "grpc"}, "otlp grpc"},
		{"traces protocol wins", map[string]string{envEndpoint: "x", envProtocol: "grpc", envTracesProtocol: "http/protobuf"}, "otlp http/protobuf"},
		{"exporter otlp, default endpoint", map[string]string{envExporter: "otlp"}, "otlp http/protobuf"},
		{"exporter none", map[string]string{envEndpoint: "x", envExporter: "none"}, "off"},
		{"sdk disabled", map[string]string{envEndpoint: "x", envDisabled: "true"}, "off"},
		{"protocol only", map[string]string{envProtocol: "grpc"}, "off"},
		{"other exporter", map[string]string{envExporter: "zipkin"}, "error: OTEL_TRACES_EXPORTER"},
		{"json", map[string]string{envEndpoint: "x", envProtocol: "http/json"}, "error: OTLP protocol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromEnv(func(k string) string { return tc.env[k] })
			got := c.String()
			if err != nil {
				got = "error: " + err.Error()
			}
			if !strings.HasPrefix(got, tc.want) {
				t.Fatalf("%v: %q, want %q", tc.env, got, tc.want)
			}
		})
	}
}

// Off, Setup installs nothing: no provider, no propagator (a caller's traceparent is not
// read, so nothing is carried in records).
func TestSetupOff(t *testing.T) {
	before := otel.GetTracerProvider()
	stop, err := Setup(t.Context(), Config{}, "test", logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer stop(context.Background())
	if otel.GetTracerProvider() != before || len(otel.GetTextMapPropagator().Fields()) != 0 {
		t.Fatal("tracing off installed a provider or a propagator")
	}
}

var recorder = tracetest.NewSpanRecorder()

func TestMain(m *testing.M) {
	// The package's tracer follows the first provider installed: this one.
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder)))
	os.Exit(m.Run())
}

// A trace carried through a record is continued by the stage that reads it: same trace,
// the carrier's span as parent. Nothing, or garbage, carried starts no span.
func TestCarryAndContinue(t *testing.T) {
	ctx, intake := Start(t.Context(), "intake.accept", Push("d-1", "org/app", "refs/heads/main", "abc")...)
	carried := Carry(ctx)
	intake.End()
	if !strings.HasPrefix(carried, "00-"+intake.SpanContext().TraceID().String()+"-"+intake.SpanContext().SpanID().String()) {
		t.Fatalf("carried %q", carried)
	}
	_, worker := StartFrom(context.Background(), carried, "request.cluster", Cluster("eu-1"))
	End(worker, errors.New("cluster down"))
	var got sdktrace.ReadOnlySpan
	for _, s := range recorder.Ended() {
		if s.Name() == "request.cluster" {
			got = s
		}
	}
	if got == nil || got.SpanContext().TraceID() != intake.SpanContext().TraceID() || got.Parent().SpanID() != intake.SpanContext().SpanID() ||
		!got.Parent().IsRemote() || got.Status().Description != "cluster down" {
		t.Fatalf("continued span %+v", got)
	}
	for _, c := range []string{"", "00-zz-yy-01", "00-00000000000000000000000000000000-0000000000000000-01"} {
		ctx, span := StartFrom(context.Background(), c, "report.status")
		if span.IsRecording() || trace.SpanContextFromContext(ctx).IsValid() {
			t.Fatalf("carried %q: a span", c)
		}
	}
}
