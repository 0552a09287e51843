// Package transport defines the small contract a message broker implements to
// carry eda events: publish to a topic, declare a queue subscribed to topics,
// and consume a queue with competing consumers and ack/nack.
//
// The model is SNS→SQS: a topic fans every message out to each queue subscribed
// to it; consumers of one queue compete for its messages; a message that is not
// acknowledged within the queue's visibility timeout, or that is nacked, is
// delivered again; after MaxReceiveCount receives it moves to the queue's
// dead-letter queue. FIFO queues deliver messages of one group in order, one
// in flight at a time, and drop duplicates within a deduplication window.
// Where Features says so, a subscriber extends the visibility of a message
// while its handler runs (Heartbeat), a message nacked with a
// RedeliveryDelay comes back only after it (DelayedRedelivery), and Publish
// holds a message with MetadataDeliverAt until that time (DelayedDelivery,
// up to MaxDeliveryDelay, else ErrDelayUnsupported); the delay keys are
// requests to the transport and are not delivered.
//
// A Transport is a Watermill message.Publisher (topic → queues) and a
// message.Subscriber (Subscribe takes a queue name), so it plugs straight into
// a Watermill Router. What differs between brokers is declared in Features,
// which the conformance suite in transport/transporttest reads to decide what
// to check. Implementations live in sub-packages: transport/memory (in
// process, with SNS/SQS semantics), transport/postgres and transport/aws.
//
// Two optional interfaces serve operations: Inspector reads a queue's depth
// (visible, in flight, delayed, oldest age) without receiving from it, which
// transport/transportprom exports to Prometheus, and Pinger checks that the
// broker is reachable, which eda's readiness check calls. All three
// transports implement both.
package transport
