// Package middleware holds the Watermill handler middleware an eda consumer
// needs to survive an at-least-once world: retries with backoff, a poison
// queue with reasons, panic recovery, timeouts, structured logging,
// OpenTelemetry tracing, Prometheus metrics and a concurrency/rate limit.
// The idempotent-consumer inbox is in package middleware/inbox (stores in
// inbox and inbox/pgstore).
//
// Each middleware is a message.HandlerMiddleware, usable on any transport
// and composable in eda.Config.Middleware (first element outermost). One
// option gives the recommended stack:
//
//	stack, err := middleware.Default(middleware.Config{
//		Logger:         logger,
//		Poison:         &middleware.PoisonConfig{Publisher: tr, Topic: "poison"},
//		Timeout:        middleware.TimeoutConfig{Default: 10 * time.Second},
//		TracerProvider: tp,
//		Metrics:        prometheus.DefaultRegisterer,
//	})
//	app, err := eda.New(eda.Config{Transport: tr, Middleware: stack})
//
// Default orders them Tracing → Metrics → Logging → Poison → Breaker →
// Retry → Limit → Idempotency → Timeout → Recover → handler; see Default for why, and
// TestDefaultOrderMatters for what goes wrong in another order.
//
// # Failure handling
//
// A handler's error is transient unless marked permanent (eda.Permanent;
// eda's decode, unknown-event and schema-version errors are permanent).
// Retry calls the handler again in process with exponential backoff and
// jitter, up to RetryConfig.MaxAttempts and MaxElapsed; then the error goes
// back to the broker, which redelivers the message (nack, or the visibility
// timeout on a crash); with RetryConfig.Redelivery set, only after a delay
// that grows with the message's receive count (1m, 2m, 4m... by default),
// so that a dependency down for minutes does not exhaust its deliveries:
// immediate retries, then delayed redeliveries, then the poison queue.
// Breaker (on in Default) tells a dependency that is down from a message
// that fails: when the retries of a delivery fail with an error
// IsUnavailable accepts, it holds the message, still leased, and the
// handler's other messages, until a probe reaches the dependency, so an
// outage of the consumer's database spends no deliveries.
// Poison publishes a message to the poison topic, with
// its reason, error, attempts, handler, queue, original topic and failure
// times in metadata (MetadataPoison*), and acks it, when the error is
// permanent or the message is on its PoisonConfig.MaxDeliveries-th delivery.
// If that publish fails the message is nacked: nothing is acked before it is
// handled or safely poisoned. See Poison for when to rely on the SQS redrive
// dead-letter queue instead. The poison queue and the dead-letter queues
// belong to the operator (edactl dlq list|show|redrive): nothing in eda
// consumes them, and a message that fails again after a redrive keeps its
// history (first failure, total deliveries, redrive count).
//
// Recover turns a panic into a *PanicError (with the stack) that Retry and
// Poison handle like any other error. Timeout bounds each attempt. Limiter
// caps concurrency and rate over every handler of a process.
//
// # Observability
//
// Logging writes one slog record per delivery with the event id, type,
// correlation id, queue, handler, receive count, attempts, duration and
// outcome. Metrics counts handled, failed, retried and poisoned messages and
// the handling duration, with a Registerer you pass (nothing global).
// Tracing starts a consumer span per delivery whose parent is the W3C trace
// context in the message metadata ("ce_traceparent", the CloudEvents
// distributed-tracing extension). NewPublisher, used as eda.Config.Publisher
// and as the outbox relay's publisher, writes it on publish; NewEncoder,
// given to an outbox store in place of the app, writes it when the event is
// stored. So one trace runs request → outbox write → relay → broker →
// handler → the events it publishes (TestTracingThroughTheOutbox).
//
// Correlation and causation ids need no middleware: eda.App.Publish sets
// them from the handler's context, which every middleware here keeps
// (TestCorrelationThroughTheStack).
//
// # Benchmarks
//
//	go test -run '^$' -bench 'Handle|Chain' -benchmem ./middleware/
//
// compare no middleware, Default, Default with every option, and the
// equivalent Watermill stack (PoisonQueue, Retry, Timeout, Recoverer), end
// to end on the memory transport and as a bare chain.
package middleware
