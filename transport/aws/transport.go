package aws

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/edaproject/eda/transport"
)

// Transport is the SNS→SQS transport: Publish sends to SNS topics, Subscribe
// consumes SQS queues subscribed to them. Create it with New.
type Transport struct {
	cfg Config
	log *slog.Logger
	sns *sns.Client
	sqs *sqs.Client
	sts *sts.Client
	s3  *s3.Client // claim-check bucket; nil without one
	// blobs is the claim-check store (Config.ClaimCheck), nil when off.
	blobs BlobStore

	mu       sync.Mutex
	closed   bool
	closeCtx context.Context // cancelled by Close
	closeAll context.CancelFunc
	live     map[string]map[*subscription]struct{} // queue URL → running subscriptions
	account  string
	topics   map[string]topicInfo // topic name as published → resolved
	queues   map[string]queueInfo // queue name as declared → resolved
	dlqOf    map[string]string    // DLQ name → the queue it serves (declared here)
	cancels  map[*subscription]context.CancelFunc
	// subscribers caches the SQS subscribers of topics (by ARN) for
	// delayed messages.
	subscribers map[string]subscribers
	// bucketReady: the claim-check bucket has eda's lifecycle rule.
	bucketReady bool
	wg          sync.WaitGroup // subscriptions, publishes and late verdicts in flight
}

var _ transport.Transport = (*Transport)(nil)

type topicInfo struct {
	arn  string
	fifo bool
}

type queueInfo struct {
	name       string // as declared
	url        string
	fifo       bool
	visibility time.Duration
}

// New returns a Transport. It does no I/O: an unreachable endpoint shows on
// the first call, as transport.ErrUnavailable.
func New(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	t := &Transport{
		cfg: cfg,
		log: cfg.Logger,
		sns: sns.NewFromConfig(cfg.AWS, func(o *sns.Options) {
			if cfg.Endpoint != "" {
				o.BaseEndpoint = awssdk.String(cfg.Endpoint)
			}
		}),
		sqs: sqs.NewFromConfig(cfg.AWS, func(o *sqs.Options) {
			if cfg.Endpoint != "" {
				o.BaseEndpoint = awssdk.String(cfg.Endpoint)
			}
		}),
		sts: sts.NewFromConfig(cfg.AWS, func(o *sts.Options) {
			if cfg.Endpoint != "" {
				o.BaseEndpoint = awssdk.String(cfg.Endpoint)
			}
		}),
		account: cfg.AccountID,
		topics:  map[string]topicInfo{},
		queues:  map[string]queueInfo{},
		dlqOf:   map[string]string{},
		cancels: map[*subscription]context.CancelFunc{},
		live:    map[string]map[*subscription]struct{}{},

		subscribers: map[string]subscribers{},
	}
	t.blobs, t.s3 = newBlobs(cfg)
	t.closeCtx, t.closeAll = context.WithCancel(context.Background())
	return t, nil
}

// Features reports the SNS/SQS model. MaxMessageSize is 0 (no limit) with a
// claim check, else MaxMessageSize; visibility timeouts are whole seconds.
func (t *Transport) Features() transport.Features {
	size := MaxMessageSize
	if t.blobs != nil {
		size = 0
	}
	return transport.Features{
		FIFO:                 true,
		Deduplication:        true,
		DeadLetter:           true,
		ReceiveCount:         true,
		VisibilityTimeout:    true,
		MaxMessageSize:       size,
		MinVisibilityTimeout: time.Second,
		Heartbeat:            true,
		DelayedRedelivery:    true,
		MaxRedeliveryDelay:   MaxRedeliveryDelay,
		DelayedDelivery:      true,
		MaxDeliveryDelay:     MaxDeliveryDelay,
	}
}

// SNS returns the SNS client the transport uses.
func (t *Transport) SNS() *sns.Client { return t.sns }

// SQS returns the SQS client the transport uses.
func (t *Transport) SQS() *sqs.Client { return t.sqs }

// Close stops every subscription, waits for publishes and pending deletes in
// flight, and refuses further calls with transport.ErrClosed. A message
// handed to a handler and not settled stays in flight on SQS and is
// delivered again after its visibility timeout.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.closeAll()
	for _, cancel := range t.cancels {
		cancel()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

// begin registers a call in flight; it fails once the transport is closed.
func (t *Transport) begin() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	t.wg.Add(1)
	return nil
}

// accountID returns the account of the ARNs: Config.AccountID, else asks
// STS once.
func (t *Transport) accountID(ctx context.Context) (string, error) {
	t.mu.Lock()
	account := t.account
	t.mu.Unlock()
	if account != "" {
		return account, nil
	}
	out, err := t.sts.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", classify(fmt.Errorf("aws: find the account id (set Config.AccountID to skip): %w", err))
	}
	account = awssdk.ToString(out.Account)
	t.mu.Lock()
	t.account = account
	t.mu.Unlock()
	return account, nil
}

func (t *Transport) arn(ctx context.Context, service, name string) (string, error) {
	account, err := t.accountID(ctx)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("arn:%s:%s:%s:%s:%s", t.cfg.Partition, service, t.cfg.AWS.Region, account, name), nil
}

const fifoSuffix = ".fifo"

// physical returns the SNS/SQS name of a topic or queue: FIFO ones need the
// ".fifo" suffix.
func physical(name string, fifo bool) string {
	if fifo && !strings.HasSuffix(name, fifoSuffix) {
		return name + fifoSuffix
	}
	return name
}

// resolveTopic finds the ARN of a topic published to by name: the topic
// declared here, else an existing topic "name" or "name.fifo"; else, with
// AutoCreate, a new standard topic.
func (t *Transport) resolveTopic(ctx context.Context, name string) (topicInfo, error) {
	t.mu.Lock()
	info, ok := t.topics[name]
	t.mu.Unlock()
	if ok {
		return info, nil
	}
	candidates := []string{name}
	if !strings.HasSuffix(name, fifoSuffix) {
		candidates = append(candidates, name+fifoSuffix)
	}
	for _, c := range candidates {
		arn, err := t.arn(ctx, "sns", c)
		if err != nil {
			return topicInfo{}, err
		}
		attrs, err := t.topicAttributes(ctx, arn)
		if err != nil {
			return topicInfo{}, err
		}
		if attrs != nil {
			info = topicInfo{arn: arn, fifo: attrs["FifoTopic"] == "true"}
			t.rememberTopic(name, info)
			return info, nil
		}
	}
	if !t.cfg.AutoCreate {
		return topicInfo{}, fmt.Errorf("%w: aws: SNS topic %q (tried %s; AutoCreate is off)", transport.ErrUnknownTopic, name, strings.Join(candidates, ", "))
	}
	fifo := strings.HasSuffix(name, fifoSuffix)
	arn, err := t.createTopic(ctx, name, fifo)
	if err != nil {
		return topicInfo{}, err
	}
	info = topicInfo{arn: arn, fifo: fifo}
	t.rememberTopic(name, info)
	return info, nil
}

func (t *Transport) rememberTopic(name string, info topicInfo) {
	t.mu.Lock()
	t.topics[name] = info
	t.mu.Unlock()
}

// topicAttributes returns the attributes of a topic, nil if it does not
// exist.
func (t *Transport) topicAttributes(ctx context.Context, arn string) (map[string]string, error) {
	out, err := t.sns.GetTopicAttributes(ctx, &sns.GetTopicAttributesInput{TopicArn: &arn})
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(fmt.Errorf("aws: get attributes of topic %s: %w", arn, err))
	}
	return out.Attributes, nil
}

func (t *Transport) createTopic(ctx context.Context, name string, fifo bool) (string, error) {
	in := &sns.CreateTopicInput{Name: awssdk.String(physical(name, fifo))}
	if fifo {
		in.Attributes = map[string]string{"FifoTopic": "true"}
	}
	out, err := t.sns.CreateTopic(ctx, in)
	if err != nil {
		return "", classify(fmt.Errorf("aws: create topic %q: %w", *in.Name, err))
	}
	return awssdk.ToString(out.TopicArn), nil
}

// resolveQueue finds a queue by its declared name: declared here, else an
// existing queue "name" or "name.fifo".
func (t *Transport) resolveQueue(ctx context.Context, name string) (queueInfo, error) {
	t.mu.Lock()
	info, ok := t.queues[name]
	t.mu.Unlock()
	if ok {
		return info, nil
	}
	if name == "" {
		return queueInfo{}, fmt.Errorf("%w: aws: empty queue name", transport.ErrInvalidConfig)
	}
	candidates := []string{name}
	if !strings.HasSuffix(name, fifoSuffix) {
		candidates = append(candidates, name+fifoSuffix)
	}
	for _, c := range candidates {
		url, err := t.queueURL(ctx, c)
		if err != nil {
			return queueInfo{}, err
		}
		if url == "" {
			continue
		}
		attrs, err := t.queueAttributes(ctx, url)
		if err != nil {
			return queueInfo{}, err
		}
		info = queueInfo{name: name, url: url, fifo: attrs["FifoQueue"] == "true"}
		vt, _ := strconv.Atoi(attrs["VisibilityTimeout"])
		info.visibility = time.Duration(vt) * time.Second
		t.mu.Lock()
		t.queues[name] = info
		t.mu.Unlock()
		return info, nil
	}
	return queueInfo{}, fmt.Errorf("%w: aws: SQS queue %q (tried %s; declare it first)", transport.ErrUnknownQueue, name, strings.Join(candidates, ", "))
}

// queueURL returns the URL of a queue by its SQS name, "" if it does not
// exist.
func (t *Transport) queueURL(ctx context.Context, name string) (string, error) {
	out, err := t.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &name})
	if isNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", classify(fmt.Errorf("aws: get URL of queue %q: %w", name, err))
	}
	return awssdk.ToString(out.QueueUrl), nil
}

func (t *Transport) queueAttributes(ctx context.Context, url string) (map[string]string, error) {
	out, err := t.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       &url,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll},
	})
	if err != nil {
		return nil, classify(fmt.Errorf("aws: get attributes of queue %s: %w", url, err))
	}
	return out.Attributes, nil
}

// isNotFound reports whether err says a topic or queue does not exist.
func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	var snsNF *snstypes.NotFoundException
	var sqsNF *sqstypes.QueueDoesNotExist
	if errors.As(err, &snsNF) || errors.As(err, &sqsNF) {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NotFound", "NotFoundException", "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue":
			return true
		}
	}
	return false
}

// classify wraps err with transport.ErrUnavailable when the broker could not
// be reached or failed on its side (retrying may help). The SDK has already
// retried by then.
func classify(err error) error {
	if err == nil || errors.Is(err, transport.ErrUnavailable) {
		return err
	}
	var send *smithyhttp.RequestSendError
	var netErr net.Error
	var resp *smithyhttp.ResponseError
	if errors.As(err, &send) || errors.As(err, &netErr) ||
		(errors.As(err, &resp) && resp.HTTPStatusCode() >= 500) {
		return fmt.Errorf("%w: %w", transport.ErrUnavailable, err)
	}
	return err
}
