package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

// Metadata keys Poison writes on the message it publishes to the poison
// topic, on top of the original metadata (the eda envelope included, so the
// event id, type and correlation survive).
const (
	// MetadataPoisonReason is why the message was poisoned: a Reason.
	MetadataPoisonReason = "eda_poison_reason"
	// MetadataPoisonError is the text of the last error, cut to
	// PoisonConfig.MaxErrorLen bytes.
	MetadataPoisonError = "eda_poison_error"
	// MetadataPoisonAttempts is how many times the handler was called for
	// the last delivery (in-process retries included).
	MetadataPoisonAttempts = "eda_poison_attempts"
	// MetadataPoisonDeliveries is how many times the broker delivered the
	// message (transport.MetadataReceiveCount), when the transport counts.
	MetadataPoisonDeliveries = "eda_poison_deliveries"
	// MetadataPoisonHandler is the name of the router handler that failed.
	MetadataPoisonHandler = "eda_poison_handler"
	// MetadataPoisonQueue is the queue the message was received from.
	MetadataPoisonQueue = "eda_poison_queue"
	// MetadataPoisonTopic is the topic the message was published on, when
	// its publisher recorded it (MetadataTopic, set by NewPublisher).
	MetadataPoisonTopic = "eda_poison_topic"
	// MetadataPoisonFirstFailure is the time (RFC 3339, UTC) of the first
	// failed call: of the message's first poison round, when it carries
	// one (it was redriven and failed again), else of the last delivery.
	MetadataPoisonFirstFailure = "eda_poison_firstfailure"
	// MetadataPoisonLastFailure is the time (RFC 3339, UTC) of the last
	// failed call.
	MetadataPoisonLastFailure = "eda_poison_lastfailure"
	// MetadataPoisonTotalDeliveries is how many times the message was
	// delivered over every poison round: the previous rounds' total (or
	// their MetadataPoisonDeliveries) plus this round's deliveries (1 when
	// the transport does not count).
	MetadataPoisonTotalDeliveries = "eda_poison_totaldeliveries"
	// MetadataPoisonRedrives is how many times an operator sent the
	// message back from a poison or dead-letter queue (edactl dlq redrive
	// increments it). Poison carries it over unchanged.
	MetadataPoisonRedrives = "eda_poison_redrives"
)

// MetadataTopic is the topic a message was published on, written by the
// publisher NewPublisher returns. SNS raw delivery does not tell a queue
// consumer which topic a message came through; this does.
const MetadataTopic = "eda_topic"

// Reason tells why a message was poisoned.
type Reason string

// Reasons written into MetadataPoisonReason.
const (
	// ReasonPermanent: the handler returned a permanent error (see
	// eda.IsPermanent); retrying cannot help.
	ReasonPermanent Reason = "permanent"
	// ReasonRetriesExhausted: the handler kept failing on the last allowed
	// delivery (PoisonConfig.MaxDeliveries), in-process retries included.
	ReasonRetriesExhausted Reason = "retries_exhausted"
)

// Defaults of PoisonConfig.
const (
	DefaultMaxDeliveries = 3
	DefaultMaxErrorLen   = 2048
)

// ErrPoisonPublish wraps the error of a failed publish to the poison topic;
// the original message is then nacked, never acked.
var ErrPoisonPublish = errors.New("eda: cannot publish to poison topic")

// PoisonConfig configures Poison.
type PoisonConfig struct {
	// Publisher publishes poisoned messages. Required; usually the
	// transport, or NewPublisher around it.
	Publisher message.Publisher
	// Topic receives poisoned messages. Required. Declare a queue
	// subscribed to it (on SNS a topic without subscribers drops what it
	// gets): see PoisonQueue.
	Topic string
	// MaxDeliveries is the delivery (transport.MetadataReceiveCount) on
	// which a message that still fails with a transient error is poisoned;
	// before it the error is returned and the broker redelivers. A
	// message without a receive count (a transport that does not count) is
	// treated as on its last delivery. -1 never poisons transient
	// failures: they are nacked for ever, for the queue's redrive policy
	// (SQS maxReceiveCount → DLQ) to move them. Permanent errors are
	// always poisoned. Default DefaultMaxDeliveries.
	MaxDeliveries int
	// MaxErrorLen cuts the error text in MetadataPoisonError, which counts
	// towards the broker's message size limit. Default DefaultMaxErrorLen.
	MaxErrorLen int
	// Logger receives a record per poisoned message. Nil discards.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c PoisonConfig) Validate() error {
	var errs []error
	if c.Publisher == nil {
		errs = append(errs, fmt.Errorf("%w: poison: Publisher is nil", ErrInvalidConfig))
	}
	if c.Topic == "" {
		errs = append(errs, fmt.Errorf("%w: poison: Topic is empty", ErrInvalidConfig))
	}
	if c.MaxDeliveries < -1 {
		errs = append(errs, fmt.Errorf("%w: poison: MaxDeliveries %d (want -1, 0 for the default, or more)", ErrInvalidConfig, c.MaxDeliveries))
	}
	if c.MaxErrorLen < 0 {
		errs = append(errs, fmt.Errorf("%w: poison: negative MaxErrorLen %d", ErrInvalidConfig, c.MaxErrorLen))
	}
	return errors.Join(errs...)
}

// PoisonQueue returns the declaration of a queue that receives what Poison
// publishes to topic, to pass to eda.App.DeclareQueue (or
// transport.Declare) so poisoned messages are kept until the operator
// inspects and redrives them (edactl dlq show, edactl dlq redrive); no eda
// component consumes it.
func PoisonQueue(name, topic string) eda.QueueConfig {
	return eda.QueueConfig{Queue: transport.Queue{Name: name, Topics: []string{topic}}}
}

// Poison returns middleware that moves a message its handler cannot process
// to the poison topic, then acks the original:
//   - on a permanent error (eda.IsPermanent), at once;
//   - on any other error, when the message is on its MaxDeliveries-th
//     delivery; earlier deliveries return the error, so the broker
//     redelivers.
//
// The poisoned copy keeps the payload, the metadata (event id, type,
// correlation...) and gets the Metadata* keys above: reason, error text,
// attempts, deliveries, handler, queue, topic, first and last failure time.
// A message that was poisoned before and redriven (it carries the earlier
// round's MetadataPoisonFirstFailure, MetadataPoisonTotalDeliveries or
// MetadataPoisonDeliveries, and MetadataPoisonRedrives) keeps its history:
// the first failure time stays the earliest, total deliveries add up, and
// the redrive count is carried over.
// If publishing it fails, the error is returned and the original nacked:
// nothing is acked before it is handled or safely poisoned. Never poisoned:
// an error met while the message context is cancelled (shutdown), and an
// error with a Deferred() bool method returning true, which says the message
// waits rather than fails (inbox.ErrBusy: another consumer is processing
// the event; acking this duplicate could delete the message under it).
//
// Put Poison outside Retry, so it sees the error only once in-process
// retries are spent (Default does).
//
// When to use the broker's dead-letter queue instead (SQS redrive policy,
// transport.Queue.MaxReceiveCount): it also catches messages whose consumer
// crashes every time (out of memory, a panic in a goroutine), which no
// middleware sees, and costs nothing on the hot path; but it records no
// reason, and every failure costs a full visibility timeout. Use Poison for
// reasons, fast routing of permanent errors and one poison topic for many
// queues; keep a redrive DLQ as well as a backstop with MaxReceiveCount
// above MaxDeliveries; set MaxDeliveries to -1 to leave transient failures
// to the DLQ alone.
func Poison(cfg PoisonConfig) (message.HandlerMiddleware, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxDeliveries == 0 {
		cfg.MaxDeliveries = DefaultMaxDeliveries
	}
	if cfg.MaxErrorLen == 0 {
		cfg.MaxErrorLen = DefaultMaxErrorLen
	}
	logger := orDiscard(cfg.Logger)
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			rec := recordOf(msg)
			ctx := msg.Context()
			out, err := h(msg)
			msg.SetContext(ctx)
			if err == nil {
				return out, nil
			}
			if !rec.retried {
				rec.attempts++
				rec.failed(time.Now(), err)
			}
			if ctx.Err() != nil {
				return out, err
			}
			deliveries, counted := receiveCount(msg)
			var reason Reason
			switch {
			case isDeferred(err):
				return out, err
			case eda.IsPermanent(err):
				reason = ReasonPermanent
			case cfg.MaxDeliveries > 0 && (!counted || deliveries >= cfg.MaxDeliveries):
				reason = ReasonRetriesExhausted
			default:
				return out, err
			}
			if perr := poison(ctx, &cfg, logger, msg, rec, err, reason, deliveries, counted); perr != nil {
				return out, errors.Join(err, perr)
			}
			return out, nil
		}
	}, nil
}

// poison publishes a copy of msg, with why it failed, to the poison topic,
// and records and logs that it did. It is apart from the middleware so the
// success path carries none of this on its stack.
func poison(ctx context.Context, cfg *PoisonConfig, logger *slog.Logger, msg *message.Message, rec *record, err error, reason Reason, deliveries int, counted bool) error {
	pm := message.NewMessage(msg.UUID, msg.Payload)
	pm.Metadata = maps.Clone(msg.Metadata)
	// What the transport acts on for this delivery is not the poisoned
	// copy's: it is delivered at once, never delayed.
	delete(pm.Metadata, transport.MetadataReceiveCount)
	delete(pm.Metadata, transport.MetadataRedeliveryDelay)
	delete(pm.Metadata, transport.MetadataDeliverAt)
	md := pm.Metadata
	first, total := carriedHistory(msg.Metadata)
	if first.IsZero() || rec.firstFailure.Before(first) {
		first = rec.firstFailure
	}
	if counted {
		total += deliveries
	} else {
		total++ // a transport that does not count: this round was one delivery
	}
	md[MetadataPoisonReason] = string(reason)
	md[MetadataPoisonError] = truncate(err.Error(), cfg.MaxErrorLen)
	md[MetadataPoisonAttempts] = strconv.Itoa(rec.attempts)
	if counted {
		md[MetadataPoisonDeliveries] = strconv.Itoa(deliveries)
	}
	md[MetadataPoisonHandler] = message.HandlerNameFromCtx(ctx)
	md[MetadataPoisonQueue] = message.SubscribeTopicFromCtx(ctx)
	md[MetadataPoisonTopic] = msg.Metadata.Get(MetadataTopic)
	md[MetadataPoisonFirstFailure] = first.UTC().Format(time.RFC3339Nano)
	md[MetadataPoisonLastFailure] = rec.lastFailure.UTC().Format(time.RFC3339Nano)
	md[MetadataPoisonTotalDeliveries] = strconv.Itoa(total)
	pm.SetContext(ctx)
	if perr := cfg.Publisher.Publish(cfg.Topic, pm); perr != nil {
		return fmt.Errorf("%w %q: %w", ErrPoisonPublish, cfg.Topic, perr)
	}
	rec.poisoned = string(reason)
	logger.LogAttrs(ctx, slog.LevelError, "eda: message poisoned",
		slog.String("event_id", msg.Metadata.Get(eda.MetadataID)),
		slog.String("event_type", msg.Metadata.Get(eda.MetadataType)),
		slog.String("handler", md[MetadataPoisonHandler]),
		slog.String("reason", string(reason)),
		slog.Int("attempts", rec.attempts),
		slog.String("poison_topic", cfg.Topic),
		slog.Any("error", err))
	return nil
}

// carriedHistory returns the poison history an earlier round left on md:
// its first failure time (zero if none) and its total deliveries
// (MetadataPoisonTotalDeliveries, else that round's
// MetadataPoisonDeliveries, else 0).
func carriedHistory(md message.Metadata) (first time.Time, total int) {
	if t, err := time.Parse(time.RFC3339Nano, md.Get(MetadataPoisonFirstFailure)); err == nil {
		first = t
	}
	for _, k := range []string{MetadataPoisonTotalDeliveries, MetadataPoisonDeliveries} {
		if n, err := strconv.Atoi(md.Get(k)); err == nil && n > 0 {
			return first, n
		}
	}
	return first, 0
}

// isDeferred reports whether err says the message must wait rather than
// that it failed: an error in its chain has a Deferred method returning
// true (inbox.ErrBusy: another delivery of the event is being processed).
func isDeferred(err error) bool {
	d, ok := errors.AsType[interface {
		error
		Deferred() bool
	}](err)
	return ok && d.Deferred()
}

// receiveCount returns the transport's receive count of msg, if it has one.
func receiveCount(msg *message.Message) (int, bool) {
	n, err := strconv.Atoi(msg.Metadata.Get(transport.MetadataReceiveCount))
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	if n <= len(ellipsis) {
		return s[:0]
	}
	cut := n - len(ellipsis)
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + ellipsis
}
