package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport/memory"
)

type OrderPlaced struct {
	ID string `json:"id"`
}

func (OrderPlaced) EventName() string { return "shop.OrderPlaced" }

// A service gets retries, poison routing, recovery and logging with one
// option. Billing fails twice and succeeds on its third in-process attempt;
// shipping fails permanently and its message goes to the poison queue with
// the reason.
func ExampleDefault() {
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond},
		Poison: &middleware.PoisonConfig{Publisher: tr, Topic: "poison"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	app, _ := eda.New(eda.Config{Transport: tr, Middleware: stack})
	_ = eda.Register[OrderPlaced](app, "orders")
	_ = app.DeclareQueue(middleware.PoisonQueue("poison-q", "poison"))

	attempts := 0
	billed := make(chan struct{})
	_ = eda.Handle(app, "billing", func(ctx context.Context, e OrderPlaced) error {
		if attempts++; attempts < 3 {
			return errors.New("payment provider timeout") // transient: retried
		}
		close(billed)
		return nil
	})
	_ = eda.Handle(app, "shipping", func(ctx context.Context, e OrderPlaced) error {
		return eda.Permanent(fmt.Errorf("no address for order %s", e.ID))
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	poisoned, _ := tr.Subscribe(ctx, "poison-q")
	_ = app.Publish(ctx, OrderPlaced{ID: "o-1"})

	<-billed
	fmt.Println("billed after", attempts, "attempts")
	msg := <-poisoned
	msg.Ack()
	md := msg.Metadata
	fmt.Println("poisoned from", md.Get(middleware.MetadataPoisonQueue)+":",
		md.Get(middleware.MetadataPoisonReason), "-", md.Get(middleware.MetadataPoisonError))
	cancel()
	<-done
	// Output:
	// billed after 3 attempts
	// poisoned from shipping: permanent - no address for order o-1
}

func ExampleRetry() {
	retry, _ := middleware.Retry(middleware.RetryConfig{MaxAttempts: 5, InitialInterval: time.Millisecond})
	calls := 0
	h := retry(func(msg *message.Message) ([]*message.Message, error) {
		if calls++; calls < 3 {
			return nil, errors.New("connection reset")
		}
		return nil, nil
	})
	_, err := h(message.NewMessage("m-1", nil))
	fmt.Println(calls, err)

	calls = 0
	h = retry(func(msg *message.Message) ([]*message.Message, error) {
		calls++
		return nil, eda.Permanent(errors.New("invalid order"))
	})
	_, err = h(message.NewMessage("m-2", nil))
	fmt.Println(calls, err)
	// Output:
	// 3 <nil>
	// 1 invalid order
}

// Poison publishes the message with why it failed, then acks it.
func ExamplePoison() {
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	ctx := context.Background()
	q := middleware.PoisonQueue("poison-q", "poison")
	_ = tr.Declare(ctx, q.Queue)
	poisoned, _ := tr.Subscribe(ctx, "poison-q")

	poison, _ := middleware.Poison(middleware.PoisonConfig{Publisher: tr, Topic: "poison"})
	h := poison(func(msg *message.Message) ([]*message.Message, error) {
		return nil, eda.Permanent(errors.New("unknown customer"))
	})
	msg := message.NewMessage("m-1", []byte(`{"id":"o-1"}`))
	_, err := h(msg)
	fmt.Println("handler result:", err)
	p := <-poisoned
	p.Ack()
	fmt.Println(p.Metadata.Get(middleware.MetadataPoisonReason), p.Metadata.Get(middleware.MetadataPoisonError), string(p.Payload))
	// Output:
	// handler result: <nil>
	// permanent unknown customer {"id":"o-1"}
}

func ExampleRecover() {
	h := middleware.Recover(func(msg *message.Message) ([]*message.Message, error) {
		var m map[string]int
		m["x"]++
		return nil, nil
	})
	_, err := h(message.NewMessage("m-1", nil))
	var pe *middleware.PanicError
	fmt.Println(errors.Is(err, middleware.ErrPanic), errors.As(err, &pe) && len(pe.Stack) > 0)
	// Output: true true
}

func ExampleTimeout() {
	timeout, _ := middleware.Timeout(middleware.TimeoutConfig{Default: 10 * time.Millisecond})
	h := timeout(func(msg *message.Message) ([]*message.Message, error) {
		<-msg.Context().Done()
		return nil, msg.Context().Err()
	})
	_, err := h(message.NewMessage("m-1", nil))
	fmt.Println(err)
	// Output: eda: handler timed out after 10ms: context deadline exceeded
}

func ExampleNewLimiter() {
	lim, _ := middleware.NewLimiter(middleware.LimitConfig{MaxConcurrent: 8, Rate: 1000})
	stack, _ := middleware.Default(middleware.Config{})
	// Add it inside Retry, or pass Config.Limit to Default, which does.
	stack = append(stack[:len(stack)-1], lim.Middleware, stack[len(stack)-1])
	fmt.Println(len(stack))
	// Output: 5
}

func ExampleLogging() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == "time" || a.Key == "duration" {
				return slog.Attr{}
			}
			return a
		},
	}))
	h := middleware.Logging(logger)(func(msg *message.Message) ([]*message.Message, error) {
		return nil, errors.New("db down")
	})
	msg := message.NewMessage("m-1", nil)
	msg.Metadata.Set(eda.MetadataID, "evt-1")
	_, _ = h(msg)
	// Output:
	// level=ERROR msg="eda: handler failed" event_id=evt-1 event_type="" correlation_id="" queue="" handler="" receive_count="" attempts=1 error="db down" permanent=false shutdown=false
}

// Tracing and NewPublisher carry one trace from publisher to handler.
func ExampleTracing() {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	pub, _ := middleware.NewPublisher(tr, middleware.TracingConfig{TracerProvider: tp})
	tracing, _ := middleware.Tracing(middleware.TracingConfig{TracerProvider: tp})
	app, _ := eda.New(eda.Config{Transport: tr, Publisher: pub, Middleware: []message.HandlerMiddleware{tracing}})
	_ = eda.Register[OrderPlaced](app, "orders")
	handled := make(chan struct{})
	_ = eda.Handle(app, "billing", func(ctx context.Context, e OrderPlaced) error { close(handled); return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	_ = app.Publish(ctx, OrderPlaced{ID: "o-1"})
	<-handled
	cancel()
	<-done
	var spans []string
	for _, s := range rec.Ended() {
		spans = append(spans, s.Name()+" ("+s.SpanKind().String()+")")
	}
	slices.Sort(spans)
	fmt.Println(strings.Join(spans, "\n"))
	// Output:
	// process billing (consumer)
	// send orders (producer)
}

func ExampleNewMetrics() {
	reg := prometheus.NewRegistry()
	m, _ := middleware.NewMetrics(middleware.MetricsConfig{Registerer: reg})
	h := m.Middleware(func(msg *message.Message) ([]*message.Message, error) { return nil, nil })
	_, _ = h(message.NewMessage("m-1", nil))
	fmt.Println(testutil.CollectAndCount(reg, "eda_messages_handled_total"))
	// Output: 1
}

// IsUnavailable tells the breaker a dependency is down; a failure of the
// message itself is not.
func ExampleIsUnavailable() {
	_, err := net.Dial("tcp", "127.0.0.1:1") // nothing listens there
	fmt.Println(middleware.IsUnavailable(fmt.Errorf("reserve stock: %w", err)))
	fmt.Println(middleware.IsUnavailable(errors.New("out of stock")))
	// Output:
	// true
	// false
}
