// Package aws is eda's production transport: SNS topics fanning out to SQS
// queues, standard and FIFO, on aws-sdk-go-v2 (with watermill-aws's
// attribute names, so plain Watermill consumers read the same messages;
// with Config.Attributes = AllAttributes they also see every metadata
// entry as its own attribute).
//
// A service publishes an event to an SNS topic; SNS delivers a copy to every
// SQS queue subscribed to it (raw message delivery, the eda envelope in the
// message attributes); each consuming service polls its own queue:
//
//	cfg, _ := config.LoadDefaultConfig(ctx) // region, credentials: the standard chain
//	tr, err := aws.New(aws.Config{AWS: cfg})
//	err = tr.Declare(ctx, transport.Queue{Name: "inventory", Topics: []string{"orders"}, MaxReceiveCount: 5})
//	err = tr.Publish("orders", msgs...)
//	ch, err := tr.Subscribe(ctx, "inventory")
//
// What it adds to the SDK and to watermill-aws:
//   - Publish sends several messages with PublishBatch (10 per call, 256 KiB
//     per call, calls in parallel on standard topics); Subscribe receives in
//     batches with long polling, hands out Config.Concurrency messages at once
//     (one per FIFO group), extends the visibility of held messages while
//     handlers run (heartbeat), deletes acked messages in batches and makes
//     nacked ones visible at once, or after their transport.RedeliveryDelay
//     (ChangeMessageVisibility; at most 12 hours from the receive).
//     transport.MetadataReceiveCount comes from SQS's
//     ApproximateReceiveCount.
//   - Delayed delivery: SNS has no per-message delay, so a message whose
//     transport.MetadataDeliverAt is in the future (at most MaxDeliveryDelay,
//     15 minutes) is sent by Publish itself with SQS SendMessageBatch and
//     DelaySeconds to every queue subscribed to the topic, with the body and
//     attributes a raw SNS delivery would have given it. That needs
//     sqs:SendMessage (and sqs:GetQueueUrl) on those queues and
//     sns:ListSubscriptionsByTopic and sns:GetSubscriptionAttributes on the
//     topic, besides sns:Publish. A FIFO topic, a subscription with a filter
//     policy or one that is not raw SQS delivery makes such a Publish fail
//     with transport.ErrDelayUnsupported, sending nothing. The delay keys
//     are never sent as attributes.
//   - FIFO: a transport.Queue with FIFO becomes "name.fifo" queues and topics;
//     MessageGroupId is transport.MetadataGroupID (the event's ordering key),
//     MessageDeduplicationId is transport.DedupID (the event id). Handler code
//     is the same for standard and FIFO.
//   - Topology as code: Topology lists topics, queues, dead-letter queues
//     (maxReceiveCount), subscriptions with optional filter policies; Plan
//     tells what differs, Apply creates or updates it; both are idempotent.
//     Each queue's policy lets only its topics send to it (aws:SourceArn).
//     ServicePolicy writes the least-privilege IAM policy of a service.
//   - Messages: the payload is the SQS body (base64 when it is not valid
//     SQS text). The metadata named in Config.Attributes (default: the
//     CloudEvents ce_id, ce_source, ce_specversion, ce_type and ce_time)
//     are message attributes, for consumers in any language and for
//     subscription filter policies; the rest of the envelope travels as one
//     JSON attribute (eda_md), since SNS and SQS work per attribute
//     (AllAttributes sends as many as SQS delivers, 10, the way
//     watermill-aws does). Plan and Apply refuse
//     a filter policy on metadata that is not an attribute. A message the
//     transport cannot decode is delivered raw with MetadataTransportError,
//     so the poison middleware can route it.
//   - Typed errors: ErrMissingRegion; transport.ErrUnavailable when the
//     endpoint cannot be reached; transport.ErrUnknownTopic and
//     transport.ErrUnknownQueue when AutoCreate is off and something is
//     missing; transport.ErrMessageTooLarge over MaxMessageSize, unless a
//     claim check is configured.
//   - Claim check: with Config.ClaimCheck.Bucket, the payload of a message
//     whose wire form (body and attributes) is over the 256 KiB SNS limit
//     goes to S3 (S3BlobStore, key prefix Config.ClaimCheck.Prefix) and the
//     message carries a pointer; subscribers fetch it back transparently.
//     The blob of a publish SNS refuses is deleted; Plan and Apply (and
//     Declare with AutoCreate) keep a lifecycle rule on the prefix that
//     expires blobs after Config.ClaimCheck.Expiration, which also covers a
//     crash between storing and publishing. Config.ClaimCheck.Store takes
//     another BlobStore instead (PostgresBlobStore).
//
// The tests and benchmarks run against the fauxqs emulator
// (scripts/emulator.sh up; endpoint from EDA_AWS_ENDPOINT, default
// http://127.0.0.1:4566; EDA_TEST_LOG=1 logs the transport and SDK retries).
// fauxqs does not enforce IAM, so the policies are tested for their content
// only; it stores S3 lifecycle rules without enforcing them (the tests
// check the rule, not an expiry), and serves S3 path-style on the same
// endpoint (ClaimCheckConfig.UsePathStyle). Differences from AWS met on the way: fauxqs wants TopicArn (not
// TargetArn) in Publish, takes PublishBatch entries in string order of their
// index (FIFO batches are sent 9 at a time), does not set
// DeadLetterQueueSourceArn, ignores ReceiveRequestAttemptId, and keeps
// serving a long poll whose client went away (a stopping subscription
// therefore lets its last ReceiveMessage finish and hands what it gets to
// another subscription of the queue, or releases it).
package aws
