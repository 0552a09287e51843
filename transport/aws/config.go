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
	// subscriptions, and Publish create a missing (standard) topic. Off,
	// Declare only verifies and reports what is missing with
	// transport.ErrUnknownQueue / transport.ErrUnknownTopic, and Publish to a
	// missing topic fails with transport.ErrUnknownTopic.
	AutoCreate bool
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
	if c.Partition == "" {
		c.Partition = DefaultPartition
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.ClaimCheck = c.ClaimCheck.withDefaults()
	return c
}
