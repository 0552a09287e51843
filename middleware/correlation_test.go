package middleware_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

// TestCorrelationThroughTheStack: eda sets correlation and causation ids
// from the handler context in Publish; the middleware, which replace the
// message context (Tracing, Timeout, Retry), must not break that.
func TestCorrelationThroughTheStack(t *testing.T) {
	tr := newTransport(t)
	stack, err := middleware.Default(middleware.Config{
		TracerProvider: trace.NewTracerProvider(),
		Timeout:        middleware.TimeoutConfig{Default: time.Minute},
		Limit:          &middleware.LimitConfig{MaxConcurrent: 4},
	})
	must(t, err)
	pub, err := middleware.NewPublisher(tr, middleware.TracingConfig{})
	must(t, err)
	app := newApp(t, tr, pub, stack...)
	parents := make(chan eda.Envelope, 1)
	children := make(chan eda.Envelope, 1)
	must(t, eda.Handle(app, "warehouse", func(ctx context.Context, e placed) error {
		env, _ := eda.EnvelopeFromContext(ctx)
		parents <- env
		return app.Publish(ctx, shipped(e))
	}))
	must(t, eda.Handle(app, "mailer", func(ctx context.Context, e shipped) error {
		env, _ := eda.EnvelopeFromContext(ctx)
		children <- env
		return nil
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	parent, child := <-parents, <-children
	if parent.CorrelationID != parent.ID || child.CorrelationID != parent.ID || child.CausationID != parent.ID {
		t.Errorf("parent %+v child %+v", parent, child)
	}
}
