package middleware

import (
	"errors"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Config configures the stack Default builds. Only Retry, Recover and
// Logging are always in it; each other part is in when configured.
type Config struct {
	// Logger receives one record per delivery (Logging) and per retry and
	// poisoned message. Nil discards.
	Logger *slog.Logger
	// Retry configures in-process retries; the zero value gives the
	// defaults. Set Retry.Redelivery (&RedeliveryConfig{} for the default
	// schedule) to delay the broker's redeliveries once they are spent.
	Retry RetryConfig
	// Poison, when set, moves messages that fail for good to a poison
	// topic; its Logger defaults to Logger. Without it a permanent error
	// is nacked like any other, left to the queue's redrive policy.
	Poison *PoisonConfig
	// Breaker holds a handler's messages while a dependency is unavailable
	// instead of spending their deliveries (see Breaker); the zero value
	// is on with the defaults, Off leaves it out. Its Logger defaults to
	// Logger.
	Breaker BreakerConfig
	// Timeout bounds each handler call; the zero value sets no bound.
	Timeout TimeoutConfig
	// Limit, when set, caps concurrency and rate over every handler.
	Limit *LimitConfig
	// TracerProvider, when set, adds Tracing (Propagator defaults to W3C
	// trace context).
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Metrics, when set, adds Metrics registered with it.
	Metrics prometheus.Registerer
	// Idempotency, when set, is an inbox middleware (package
	// middleware/inbox) placed inside Retry and outside Timeout and
	// Recover, so a failed or panicking call releases its claim and a
	// retry finds the event either done or free.
	Idempotency message.HandlerMiddleware
}

// Default returns the middleware stack for eda.Config.Middleware, outermost
// first:
//
//	Tracing → Metrics → Logging → Poison → Breaker → Retry → Limit → Idempotency → Timeout → Recover → handler
//
// Why this order: Recover is innermost so a panic becomes an error that
// Retry retries and Poison routes like any other. Timeout is inside Retry so
// each attempt gets its own deadline, and inside Limit so waiting for a slot
// does not count. Limit is inside Retry so a backoff wait holds no slot.
// Poison is outside Retry so it only sees what retries could not fix, and
// acks the original after publishing it. Breaker is between them: it holds
// a message whose retries failed because a dependency is down, so Poison
// does not count that delivery, and each of its probes is a Retry round.
// Logging, Metrics and Tracing are
// outside everything, so they report one outcome per delivery with its
// attempts and poisoning, and the span covers every retry.
func Default(cfg Config) ([]message.HandlerMiddleware, error) {
	var errs []error
	var stack []message.HandlerMiddleware
	add := func(m message.HandlerMiddleware, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		stack = append(stack, m)
	}
	if cfg.TracerProvider != nil {
		add(Tracing(TracingConfig{TracerProvider: cfg.TracerProvider, Propagator: cfg.Propagator}))
	}
	if cfg.Metrics != nil {
		m, err := NewMetrics(MetricsConfig{Registerer: cfg.Metrics})
		if err != nil {
			errs = append(errs, err)
		} else {
			stack = append(stack, m.Middleware)
		}
	}
	stack = append(stack, Logging(cfg.Logger))
	if cfg.Poison != nil {
		p := *cfg.Poison
		if p.Logger == nil {
			p.Logger = cfg.Logger
		}
		add(Poison(p))
	}
	if !cfg.Breaker.Off {
		if cfg.Breaker.Logger == nil {
			cfg.Breaker.Logger = cfg.Logger
		}
		add(Breaker(cfg.Breaker))
	}
	if cfg.Retry.Logger == nil {
		cfg.Retry.Logger = cfg.Logger
	}
	add(Retry(cfg.Retry))
	if cfg.Limit != nil {
		l, err := NewLimiter(*cfg.Limit)
		if err != nil {
			errs = append(errs, err)
		} else {
			stack = append(stack, l.Middleware)
		}
	}
	if cfg.Idempotency != nil {
		stack = append(stack, cfg.Idempotency)
	}
	if cfg.Timeout.Default != 0 || len(cfg.Timeout.PerQueue) > 0 {
		add(Timeout(cfg.Timeout))
	}
	stack = append(stack, Recover)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return stack, nil
}
