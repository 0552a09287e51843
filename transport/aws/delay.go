package aws

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/transport"
)

// Delayed delivery. SNS Publish has no per-message delay; SQS SendMessage
// has one (DelaySeconds, up to 15 minutes) but only on standard queues. So a
// message whose transport.MetadataDeliverAt is in the future is not sent to
// SNS: Publish sends it itself, with SendMessageBatch and DelaySeconds, to
// every SQS queue subscribed to the topic, in exactly the form a raw SNS
// delivery would have given it (the same body and message attributes, from
// the same codec), so consumers cannot tell the difference.
//
// That is only the same as SNS when SNS would have delivered the message to
// every subscribed queue unchanged: every subscription of the topic must be
// an SQS one with raw message delivery and without a filter policy, and the
// topic must be standard (SQS FIFO queues reject a per-message delay).
// Otherwise, and for a delay over MaxDeliveryDelay, Publish fails with
// transport.ErrDelayUnsupported and sends nothing of the call.
//
// Permissions: the delayed path needs, besides sns:Publish,
// sns:ListSubscriptionsByTopic and sns:GetSubscriptionAttributes on the topic,
// and sqs:GetQueueUrl and sqs:SendMessage on the subscribed queues.

// MaxDeliveryDelay is the longest delivery delay Publish honours (SQS
// DelaySeconds: 15 minutes).
const MaxDeliveryDelay = 15 * time.Minute

// subscriberCacheTTL is how long the SQS subscribers of a topic, looked up
// for delayed messages, are reused. A queue subscribed since then misses
// the delayed messages published meanwhile (SNS itself takes up to a minute
// to start delivering to a new subscription).
const subscriberCacheTTL = 15 * time.Second

// subscriber is an SQS queue subscribed to a topic with raw delivery and no
// filter policy.
type subscriber struct {
	arn string
	url string
}

// subscribers is the cached result of a lookup: the queues, or why the topic
// cannot take delayed messages (an ErrDelayUnsupported error).
type subscribers struct {
	queues []subscriber
	err    error
	at     time.Time
}

// deliveryDelays reads transport.MetadataDeliverAt of msgs: the delay of
// each from now (0: none, or a time already past) and whether any is
// delayed. A malformed value is a transport.ErrInvalidConfig error; a delay
// over MaxDeliveryDelay, or any delay on a FIFO topic, is a
// transport.ErrDelayUnsupported error.
func deliveryDelays(topic string, info topicInfo, msgs []*message.Message) ([]time.Duration, bool, error) {
	var delays []time.Duration
	now := time.Now()
	for i, msg := range msgs {
		if msg == nil {
			continue // prepare reports it
		}
		at, ok, err := transport.DeliverAt(msg)
		if err != nil {
			return nil, false, fmt.Errorf("aws: publish to %q: %w", topic, err)
		}
		if !ok || !at.After(now) {
			continue
		}
		d := at.Sub(now)
		if d > MaxDeliveryDelay {
			return nil, false, fmt.Errorf("%w: aws: message %s to %q: delivery in %s, over the SQS maximum %s", transport.ErrDelayUnsupported, msg.UUID, topic, d.Round(time.Second), MaxDeliveryDelay)
		}
		if info.fifo {
			return nil, false, fmt.Errorf("%w: aws: message %s to FIFO topic %q: SQS FIFO queues take no per-message delay", transport.ErrDelayUnsupported, msg.UUID, topic)
		}
		if delays == nil {
			delays = make([]time.Duration, len(msgs))
		}
		delays[i] = d
	}
	return delays, delays != nil, nil
}

// delaySeconds is the DelaySeconds that delivers no earlier than d from now.
func delaySeconds(d time.Duration) int32 {
	return int32(min(math.Ceil(d.Seconds()), MaxDeliveryDelay.Seconds()))
}

// wireMetadata returns msg's metadata as it goes on the wire: without the
// keys that ask the transport for a delay. msg itself when it has neither.
func wireMetadata(msg *message.Message) *message.Message {
	_, a := msg.Metadata[transport.MetadataDeliverAt]
	_, b := msg.Metadata[transport.MetadataRedeliveryDelay]
	if !a && !b {
		return msg
	}
	md := maps.Clone(msg.Metadata)
	delete(md, transport.MetadataDeliverAt)
	delete(md, transport.MetadataRedeliveryDelay)
	c := message.NewMessage(msg.UUID, msg.Payload)
	c.Metadata = md
	c.SetContext(msg.Context())
	return c
}

// subscribersOf returns the SQS queues subscribed to a standard topic, or an
// ErrDelayUnsupported error when SNS would not deliver to them all unchanged.
func (t *Transport) subscribersOf(ctx context.Context, topic string, info topicInfo) ([]subscriber, error) {
	t.mu.Lock()
	c, ok := t.subscribers[info.arn]
	t.mu.Unlock()
	if ok && time.Since(c.at) < subscriberCacheTTL {
		return c.queues, c.err
	}
	c = subscribers{at: time.Now()}
	c.queues, c.err = t.lookupSubscribers(ctx, topic, info)
	if c.err != nil && !errors.Is(c.err, transport.ErrDelayUnsupported) {
		return nil, c.err // not cached: retrying may help
	}
	t.mu.Lock()
	t.subscribers[info.arn] = c
	t.mu.Unlock()
	return c.queues, c.err
}

func (t *Transport) lookupSubscribers(ctx context.Context, topic string, info topicInfo) ([]subscriber, error) {
	unsupported := func(format string, args ...any) error {
		return fmt.Errorf("%w: aws: delayed message to %q: %s", transport.ErrDelayUnsupported, topic, fmt.Sprintf(format, args...))
	}
	var out []subscriber
	p := sns.NewListSubscriptionsByTopicPaginator(t.sns, &sns.ListSubscriptionsByTopicInput{TopicArn: &info.arn})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			if isNotFound(err) {
				return nil, t.publishError(topic, info, err)
			}
			return nil, classify(fmt.Errorf("aws: list subscriptions of %s: %w", info.arn, err))
		}
		for _, sub := range page.Subscriptions {
			subARN, endpoint := awssdk.ToString(sub.SubscriptionArn), awssdk.ToString(sub.Endpoint)
			if proto := awssdk.ToString(sub.Protocol); proto != "sqs" {
				return nil, unsupported("subscription %s is %s, not sqs: only SNS can deliver to it", subARN, proto)
			}
			attrs, err := t.sns.GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: &subARN})
			if err != nil {
				return nil, classify(fmt.Errorf("aws: get attributes of subscription %s: %w", subARN, err))
			}
			if fp := attrs.Attributes["FilterPolicy"]; fp != "" {
				return nil, unsupported("subscription %s -> %s has a filter policy, which only SNS applies", subARN, endpoint)
			}
			if attrs.Attributes["RawMessageDelivery"] != "true" {
				return nil, unsupported("subscription %s -> %s is not raw message delivery", subARN, endpoint)
			}
			// arn:partition:sqs:region:account:name
			parts := strings.Split(endpoint, ":")
			if len(parts) != 6 {
				return nil, unsupported("subscription %s: endpoint %q is not an SQS queue ARN", subARN, endpoint)
			}
			if parts[3] != t.cfg.AWS.Region {
				return nil, unsupported("subscription %s: queue %s is in region %s, this transport's SQS client in %s", subARN, endpoint, parts[3], t.cfg.AWS.Region)
			}
			if strings.HasSuffix(parts[5], fifoSuffix) {
				return nil, unsupported("queue %s is FIFO: SQS FIFO queues take no per-message delay", endpoint)
			}
			url, err := t.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &parts[5], QueueOwnerAWSAccountId: &parts[4]})
			if isNotFound(err) {
				continue // deleted: SNS would not deliver to it either
			}
			if err != nil {
				return nil, classify(fmt.Errorf("aws: get URL of queue %s: %w", endpoint, err))
			}
			out = append(out, subscriber{arn: endpoint, url: awssdk.ToString(url.QueueUrl)})
		}
	}
	return out, nil
}

// sendDelayed sends delayed messages to every subscribed queue with
// SendMessageBatch, in chunks of 10 messages and 256 KiB; it returns the
// indices (in the Publish call) of the messages not sent to every queue.
func (t *Transport) sendDelayed(ctx context.Context, queues []subscriber, later []outgoing, delays []time.Duration) ([]int, error) {
	var failed []int
	var errs []error
	for _, q := range queues {
		for _, c := range chunk(later, maxBatch) {
			idx, err := t.sendBatch(ctx, q, c, delays)
			if err != nil {
				failed = append(failed, idx...)
				errs = append(errs, err)
			}
		}
	}
	return failed, errors.Join(errs...)
}

func (t *Transport) sendBatch(ctx context.Context, q subscriber, batch []outgoing, delays []time.Duration) ([]int, error) {
	entries := make([]sqstypes.SendMessageBatchRequestEntry, len(batch))
	for i, o := range batch {
		attrs := make(map[string]sqstypes.MessageAttributeValue, len(o.wire.attrs))
		for k, v := range o.wire.attrs {
			attrs[k] = sqstypes.MessageAttributeValue{DataType: awssdk.String(stringType), StringValue: awssdk.String(v)}
		}
		entries[i] = sqstypes.SendMessageBatchRequestEntry{
			Id:                awssdk.String(strconv.Itoa(i)),
			MessageBody:       awssdk.String(o.wire.body),
			MessageAttributes: attrs,
			// The delay counts from now, later than when it was computed:
			// never early.
			DelaySeconds: delaySeconds(delays[o.index]),
		}
	}
	res, err := t.sqs.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &q.url, Entries: entries})
	if err != nil {
		all := make([]int, len(batch))
		for i, o := range batch {
			all[i] = o.index
		}
		return all, classify(fmt.Errorf("aws: send delayed messages to %s: %w", q.arn, err))
	}
	if len(res.Failed) == 0 {
		return nil, nil
	}
	senderFault := false
	var idx []int
	var reasons []string
	for _, f := range res.Failed {
		i, err := strconv.Atoi(awssdk.ToString(f.Id))
		if err != nil || i < 0 || i >= len(batch) {
			continue
		}
		idx = append(idx, batch[i].index)
		reasons = append(reasons, fmt.Sprintf("%s: %s %s", batch[i].msg.UUID, awssdk.ToString(f.Code), awssdk.ToString(f.Message)))
		senderFault = senderFault || f.SenderFault
	}
	err = fmt.Errorf("aws: SendMessageBatch to %s: entries failed: %s", q.arn, strings.Join(reasons, "; "))
	if !senderFault {
		err = fmt.Errorf("%w: %w", transport.ErrUnavailable, err)
	}
	return idx, err
}
