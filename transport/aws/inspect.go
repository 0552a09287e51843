package aws

import (
	"context"
	"fmt"
	"strconv"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/transport"
)

var (
	_ transport.Inspector = (*Transport)(nil)
	_ transport.Pinger    = (*Transport)(nil)
)

// PingTimeout bounds one Ping, SDK retries included.
const PingTimeout = time.Second

// DepthAttributes are the SQS queue attributes DepthFromAttributes reads.
var DepthAttributes = []sqstypes.QueueAttributeName{
	sqstypes.QueueAttributeNameApproximateNumberOfMessages,
	sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
	sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed,
}

// DepthFromAttributes turns the attributes of a GetQueueAttributes answer
// into a Depth: ApproximateNumberOfMessages (visible),
// ApproximateNumberOfMessagesNotVisible (in flight) and
// ApproximateNumberOfMessagesDelayed. SQS has no attribute for the age of the
// oldest message (that is the CloudWatch metric ApproximateAgeOfOldestMessage),
// so OldestAgeKnown is false. Missing or malformed attributes count 0.
func DepthFromAttributes(attrs map[string]string) transport.Depth {
	n := func(name sqstypes.QueueAttributeName) int64 {
		v, _ := strconv.ParseInt(attrs[string(name)], 10, 64)
		return v
	}
	return transport.Depth{
		Visible:  n(sqstypes.QueueAttributeNameApproximateNumberOfMessages),
		InFlight: n(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible),
		Delayed:  n(sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed),
	}
}

// QueueDepth reads the approximate depth of a queue (its name as declared,
// without ".fifo") with one GetQueueAttributes call, after the queue's URL is
// known. It never receives messages. OldestAgeKnown is false: see
// DepthFromAttributes; alarm on CloudWatch's ApproximateAgeOfOldestMessage
// for the age. SQS's counts are approximate and lag the queue by up to about
// a minute.
func (t *Transport) QueueDepth(ctx context.Context, queue string) (transport.Depth, error) {
	if err := t.begin(); err != nil {
		return transport.Depth{}, err
	}
	defer t.wg.Done()
	info, err := t.resolveQueue(ctx, queue)
	if err != nil {
		return transport.Depth{}, err
	}
	out, err := t.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &info.url, AttributeNames: DepthAttributes})
	if isNotFound(err) {
		return transport.Depth{}, fmt.Errorf("%w: aws: SQS queue %q (%s) no longer exists", transport.ErrUnknownQueue, queue, info.url)
	}
	if err != nil {
		return transport.Depth{}, classify(fmt.Errorf("aws: depth of queue %q: %w", queue, err))
	}
	return DepthFromAttributes(out.Attributes), nil
}

// Ping checks that SQS answers, within PingTimeout: GetQueueAttributes
// (QueueArn) on a queue this transport has declared or used, which the
// runtime policy allows; before any, ListQueues with one result. An
// unreachable endpoint is a transport.ErrUnavailable error; so is a 5xx.
func (t *Transport) Ping(ctx context.Context) error {
	if err := t.begin(); err != nil {
		return err
	}
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, PingTimeout)
	defer cancel()
	t.mu.Lock()
	var url, name string
	for n, q := range t.queues {
		if name == "" || n < name {
			url, name = q.url, n
		}
	}
	t.mu.Unlock()
	var err error
	if url != "" {
		_, err = t.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
			QueueUrl: &url, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
		})
	} else {
		_, err = t.sqs.ListQueues(ctx, &sqs.ListQueuesInput{MaxResults: awssdk.Int32(1)})
	}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded { // the SDK's error may not say so
			return fmt.Errorf("aws: ping SQS: %w: %w", transport.ErrUnavailable, err)
		}
		return classify(fmt.Errorf("aws: ping SQS: %w", err))
	}
	return nil
}
