package aws

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"

	"github.com/edaproject/eda/transport"
)

// Defaults of Config.
const (
	// DefaultConcurrency is how many messages one subscription hands out
	// unsettled at once: 1 keeps the transport contract of one message at a
	// time per Subscribe call.
	DefaultConcurrency = 1
	// DefaultBatchSize is how many messages one ReceiveMessage asks for (the
	// SQS maximum).
	DefaultBatchSize = 10
	// DefaultWaitTime is the long-polling wait of ReceiveMessage (the SQS
	// maximum).
	DefaultWaitTime = 20 * time.Second
	// DefaultPublishConcurrency is how many PublishBatch calls of one Publish
	// run at once on a standard topic. FIFO topics publish their chunks one
	// after another to keep the order.
	DefaultPublishConcurrency = 8
	// DefaultPartition is the AWS partition used to build ARNs.
	DefaultPartition = "aws"
	// DefaultReadyTTL is how long Publish trusts that a topic delivers to
	// its expected subscriptions before it looks again.
	DefaultReadyTTL = 10 * time.Second
	// DefaultVerifyInterval is how often a running subscription checks that
	// its queue and its subscriptions to its topics still exist.
	DefaultVerifyInterval = time.Minute
)

// DefaultAttributes are the metadata sent as message attributes of their
// own when Config.Attributes is nil: the CloudEvents required attributes
// and the time (id, source, specversion, type, time), so that a consumer in
// any language finds them where the CloudEvents convention puts them, and
// filter policies can match on them. The other metadata travel in the one
// JSON attribute eda_md (README, "Wire format").
var DefaultAttributes = []string{"ce_id", "ce_source", "ce_specversion", "ce_type", "ce_time"}

// AllAttributes as Config.Attributes sends every metadata entry as its own
// message attribute, as many as SQS delivers (10, the eda envelope first),
// the way watermill-aws does; the rest travels in the JSON attribute.
var AllAttributes = []string{"*"}

// Limits of SNS and SQS.
const (
	// MaxWireSize is the SNS/SQS limit on body plus message attributes
	// (names, data types and values), 256 KiB.
	MaxWireSize = 256 * 1024
	// MaxMessageSize is the largest message, counted as transport.MessageSize
	// counts it (payload plus metadata keys and values), that Publish accepts
	// without a claim check. 1 KiB below MaxWireSize is kept for what the
	// wire adds: attribute data types and the message UUID.
	MaxMessageSize = MaxWireSize - 1024
	// MaxAttributes is how many message attributes SQS delivers; metadata
	// beyond that travels in one JSON attribute (attrOverflow).
	MaxAttributes = 10
	maxBatch      = 10 // entries per PublishBatch, DeleteMessageBatch, ChangeMessageVisibilityBatch
)

// Errors of this package. Each wraps a transport sentinel, so errors.Is
// matches both.
var (
	// ErrMissingRegion: Config.AWS has no region (set AWS_REGION or load a
	// profile that has one).
	ErrMissingRegion = fmt.Errorf("%w: aws: no region (set AWS_REGION or Config.AWS.Region)", transport.ErrInvalidConfig)
)

// Config configures a Transport. AWS is required; everything else has a
// default.
type Config struct {
	// AWS is the SDK configuration, normally from config.LoadDefaultConfig
	// (the standard chain: environment, shared files, IAM role). Its Region
	// is required.
	AWS awssdk.Config
	// Endpoint overrides the SNS, SQS and S3 endpoint (BaseEndpoint), e.g.
	// an emulator's "http://127.0.0.1:4566". Empty means AWS.
	Endpoint string
	// AccountID is the account that owns the topics and queues, used to
	// build ARNs. Empty means ask STS GetCallerIdentity once.
	AccountID string
	// Partition of the ARNs. Default DefaultPartition ("aws").
	Partition string
	// AutoCreate lets Declare create or update topics, queues and
	// subscriptions; Publish declare the part of the known topology (see
	// Topology) a topic lacks before it publishes to it; and a subscription
	// declare its queue again when it disappears. Off, Declare only
	// verifies and reports what is missing with transport.ErrUnknownQueue /
	// transport.ErrUnknownTopic, and Publish to a topic that lacks any of
	// it fails with transport.ErrTopicNotReady. Publish never creates a
	// topic by itself: a topic with no subscriptions drops what it gets.
	AutoCreate bool
	// Topology is the topology this process relies on beyond what it
	// declares itself (Declare, Apply): typically the queues of other
	// services that subscribe to the topics it publishes to, so a
	// publisher-only process knows who must receive its events. Before the
	// first Publish to a topic (and again every ReadyTTL, and after SNS
	// reports it missing) the transport checks that the topic exists with
	// a subscription for every queue declared in the process or here that
	// subscribes to it; with AutoCreate it declares what is missing,
	// without it Publish fails with transport.ErrTopicNotReady. Use the
	// same topology the consumers declare (one source, e.g. the file of
	// edactl topology apply): Publish applies it as given. Optional.
	Topology Topology
	// ReadyTTL is how long Publish trusts a topic checked ready (see
	// Topology) before it checks again; a NotFound or unreachable error from
	// SNS forgets it at once. Default DefaultReadyTTL; negative checks
	// before every Publish.
	ReadyTTL time.Duration
	// VerifyInterval is how often a running subscription checks that its
	// queue and its subscriptions still exist (on AWS a topic deleted and
	// created again has lost its subscriptions while the queue is still
	// there); with AutoCreate it declares them again, without it it logs an
	// error saying what is missing. A queue that disappears is noticed at
	// once by ReceiveMessage. Default DefaultVerifyInterval; negative
	// disables the periodic check.
	VerifyInterval time.Duration
	// Concurrency is how many messages one subscription hands out unsettled
	// at once (the Watermill router handles each in its own goroutine). A
	// FIFO queue never has two messages of one group out at once. Default
	// DefaultConcurrency.
	Concurrency int
	// BatchSize is MaxNumberOfMessages of ReceiveMessage, 1 to 10. Default
	// DefaultBatchSize.
	BatchSize int
	// WaitTime is the long-polling wait of ReceiveMessage, whole seconds
	// from 1s to 20s. Default DefaultWaitTime. (No short polling: it would
	// spin on an empty queue.)
	WaitTime time.Duration
	// PublishConcurrency is how many PublishBatch calls of one Publish run at
	// once on a standard topic. Default DefaultPublishConcurrency.
	PublishConcurrency int
	// Attributes names the metadata (eda envelope keys such as "ce_type")
	// sent as SNS/SQS message attributes of their own, which subscription
	// filter policies can match on; all other metadata travels in one JSON
	// attribute, since every attribute costs SNS and SQS work per message.
	// At most 9 names; AllAttributes sends as many as fit. Plan and Apply
	// refuse a filter policy on a key not sent as an attribute (it would
	// never match, and SNS would drop the messages silently). Default
	// DefaultAttributes. Consumers decode either layout.
	Attributes []string
	// ClaimCheck, when it names an S3 bucket (or another BlobStore), stores
	// the payload of a message too large for SNS/SQS there and sends a
	// pointer; subscribers fetch it back. Unset, messages over the limit
	// fail with transport.ErrMessageTooLarge.
	ClaimCheck ClaimCheckConfig
	// Logger receives warnings (failed deletes, receive errors). Nil
	// discards.
	Logger *slog.Logger

	// EmulatorFIFOBatchOrder works around fauxqs taking the entries of a
	// PublishBatch in the string order of their member index (the SDK
	// sends member.1 ... member.10, so entry 10 would come second, out of
	// order in its FIFO group): FIFO batches are sent 9 entries at a time.
	// AWS orders by index: leave it off there (batches of 10).
	EmulatorFIFOBatchOrder bool
	// EmulatorNoDeadLetterQueueSourceArn works around fauxqs not setting
	// the DeadLetterQueueSourceArn attribute on messages moved to a
	// dead-letter queue: a subscription to a dead-letter queue declared in
	// this process sets transport.MetadataDeadLetterSource to the queue it
	// serves. AWS sets the attribute: leave it off there (a message sent to
	// a dead-letter queue directly then carries no source).
	EmulatorNoDeadLetterQueueSourceArn bool
}

// ForFauxqs returns c with every Emulator* workaround on: for tools and
// tests pointed at the fauxqs emulator.
func (c Config) ForFauxqs() Config {
	c.EmulatorFIFOBatchOrder = true
	c.EmulatorNoDeadLetterQueueSourceArn = true
	return c
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.AWS.Region == "" {
		errs = append(errs, ErrMissingRegion)
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("%w: aws: negative Concurrency %d", transport.ErrInvalidConfig, c.Concurrency))
	}
	if c.BatchSize < 0 || c.BatchSize > maxBatch {
		errs = append(errs, fmt.Errorf("%w: aws: BatchSize %d not in 1..10", transport.ErrInvalidConfig, c.BatchSize))
	}
	if c.WaitTime < 0 || c.WaitTime > 20*time.Second || c.WaitTime%time.Second != 0 {
		errs = append(errs, fmt.Errorf("%w: aws: WaitTime %s: want whole seconds from 1s to 20s", transport.ErrInvalidConfig, c.WaitTime))
	}
	if c.PublishConcurrency < 0 {
		errs = append(errs, fmt.Errorf("%w: aws: negative PublishConcurrency %d", transport.ErrInvalidConfig, c.PublishConcurrency))
	}
	if len(c.Attributes) > MaxAttributes-1 {
		errs = append(errs, fmt.Errorf("%w: aws: %d Attributes: SQS delivers %d, one is kept for the rest of the metadata", transport.ErrInvalidConfig, len(c.Attributes), MaxAttributes))
	}
	if !c.Topology.empty() {
		if err := c.Topology.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("aws: Topology: %w", err))
		}
	}
	for _, a := range c.Attributes {
		if a != allAttributes && !validAttrName(a) {
			errs = append(errs, fmt.Errorf("%w: aws: Attributes: %q is not a name SQS accepts for a message attribute", transport.ErrInvalidConfig, a))
		}
	}
	errs = append(errs, c.ClaimCheck.Validate())
	return errors.Join(errs...)
}

// withDefaults fills every zero field that has a default.
func (c Config) withDefaults() Config {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.WaitTime == 0 {
		c.WaitTime = DefaultWaitTime
	}
	if c.PublishConcurrency == 0 {
		c.PublishConcurrency = DefaultPublishConcurrency
	}
	if c.Attributes == nil {
		c.Attributes = DefaultAttributes
	}
	if c.ReadyTTL == 0 {
		c.ReadyTTL = DefaultReadyTTL
	}
	if c.VerifyInterval == 0 {
		c.VerifyInterval = DefaultVerifyInterval
	}
	if c.Partition == "" {
		c.Partition = DefaultPartition
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.ClaimCheck = c.ClaimCheck.withDefaults()
	return c
}
