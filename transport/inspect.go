package transport

import (
	"context"
	"time"
)

// Depth is a reading of one queue's backlog.
type Depth struct {
	// Visible messages wait to be received.
	Visible int64
	// InFlight messages were received and are neither acked nor back in
	// the queue yet (their visibility timeout, or a redelivery delay after
	// a nack, has not passed).
	InFlight int64
	// Delayed messages were published with a delivery time still to come
	// (MetadataDeliverAt) and were never received.
	Delayed int64
	// OldestAge is how long the oldest message in the queue (visible or in
	// flight) has been in it; 0 when the queue is empty. Meaningful only
	// when OldestAgeKnown.
	OldestAge time.Duration
	// OldestAgeKnown is false when the broker does not tell the age of the
	// oldest message on the call Inspector makes (SQS: it is the CloudWatch
	// metric ApproximateAgeOfOldestMessage, not a queue attribute).
	OldestAgeKnown bool
}

// Inspector is implemented by transports that can read a queue's depth
// without receiving from it. Readings may be approximate (SQS's are) and are
// meant for metrics and operators, not for flow control: read them at an
// interval (transport/transportprom polls and caches them).
type Inspector interface {
	// QueueDepth reads the depth of queue, a name as declared (its
	// dead-letter queue's name for the DLQ). A queue that does not exist is
	// an ErrUnknownQueue error; an unreachable broker ErrUnavailable.
	QueueDepth(ctx context.Context, queue string) (Depth, error)
}

// Pinger is implemented by transports that can check that their broker is
// reachable, for readiness probes. Ping is cheap (one round trip) and
// returns an ErrUnavailable error when the broker cannot be reached.
type Pinger interface {
	Ping(ctx context.Context) error
}
