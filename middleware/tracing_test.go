package middleware_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

// TestTracingSpansPublishToHandler follows one trace across two hops:
// request → send placed → process warehouse → send shipped → process mailer.
func TestTracingSpansPublishToHandler(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := newTransport(t)
	pub, err := middleware.NewPublisher(tr, middleware.TracingConfig{TracerProvider: tp})
	must(t, err)
	tracing := mustMW(t)(middleware.Tracing(middleware.TracingConfig{TracerProvider: tp}))
	app := newApp(t, tr, pub, tracing, middleware.Recover)
	done := make(chan struct{})
	must(t, eda.Handle(app, "warehouse", func(ctx context.Context, e placed) error {
		return app.Publish(ctx, shipped(e))
	}))
	must(t, eda.Handle(app, "mailer", func(ctx context.Context, e shipped) error {
		if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
			t.Error("no span in the handler context")
		}
		close(done)
		return nil
	}))
	start(t, app)
	ctx, root := tp.Tracer("test").Start(context.Background(), "request")
	must(t, app.Publish(ctx, placed{ID: "1"}))
	root.End()
	<-done
	drained(t, tr, "mailer")

	spans := map[string]sdktrace.ReadOnlySpan{}
	eventually(t, "five spans ended", func() bool {
		for _, s := range rec.Ended() {
			spans[s.Name()] = s
		}
		return len(spans) >= 5
	})
	chain := []struct {
		name string
		kind trace.SpanKind
	}{
		{"request", trace.SpanKindInternal},
		{"send placed", trace.SpanKindProducer},
		{"process warehouse", trace.SpanKindConsumer},
		{"send shipped", trace.SpanKindProducer},
		{"process mailer", trace.SpanKindConsumer},
	}
	for i, c := range chain {
		s, ok := spans[c.name]
		if !ok {
			t.Fatalf("no span %q among %v", c.name, keys(spans))
		}
		if s.SpanKind() != c.kind {
			t.Errorf("%s: kind %v, want %v", c.name, s.SpanKind(), c.kind)
		}
		if s.SpanContext().TraceID() != spans["request"].SpanContext().TraceID() {
			t.Errorf("%s: another trace", c.name)
		}
		if i > 0 && s.Parent().SpanID() != spans[chain[i-1].name].SpanContext().SpanID() {
			t.Errorf("%s: parent %v, want %s", c.name, s.Parent().SpanID(), chain[i-1].name)
		}
	}
	attrs := attribute.NewSet(spans["process mailer"].Attributes()...)
	if v, _ := attrs.Value("messaging.destination.name"); v.AsString() != "mailer" {
		t.Errorf("process span attributes %v", spans["process mailer"].Attributes())
	}
	if spans["process mailer"].Status().Code == codes.Error {
		t.Error("successful handling has error status")
	}
}

func TestTracingRecordsFailure(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	stack, err := middleware.Default(middleware.Config{
		TracerProvider: tp,
		Poison:         &middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic},
	})
	must(t, err)
	app := newApp(t, tr, nil, stack...)
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error { return eda.Permanent(errFlaky) }))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	receive(t, poisoned)
	var span sdktrace.ReadOnlySpan
	eventually(t, "the process span", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "process q" {
				span = s
				return true
			}
		}
		return false
	})
	attrs := attribute.NewSet(span.Attributes()...)
	if v, _ := attrs.Value("eda.poison_reason"); v.AsString() != "permanent" || span.Status().Code != codes.Error {
		t.Errorf("span status %v, attributes %v", span.Status(), span.Attributes())
	}
}

func TestMetadataCarrier(t *testing.T) {
	md := map[string]string{"ce_id": "x"}
	c := middleware.MetadataCarrier(md)
	c.Set("traceparent", "00-abc")
	if md["ce_traceparent"] != "00-abc" || c.Get("traceparent") != "00-abc" || c.Get("TraceParent") != "00-abc" {
		t.Errorf("carrier %v", md)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
