package middleware_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
)

// TestTracingThroughTheOutbox follows one trace from a request that writes
// an event in its transaction, through the outbox relay and the broker, to
// the handler: request → create placed → send placed → process q.
func TestTracingThroughTheOutbox(t *testing.T) {
	e := newPGEnv(t) // for its pool and schema; the broker is the memory transport
	ctx := context.Background()
	store, err := pgxstore.New(e.pool, pgxstore.Config{Schema: e.schema})
	must(t, err)
	must(t, store.Migrate(ctx))

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := newTransport(t)
	pub, err := middleware.NewPublisher(tr, middleware.TracingConfig{TracerProvider: tp})
	must(t, err)
	tracing := mustMW(t)(middleware.Tracing(middleware.TracingConfig{TracerProvider: tp}))
	app := newApp(t, tr, pub, tracing)
	handled := make(chan struct{})
	must(t, eda.Handle(app, "q", func(ctx context.Context, ev placed) error { close(handled); return nil }))
	start(t, app)

	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: store, Publisher: pub})
	must(t, err)
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(rctx) }()
	t.Cleanup(func() { stopRelay(); <-relayDone })

	enc, err := middleware.NewEncoder(app, middleware.TracingConfig{TracerProvider: tp})
	must(t, err)
	reqCtx, root := tp.Tracer("test").Start(ctx, "request")
	must(t, pgx.BeginFunc(reqCtx, e.pool, func(tx pgx.Tx) error {
		return store.Write(reqCtx, tx, enc, placed{ID: "1"})
	}))
	root.End()
	<-handled

	spans := map[string]sdktrace.ReadOnlySpan{}
	eventually(t, "four spans ended", func() bool {
		for _, s := range rec.Ended() {
			spans[s.Name()] = s
		}
		return len(spans) >= 4
	})
	chain := []string{"request", "create placed", "send placed", "process q"}
	for i, name := range chain {
		s, ok := spans[name]
		if !ok {
			t.Fatalf("no span %q among %v", name, keys(spans))
		}
		if s.SpanContext().TraceID() != spans["request"].SpanContext().TraceID() {
			t.Errorf("%s: another trace", name)
		}
		if i > 0 && s.Parent().SpanID() != spans[chain[i-1]].SpanContext().SpanID() {
			t.Errorf("%s: parent is not %s", name, chain[i-1])
		}
	}
}
