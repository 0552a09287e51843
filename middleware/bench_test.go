package middleware_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

// stacks are the middleware sets the benchmarks compare.
func benchStacks(b *testing.B, pub message.Publisher) map[string][]message.HandlerMiddleware {
	def, err := middleware.Default(middleware.Config{
		Poison: &middleware.PoisonConfig{Publisher: pub, Topic: poisonTopic},
	})
	if err != nil {
		b.Fatal(err)
	}
	full, err := middleware.Default(middleware.Config{
		Poison:         &middleware.PoisonConfig{Publisher: pub, Topic: poisonTopic},
		Timeout:        middleware.TimeoutConfig{Default: time.Minute},
		Limit:          &middleware.LimitConfig{MaxConcurrent: 64},
		TracerProvider: noop.NewTracerProvider(),
		Metrics:        prometheus.NewRegistry(),
	})
	if err != nil {
		b.Fatal(err)
	}
	wmPoison, err := wmw.PoisonQueue(pub, poisonTopic)
	if err != nil {
		b.Fatal(err)
	}
	watermill := []message.HandlerMiddleware{
		wmPoison,
		wmw.Retry{MaxRetries: 2, InitialInterval: 100 * time.Millisecond, Multiplier: 2, MaxInterval: 5 * time.Second}.Middleware,
		wmw.Timeout(time.Minute),
		wmw.Recoverer,
	}
	return map[string][]message.HandlerMiddleware{
		"none":      nil,
		"default":   def,
		"full":      full, // default + timeout, limit, noop tracing, metrics
		"watermill": watermill,
	}
}

// BenchmarkHandle publishes b.N events through an eda.App on the memory
// transport and waits until all are handled: the per-message cost end to
// end, with each middleware stack.
//
//	go test -run '^$' -bench 'Handle|Chain' -benchmem ./middleware/
func BenchmarkHandle(b *testing.B) {
	for _, name := range []string{"none", "default", "full", "watermill"} {
		b.Run(name, func(b *testing.B) {
			tr := newTransport(b)
			app := newApp(b, tr, nil, benchStacks(b, tr)[name]...)
			var handled atomic.Int64
			all := make(chan struct{})
			target := int64(b.N)
			must(b, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
				if handled.Add(1) == target {
					close(all)
				}
				return nil
			}))
			start(b, app)
			ctx := context.Background()
			ev := placed{ID: "o-1"}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := app.Publish(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
			<-all
		})
	}
}

// BenchmarkChain calls each stack directly on one message: the
// middleware's own cost, without transport or router.
func BenchmarkChain(b *testing.B) {
	tr := newTransport(b)
	for _, name := range []string{"none", "default", "full", "watermill"} {
		b.Run(name, func(b *testing.B) {
			var h message.HandlerFunc = func(*message.Message) ([]*message.Message, error) { return nil, nil }
			stack := benchStacks(b, tr)[name]
			for i := len(stack) - 1; i >= 0; i-- {
				h = stack[i](h)
			}
			msg := message.NewMessage("m-1", []byte(`{"id":"o-1"}`))
			msg.Metadata = message.Metadata{eda.MetadataID: "m-1", eda.MetadataType: "test.Placed"}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				msg.SetContext(ctx)
				if _, err := h(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
