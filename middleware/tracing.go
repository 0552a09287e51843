package middleware

import (
	"context"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

// TracerName is the instrumentation name of eda's tracers.
const TracerName = "github.com/edaproject/eda/middleware"

// metadataPrefix prefixes the propagator's fields in message metadata:
// "traceparent" travels as "ce_traceparent", the CloudEvents distributed
// tracing extension in binary mode, next to the rest of the envelope.
const metadataPrefix = "ce_"

// MetadataCarrier adapts message metadata to an OpenTelemetry
// propagation.TextMapCarrier, storing each field under "ce_" + its name.
type MetadataCarrier message.Metadata

var _ propagation.TextMapCarrier = MetadataCarrier(nil)

// Get returns the value of the propagation field key.
func (c MetadataCarrier) Get(key string) string { return c[metadataPrefix+strings.ToLower(key)] }

// Set stores a propagation field.
func (c MetadataCarrier) Set(key, value string) { c[metadataPrefix+strings.ToLower(key)] = value }

// Keys lists the names, without the prefix, of every "ce_" field: the
// propagation fields and the rest of the CloudEvents envelope.
func (c MetadataCarrier) Keys() []string {
	keys := make([]string, 0, 2)
	for k := range c {
		if name, ok := strings.CutPrefix(k, metadataPrefix); ok {
			keys = append(keys, name)
		}
	}
	return keys
}

// TracingConfig configures Tracing and NewPublisher.
type TracingConfig struct {
	// TracerProvider creates the spans. Required: eda reads no global
	// provider; pass otel.GetTracerProvider() to use the global one.
	TracerProvider trace.TracerProvider
	// Propagator reads and writes the trace context in message metadata.
	// Default propagation.TraceContext{} (W3C traceparent/tracestate).
	Propagator propagation.TextMapPropagator
}

// Validate reports every problem with c, joined.
func (c TracingConfig) Validate() error {
	if c.TracerProvider == nil {
		return fmt.Errorf("%w: tracing: TracerProvider is nil", ErrInvalidConfig)
	}
	return nil
}

func (c *TracingConfig) setDefaults() {
	if c.Propagator == nil {
		c.Propagator = propagation.TraceContext{}
	}
}

// Tracing returns middleware that runs each delivery in a consumer span
// ("process <queue>") whose parent is the trace context found in the
// message metadata, as NewPublisher writes it. The span is in the handler's
// context, so events the handler publishes (through NewPublisher) continue
// the trace: publish → outbox → broker → handler → publish... It records the
// error, the attempts and, when Poison inside it poisoned the message, the
// reason. Put it outermost, so the span covers retries.
func Tracing(cfg TracingConfig) (message.HandlerMiddleware, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	tracer := cfg.TracerProvider.Tracer(TracerName)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			rec := recordOf(msg)
			parent := msg.Context()
			queue := message.SubscribeTopicFromCtx(parent)
			ctx := cfg.Propagator.Extract(parent, MetadataCarrier(msg.Metadata))
			ctx, span := tracer.Start(ctx, "process "+queue, trace.WithSpanKind(trace.SpanKindConsumer))
			if span.IsRecording() { // unsampled spans cost no attributes
				setProcessAttributes(span, msg, queue, message.HandlerNameFromCtx(parent))
			}
			defer span.End()
			msg.SetContext(ctx)
			out, err := h(msg)
			msg.SetContext(parent)
			if span.IsRecording() {
				span.SetAttributes(attribute.Int("eda.attempts", max(rec.attempts, 1)))
			}
			switch {
			case err != nil:
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			case rec.poisoned != "":
				span.SetAttributes(attribute.String("eda.poison_reason", rec.poisoned))
				span.SetStatus(codes.Error, "poisoned: "+rec.poisoned)
			}
			return out, err
		}
	}, nil
}

func setProcessAttributes(span trace.Span, msg *message.Message, queue, handler string) {
	span.SetAttributes(
		attribute.String("messaging.system", "eda"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", queue),
		attribute.String("messaging.message.id", msg.Metadata.Get(eda.MetadataID)),
		attribute.String("eda.event_type", msg.Metadata.Get(eda.MetadataType)),
		attribute.String("eda.handler", handler),
		attribute.String("eda.receive_count", msg.Metadata.Get(transport.MetadataReceiveCount)),
	)
}

// NewPublisher returns a publisher that, for each message, starts a producer
// span ("send <topic>") as a child of the span in the message's context
// (eda.App.Publish sets it to the context it is given) or, when that has
// none, of the trace context already in the metadata (an outbox relay
// publishing an event stored by NewEncoder's encoder), writes that span's
// trace context into the metadata, records the topic in MetadataTopic and
// publishes through pub. Without a TracerProvider it starts no span but
// still passes on the trace context found in the message's context. Use it
// as eda.Config.Publisher, or wrap the outbox publisher with it so the trace
// context is stored with the event.
func NewPublisher(pub message.Publisher, cfg TracingConfig) (message.Publisher, error) {
	if pub == nil {
		return nil, fmt.Errorf("%w: publisher: nil publisher", ErrInvalidConfig)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	cfg.setDefaults()
	return &tracingPublisher{pub: pub, prop: cfg.Propagator, tracer: cfg.TracerProvider.Tracer(TracerName)}, nil
}

type tracingPublisher struct {
	pub    message.Publisher
	prop   propagation.TextMapPropagator
	tracer trace.Tracer
}

var _ message.Publisher = (*tracingPublisher)(nil)

func (p *tracingPublisher) Publish(topic string, msgs ...*message.Message) error {
	spans := make([]trace.Span, len(msgs))
	for i, msg := range msgs {
		ctx := msg.Context()
		if !trace.SpanContextFromContext(ctx).IsValid() {
			// No span in the context (an outbox relay publishing a stored
			// event): continue the trace stored with the message.
			ctx = p.prop.Extract(ctx, MetadataCarrier(msg.Metadata))
		}
		ctx, span := p.tracer.Start(ctx, "send "+topic,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("messaging.system", "eda"),
				attribute.String("messaging.operation.type", "send"),
				attribute.String("messaging.destination.name", topic),
				attribute.String("messaging.message.id", msg.Metadata.Get(eda.MetadataID)),
				attribute.String("eda.event_type", msg.Metadata.Get(eda.MetadataType)),
			))
		spans[i] = span
		if msg.Metadata == nil {
			msg.Metadata = message.Metadata{}
		}
		p.prop.Inject(ctx, MetadataCarrier(msg.Metadata))
		msg.Metadata[MetadataTopic] = topic
	}
	err := p.pub.Publish(topic, msgs...)
	for _, span := range spans {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	return err
}

// Close closes the wrapped publisher.
func (p *tracingPublisher) Close() error { return p.pub.Close() }

// Encoder builds the message of an event, as eda.App.NewMessage does; it is
// outbox.Encoder, which outbox stores call when writing events.
type Encoder interface {
	NewMessage(ctx context.Context, e eda.Event) (topic string, msg *message.Message, err error)
}

// NewEncoder returns an encoder that, for each event enc encodes, records a
// producer span ("create <topic>", a child of the span in ctx) and writes its
// trace context and MetadataTopic into the metadata. Pass it where an outbox
// store takes the app as its encoder: the trace context is stored with the
// event, the relay's publisher (NewPublisher) continues it, and one trace
// runs request → create (outbox write) → send (relay) → process (handler).
func NewEncoder(enc Encoder, cfg TracingConfig) (Encoder, error) {
	if enc == nil {
		return nil, fmt.Errorf("%w: encoder: nil encoder", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &tracingEncoder{enc: enc, prop: cfg.Propagator, tracer: cfg.TracerProvider.Tracer(TracerName)}, nil
}

type tracingEncoder struct {
	enc    Encoder
	prop   propagation.TextMapPropagator
	tracer trace.Tracer
}

func (e *tracingEncoder) NewMessage(ctx context.Context, ev eda.Event) (string, *message.Message, error) {
	topic, msg, err := e.enc.NewMessage(ctx, ev)
	if err != nil {
		return topic, msg, err
	}
	sctx, span := e.tracer.Start(ctx, "create "+topic, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "eda"),
			attribute.String("messaging.operation.type", "create"),
			attribute.String("messaging.destination.name", topic),
			attribute.String("messaging.message.id", msg.Metadata.Get(eda.MetadataID)),
			attribute.String("eda.event_type", msg.Metadata.Get(eda.MetadataType)),
		)
	}
	e.prop.Inject(sctx, MetadataCarrier(msg.Metadata))
	msg.Metadata[MetadataTopic] = topic
	span.End()
	return topic, msg, nil
}
