package middleware

import (
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edaproject/eda/eda"
)

// DefaultMetricsNamespace is MetricsConfig.Namespace's default.
const DefaultMetricsNamespace = "eda"

// MetricsConfig configures NewMetrics.
type MetricsConfig struct {
	// Registerer receives the collectors. Required: eda registers nothing
	// globally; pass prometheus.DefaultRegisterer to use the global one.
	Registerer prometheus.Registerer
	// Namespace prefixes every metric name. Default DefaultMetricsNamespace.
	Namespace string
	// Buckets of the duration histogram, in seconds. Default
	// prometheus.DefBuckets.
	Buckets []float64
}

// Validate reports every problem with c, joined.
func (c MetricsConfig) Validate() error {
	if c.Registerer == nil {
		return fmt.Errorf("%w: metrics: Registerer is nil", ErrInvalidConfig)
	}
	return nil
}

// Metrics counts what happens to messages, per queue and event type:
//
//	<ns>_messages_handled_total        deliveries the handler completed (acked)
//	<ns>_messages_failed_total         deliveries that ended in an error (nacked for redelivery)
//	<ns>_messages_retried_total        in-process retries (Retry)
//	<ns>_messages_poisoned_total       messages moved to the poison topic, also by reason
//	<ns>_handler_duration_seconds      time per delivery, retries included, by outcome
//
// Labels: queue, event_type (and reason, outcome). An event type no handler
// of the queue knows is counted as "unknown", so hostile messages cannot
// grow the label set.
type Metrics struct {
	handled, failed, retried *prometheus.CounterVec
	poisoned                 *prometheus.CounterVec
	duration                 *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them with
// cfg.Registerer. Registering twice with one Registerer fails: share one
// Metrics between apps instead.
func NewMetrics(cfg MetricsConfig) (*Metrics, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultMetricsNamespace
	}
	if cfg.Buckets == nil {
		cfg.Buckets = prometheus.DefBuckets
	}
	labels := []string{"queue", "event_type"}
	counter := func(name, help string, extra ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: cfg.Namespace, Name: name, Help: help}, append(labels, extra...))
	}
	m := &Metrics{
		handled:  counter("messages_handled_total", "Deliveries the handler completed; the message was acked."),
		failed:   counter("messages_failed_total", "Deliveries that ended in an error; the message was nacked for redelivery."),
		retried:  counter("messages_retried_total", "In-process handler retries."),
		poisoned: counter("messages_poisoned_total", "Messages moved to the poison topic.", "reason"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: cfg.Namespace, Name: "handler_duration_seconds",
			Help:    "Time to handle one delivery, retries included.",
			Buckets: cfg.Buckets,
		}, append(labels, "outcome")),
	}
	for _, c := range []prometheus.Collector{m.handled, m.failed, m.retried, m.poisoned, m.duration} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("%w: metrics: %w", ErrInvalidConfig, err)
		}
	}
	return m, nil
}

// Middleware counts each delivery. Put it outside Poison and Retry, which
// report to it through the message context.
func (m *Metrics) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		rec := recordOf(msg)
		ctx := msg.Context()
		start := time.Now()
		out, err := h(msg)
		msg.SetContext(ctx)
		queue := message.SubscribeTopicFromCtx(ctx)
		typ := msg.Metadata.Get(eda.MetadataType)
		if errors.Is(err, eda.ErrUnknownEvent) || errors.Is(rec.lastErr, eda.ErrUnknownEvent) {
			typ = "unknown"
		}
		outcome := "handled"
		switch {
		case err != nil:
			outcome = "failed"
			m.failed.WithLabelValues(queue, typ).Inc()
		case rec.poisoned != "":
			outcome = "poisoned"
			m.poisoned.WithLabelValues(queue, typ, rec.poisoned).Inc()
		default:
			m.handled.WithLabelValues(queue, typ).Inc()
		}
		if rec.retries > 0 {
			m.retried.WithLabelValues(queue, typ).Add(float64(rec.retries))
		}
		m.duration.WithLabelValues(queue, typ, outcome).Observe(time.Since(start).Seconds())
		return out, err
	}
}
