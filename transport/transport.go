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
)

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
	// ErrMissingGroupID: a message sent to a FIFO queue has no
	// MetadataGroupID (SQS rejects it too).
	ErrMissingGroupID = errors.New("transport: FIFO message has no group id")
	// ErrClosed: the transport was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrUnavailable: the broker could not be reached; retrying may help.
	ErrUnavailable = errors.New("transport: broker unavailable")
)

// TooLargeError builds the error for a message over the limit.
func TooLargeError(topic string, msg *message.Message, size, limit int) error {
	return fmt.Errorf("%w: message %s to %q is %d bytes, limit %d", ErrMessageTooLarge, msg.UUID, topic, size, limit)
}
