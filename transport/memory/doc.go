// Package memory is an in-process transport with SNS→SQS semantics, for
// tests and single-process programs.
//
// It is a real implementation, not a stub: topics fan out to every queue
// subscribed to them; consumers of one queue compete; a received message is
// invisible for the queue's visibility timeout and is delivered again when it
// is nacked or not acked in time (an ack with a stale receipt, after the
// message was delivered again, is ignored, as in SQS); every receive counts,
// and a message received more than MaxReceiveCount times moves to the
// queue's dead-letter queue. FIFO queues deliver each message group in order
// with at most one message of a group in flight, and drop a message whose
// deduplication id was seen within the deduplication window. Standard queues
// put a nacked or expired message at the back, so they reorder like SQS
// standard queues do. Messages over MaxMessageSize (256 KiB by default, the
// SQS limit) are refused with transport.ErrMessageTooLarge.
//
// Delays: a message published with transport.MetadataDeliverAt in the future
// becomes visible at that time, and a message nacked with a
// transport.RedeliveryDelay comes back after it (its receive count still
// grows); any delay works, and neither key is delivered. On a FIFO queue a
// delayed message holds back the rest of its group. While a handler holds a
// message the subscriber extends its visibility every third of the
// visibility timeout (heartbeat); when the subscription's context ends first,
// the message comes back one visibility timeout later.
//
// Messages live in memory: they are lost when the process exits. Use the
// Postgres transport where that matters.
package memory
