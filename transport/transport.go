package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Transport moves messages between topics and queues.
//
// Publish(topic, msgs...) sends to a topic; every queue subscribed to that
// topic receives a copy. Subscribe(ctx, queue) starts one consumer of a queue
// declared with Declare; several consumers of one queue compete for its
// messages. Each delivered message must be Ack'ed (delete) or Nack'ed
// (redeliver); the subscriber sends the next message once the previous one is
// settled, like every Watermill subscriber.
type Transport interface {
	message.Publisher
	message.Subscriber

	// Declare creates the queue, its dead-letter queue and its subscriptions
	// to topics, or verifies they exist with the same settings. It is
	// idempotent.
	Declare(ctx context.Context, q Queue) error

	// Features tells what this transport guarantees.
	Features() Features
}

// Features declares what a transport guarantees; the conformance suite checks
// exactly what is declared.
type Features struct {
	// FIFO is true when queues declared with Queue.FIFO deliver each message
	// group in order with one message in flight per group.
	FIFO bool
	// Deduplication is true when FIFO queues drop a message whose
	// deduplication id (MetadataDedupID, else the event id) was seen within
	// the deduplication window.
	Deduplication bool
	// DeadLetter is true when a queue with MaxReceiveCount moves a message to
	// its dead-letter queue after that many receives.
	DeadLetter bool
	// ReceiveCount is true when delivered messages carry MetadataReceiveCount.
	ReceiveCount bool
	// VisibilityTimeout is true when a message that is neither acked nor
	// nacked (a crashed consumer) is delivered again after the queue's
	// visibility timeout.
	VisibilityTimeout bool
	// MaxMessageSize is the largest message (payload plus metadata keys and
	// values) Publish accepts; 0 means no limit. Larger messages fail with
	// ErrMessageTooLarge.
	MaxMessageSize int
	// MinVisibilityTimeout is the shortest visibility timeout the broker
	// accepts (SQS: whole seconds). The suite uses it for crash tests.
	MinVisibilityTimeout time.Duration
	// Heartbeat is true when the subscriber extends the visibility of a
	// message while its handler runs, so a handler that runs longer than the
	// visibility timeout is not delivered to a competing consumer meanwhile.
	Heartbeat bool
	// DelayedRedelivery is true when a message nacked with a
	// RedeliveryDelay (SetRedeliveryDelay) is not delivered again before
	// that delay has passed, and is after it.
	DelayedRedelivery bool
	// MaxRedeliveryDelay is the longest RedeliveryDelay the transport
	// honours (SQS: 12 hours of visibility); 0 means no limit.
	MaxRedeliveryDelay time.Duration
	// DelayedDelivery is true when Publish honours MetadataDeliverAt: the
	// message is delivered no earlier than that time.
	DelayedDelivery bool
	// MaxDeliveryDelay is the longest delay from now that Publish honours
	// (SQS DelaySeconds: 15 minutes); 0 means no limit. A longer one fails
	// with ErrDelayUnsupported.
	MaxDeliveryDelay time.Duration
}

// Queue declares a queue and its subscriptions.
type Queue struct {
	// Name of the queue. Required. A FIFO queue's name gets the ".fifo"
	// suffix where the broker requires one (SQS); use the name as declared.
	Name string
	// Topics the queue is subscribed to. A queue without topics receives
	// only what is sent to it directly (a dead-letter queue, for example).
	Topics []string
	// FIFO makes the queue (and, on SNS, its topics) first-in-first-out per
	// message group (MetadataGroupID) with deduplication.
	FIFO bool
	// VisibilityTimeout is how long a received message stays invisible to
	// other consumers before it is delivered again. Default 30s.
	VisibilityTimeout time.Duration
	// MaxReceiveCount moves a message to DeadLetterQueue when it has been
	// received this many times without being acked. 0 disables the DLQ.
	MaxReceiveCount int
	// DeadLetterQueue names the dead-letter queue. Default Name + "-dlq"
	// when MaxReceiveCount > 0.
	DeadLetterQueue string
}

// DefaultVisibilityTimeout is the visibility timeout of a Queue that sets none.
const DefaultVisibilityTimeout = 30 * time.Second

// WithDefaults returns q with every zero field that has a default filled in.
func (q Queue) WithDefaults() Queue {
	if q.VisibilityTimeout == 0 {
		q.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if q.MaxReceiveCount > 0 && q.DeadLetterQueue == "" {
		q.DeadLetterQueue = q.Name + "-dlq"
	}
	return q
}

// Validate reports every problem with q, joined.
func (q Queue) Validate() error {
	var errs []error
	if strings.TrimSpace(q.Name) == "" {
		errs = append(errs, fmt.Errorf("%w: queue name is empty", ErrInvalidConfig))
	}
	for i, t := range q.Topics {
		if strings.TrimSpace(t) == "" {
			errs = append(errs, fmt.Errorf("%w: queue %q: topic %d is empty", ErrInvalidConfig, q.Name, i))
		}
	}
	if q.VisibilityTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: queue %q: negative visibility timeout %s", ErrInvalidConfig, q.Name, q.VisibilityTimeout))
	}
	if q.MaxReceiveCount < 0 {
		errs = append(errs, fmt.Errorf("%w: queue %q: negative max receive count %d", ErrInvalidConfig, q.Name, q.MaxReceiveCount))
	}
	if q.DeadLetterQueue != "" && q.DeadLetterQueue == q.Name {
		errs = append(errs, fmt.Errorf("%w: queue %q is its own dead-letter queue", ErrInvalidConfig, q.Name))
	}
	return errors.Join(errs...)
}

// Metadata keys a transport reads or sets on messages. The eda envelope keys
// (ce_*) are defined in package eda; these are the ones a broker acts on.
const (
	// MetadataGroupID is the FIFO message group (SQS MessageGroupId). eda
	// sets it from the event's ordering key; it is the CloudEvents
	// "partitionkey" extension.
	MetadataGroupID = "ce_partitionkey"
	// MetadataDedupID overrides the deduplication id of a FIFO message (SQS
	// MessageDeduplicationId). Without it the event id (MetadataEventID) is
	// used.
	MetadataDedupID = "eda_dedupid"
	// MetadataEventID is the event id (CloudEvents "id").
	MetadataEventID = "ce_id"
	// MetadataReceiveCount is set by transports on delivered messages: how
	// many times this message has been received, 1 on first delivery.
	MetadataReceiveCount = "eda_receivecount"
	// MetadataDeadLetterSource is set on a message moved to a dead-letter
	// queue by the transport: the queue it came from.
	MetadataDeadLetterSource = "eda_dlqsource"
	// MetadataDeliverAt asks Publish to deliver the message no earlier than
	// this time (RFC 3339 with nanoseconds, UTC). Set it with SetDeliverAt.
	MetadataDeliverAt = "eda_deliverat"
	// MetadataRedeliveryDelay, set on a delivered message before it is
	// nacked (SetRedeliveryDelay), makes the subscriber return it to the
	// queue invisible for that long (a Go duration string). The transport
	// removes it before the message is delivered again.
	MetadataRedeliveryDelay = "eda_redeliverydelay"
)

// SetDeliverAt asks Publish to deliver msg no earlier than t.
func SetDeliverAt(msg *message.Message, t time.Time) {
	msg.Metadata.Set(MetadataDeliverAt, t.UTC().Format(time.RFC3339Nano))
}

// DeliverAt returns when msg is to be delivered: ok is false when it carries
// no MetadataDeliverAt; a malformed value is an ErrInvalidConfig error.
func DeliverAt(msg *message.Message) (t time.Time, ok bool, err error) {
	v := msg.Metadata.Get(MetadataDeliverAt)
	if v == "" {
		return time.Time{}, false, nil
	}
	t, err = time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("%w: message %s: metadata %s: %v", ErrInvalidConfig, msg.UUID, MetadataDeliverAt, err)
	}
	return t, true, nil
}

// SetRedeliveryDelay asks the subscriber to make msg visible again only after
// d when it is nacked. Call it before the handler returns its error (the
// router nacks then). d <= 0 removes the request.
func SetRedeliveryDelay(msg *message.Message, d time.Duration) {
	if d <= 0 {
		delete(msg.Metadata, MetadataRedeliveryDelay)
		return
	}
	msg.Metadata.Set(MetadataRedeliveryDelay, d.String())
}

// RedeliveryDelay returns the delay SetRedeliveryDelay asked for, 0 when none
// (or when the value is malformed or negative).
func RedeliveryDelay(msg *message.Message) time.Duration {
	v := msg.Metadata.Get(MetadataRedeliveryDelay)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0
	}
	return d
}

// DedupID returns the deduplication id of msg: MetadataDedupID, else the event
// id, else the Watermill UUID.
func DedupID(msg *message.Message) string {
	if id := msg.Metadata.Get(MetadataDedupID); id != "" {
		return id
	}
	if id := msg.Metadata.Get(MetadataEventID); id != "" {
		return id
	}
	return msg.UUID
}

// MessageSize is the size a broker counts for msg: payload plus every
// metadata key and value (how SQS counts message attributes).
func MessageSize(msg *message.Message) int {
	n := len(msg.Payload)
	for k, v := range msg.Metadata {
		n += len(k) + len(v)
	}
	return n
}

// Errors a transport returns. Each is wrapped with context; match with
// errors.Is.
var (
	// ErrInvalidConfig: a config or queue declaration is invalid.
	ErrInvalidConfig = errors.New("transport: invalid config")
	// ErrMessageTooLarge: the message exceeds Features.MaxMessageSize.
	ErrMessageTooLarge = errors.New("transport: message too large")
	// ErrUnknownQueue: Subscribe names a queue that was not declared (and the
	// transport does not create queues on demand).
	ErrUnknownQueue = errors.New("transport: unknown queue")
	// ErrUnknownTopic: Publish names a topic that does not exist and the
	// transport does not create topics on demand.
	ErrUnknownTopic = errors.New("transport: unknown topic")
	// ErrTopicNotReady: Publish could not confirm that the topic delivers
	// to the queues expected to subscribe to it: the topic, one of those
	// queues or one of their subscriptions is missing (not yet declared,
	// deleted, or the broker lost its state). Nothing was published, since
	// a broker drops what no subscription takes. It heals once the
	// topology is declared again (the consumers' Declare, an Apply, edactl
	// topology apply), so publishers retry it: the outbox relay keeps the
	// record pending and backs off.
	ErrTopicNotReady = errors.New("transport: topic not ready")
	// ErrMissingGroupID: a message sent to a FIFO queue has no
	// MetadataGroupID (SQS rejects it too).
	ErrMissingGroupID = errors.New("transport: FIFO message has no group id")
	// ErrClosed: the transport was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrUnavailable: the broker could not be reached; retrying may help.
	ErrUnavailable = errors.New("transport: broker unavailable")
	// ErrDelayUnsupported: a message asks for a delivery delay the
	// transport cannot honour (none at all, longer than MaxDeliveryDelay,
	// or to a FIFO topic on SNS/SQS). Nothing was published.
	ErrDelayUnsupported = errors.New("transport: delivery delay not supported")
)

// TooLargeError builds the error for a message over the limit.
func TooLargeError(topic string, msg *message.Message, size, limit int) error {
	return fmt.Errorf("%w: message %s to %q is %d bytes, limit %d", ErrMessageTooLarge, msg.UUID, topic, size, limit)
}
