package aws

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"

	"github.com/edaproject/eda/transport"
)

// outgoing is one message ready for SNS.
type outgoing struct {
	index int // in the Publish call
	msg   *message.Message
	wire  wireMessage
	group string // FIFO only
	dedup string // FIFO only
	// claimKey is the claim-check blob of the payload, "" when it travels
	// in the body.
	claimKey string
}

// Publish sends msgs to the SNS topic named topic ("name" or "name.fifo"
// when declared FIFO); every queue subscribed to it gets a copy.
//
// One message goes out with Publish; several go out with PublishBatch in
// chunks of up to 10 messages and 256 KiB. The chunks of a standard topic
// are sent concurrently (Config.PublishConcurrency); a FIFO topic's chunks go
// one after another so each group keeps its order. watermill-aws's SNS
// publisher sends one Publish per message and sets TargetArn, which fauxqs
// rejects; this publisher calls the SDK itself and sets TopicArn (equally
// valid on AWS).
//
// Every message is checked before anything is sent: too large (over
// MaxMessageSize, or the wire form over MaxWireSize) fails with
// transport.ErrMessageTooLarge unless a claim check is configured, which
// then stores the payload of each message whose wire form is over
// MaxWireSize (ClaimCheckConfig); a message
// for a FIFO topic without transport.MetadataGroupID fails with
// transport.ErrMissingGroupID. When calls to SNS fail, Publish returns a
// *PublishError listing the messages not sent; the others were sent.
//
// A message with transport.MetadataDeliverAt in the future (at most
// MaxDeliveryDelay ahead) skips SNS: it is sent with SQS SendMessageBatch and
// DelaySeconds to every queue subscribed to the topic, as SNS would have
// delivered it (see delay.go; this needs sqs:SendMessage on those queues).
// A topic where that would differ from SNS (FIFO, a filter policy, a
// subscription that is not raw SQS) fails with transport.ErrDelayUnsupported
// and nothing of the call is sent; a malformed MetadataDeliverAt fails with
// transport.ErrInvalidConfig. Neither transport.MetadataDeliverAt nor
// transport.MetadataRedeliveryDelay is sent.
//
// The calls use the first message's context (msg.Context()).
func (t *Transport) Publish(topic string, msgs ...*message.Message) error {
	if strings.TrimSpace(topic) == "" {
		return fmt.Errorf("%w: aws: empty topic", transport.ErrInvalidConfig)
	}
	if err := t.begin(); err != nil {
		return err
	}
	defer t.wg.Done()
	if len(msgs) == 0 {
		return nil
	}
	ctx := msgs[0].Context()
	info, err := t.resolveTopic(ctx, topic)
	if err != nil {
		return err
	}
	delays, delayed, err := deliveryDelays(topic, info, msgs)
	if err != nil {
		return err
	}
	var queues []subscriber
	if delayed {
		if queues, err = t.subscribersOf(ctx, topic, info); err != nil {
			return err
		}
	}
	out, err := t.prepare(ctx, topic, info, msgs)
	if err != nil {
		return err
	}
	var failed []int
	var errs []error
	if !delayed {
		failed, err = t.publishSNS(ctx, topic, info, out)
		errs = append(errs, err)
	} else {
		var now, later []outgoing
		for _, o := range out {
			if delays[o.index] > 0 {
				later = append(later, o)
			} else {
				now = append(now, o)
			}
		}
		if len(now) > 0 {
			idx, err := t.publishSNS(ctx, topic, info, now)
			failed, errs = append(failed, idx...), append(errs, err)
		}
		idx, err := t.sendDelayed(ctx, queues, later, delays)
		failed, errs = append(failed, idx...), append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		slices.Sort(failed)
		failed = slices.Compact(failed)
		e := &PublishError{Topic: topic, Total: len(out), Err: err}
		for _, i := range failed {
			e.Failed = append(e.Failed, out[i].msg.UUID)
		}
		return e
	}
	return nil
}

// publishSNS sends messages to the topic; it returns the indices (in the
// Publish call) of those not sent.
func (t *Transport) publishSNS(ctx context.Context, topic string, info topicInfo, out []outgoing) ([]int, error) {
	if len(out) == 1 {
		if err := t.publishOne(ctx, topic, info, out[0]); err != nil {
			return []int{out[0].index}, err
		}
		return nil, nil
	}
	size := maxBatch
	if info.fifo {
		// The SDK sends batch entries as member.1 ... member.10, sorted as
		// strings (url.Values), and fauxqs takes them in that order: entry 10
		// would come second. Nine entries sort the same either way; AWS
		// itself orders by index.
		size = maxBatch - 1
	}
	chunks := chunk(out, size)
	var (
		mu     sync.Mutex
		failed []int
		errs   []error
	)
	record := func(idx []int, err error) {
		mu.Lock()
		defer mu.Unlock()
		failed = append(failed, idx...)
		errs = append(errs, err)
	}
	if info.fifo || len(chunks) == 1 {
		// In order; after a failure the rest is not sent, so a group never
		// has a gap.
		for i, c := range chunks {
			if idx, err := t.publishBatch(ctx, topic, info, c); err != nil {
				record(idx, err)
				for _, rest := range chunks[i+1:] {
					for _, o := range rest {
						failed = append(failed, o.index)
					}
					t.dropClaims(ctx, rest, nil)
				}
				break
			}
		}
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, t.cfg.PublishConcurrency)
		for _, c := range chunks {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if idx, err := t.publishBatch(ctx, topic, info, c); err != nil {
					record(idx, err)
				}
			}()
		}
		wg.Wait()
	}
	return failed, errors.Join(errs...)
}

// PublishError is returned by Publish when some of its messages were not
// sent and others may have been (a failed or partly failed PublishBatch):
// Failed lists the UUIDs of those not sent, in the order given; sending
// them again is enough. It unwraps to the cause
// (transport.ErrUnavailable, transport.ErrUnknownTopic, ...). Errors found
// before anything is sent (too large, no group id) are returned as they are.
type PublishError struct {
	Topic  string
	Failed []string
	Total  int
	Err    error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("aws: publish to %q: %d of %d messages not sent: %v", e.Topic, len(e.Failed), e.Total, e.Err)
}

func (e *PublishError) Unwrap() error { return e.Err }

// NotSent lists the UUIDs of the messages not sent (outbox.PartialError):
// the outbox relay resends only those.
func (e *PublishError) NotSent() []string { return e.Failed }

// prepare checks and encodes every message; the claim check stores payloads
// only once all messages passed the checks.
func (t *Transport) prepare(ctx context.Context, topic string, info topicInfo, msgs []*message.Message) ([]outgoing, error) {
	out := make([]outgoing, len(msgs))
	var claim []int
	for i, msg := range msgs {
		if msg == nil {
			return nil, fmt.Errorf("%w: aws: message %d to %q is nil", transport.ErrInvalidConfig, i, topic)
		}
		o := outgoing{index: i, msg: msg}
		if info.fifo {
			if o.group = msg.Metadata.Get(transport.MetadataGroupID); o.group == "" {
				return nil, fmt.Errorf("%w: aws: message %s to FIFO topic %q", transport.ErrMissingGroupID, msg.UUID, topic)
			}
			o.group = fifoID(o.group)
			o.dedup = fifoID(transport.DedupID(msg))
		}
		wm := wireMetadata(msg) // the delay requests are for the transport, not the wire
		w, err := encode(wm, "", t.cfg.Attributes)
		if err != nil {
			return nil, err
		}
		o.wire = w
		// With a claim check, what SNS counts decides; without, the
		// advertised MaxMessageSize too (Features).
		if size := transport.MessageSize(wm); t.blobs == nil && (size > MaxMessageSize || w.size() > MaxWireSize) {
			return nil, transport.TooLargeError(topic, msg, max(size, w.size()), MaxMessageSize)
		}
		if w.size() > MaxWireSize {
			claim = append(claim, i)
		}
		out[i] = o
	}
	if err := t.storeClaims(ctx, topic, out, claim); err != nil {
		return nil, err
	}
	return out, nil
}

// chunk splits messages into PublishBatch calls: at most size entries and
// MaxWireSize bytes each.
func chunk(out []outgoing, size int) [][]outgoing {
	var chunks [][]outgoing
	start, bytes := 0, 0
	for i, o := range out {
		s := o.wire.size()
		if i > start && (i-start == size || bytes+s > MaxWireSize) {
			chunks = append(chunks, out[start:i])
			start, bytes = i, 0
		}
		bytes += s
	}
	return append(chunks, out[start:])
}

func (t *Transport) publishOne(ctx context.Context, topic string, info topicInfo, o outgoing) error {
	in := &sns.PublishInput{
		TopicArn:          awssdk.String(info.arn),
		Message:           awssdk.String(o.wire.body),
		MessageAttributes: snsAttributes(o.wire.attrs),
	}
	if info.fifo {
		in.MessageGroupId, in.MessageDeduplicationId = &o.group, &o.dedup
	}
	if _, err := t.sns.Publish(ctx, in); err != nil {
		t.dropClaims(ctx, []outgoing{o}, err)
		return t.publishError(topic, info, err)
	}
	return nil
}

// publishBatch sends one PublishBatch; on error it returns the indices of
// the messages not sent.
func (t *Transport) publishBatch(ctx context.Context, topic string, info topicInfo, batch []outgoing) ([]int, error) {
	entries := make([]snstypes.PublishBatchRequestEntry, len(batch))
	for i, o := range batch {
		entries[i] = snstypes.PublishBatchRequestEntry{
			Id:                awssdk.String(strconv.Itoa(i)),
			Message:           awssdk.String(o.wire.body),
			MessageAttributes: snsAttributes(o.wire.attrs),
		}
		if info.fifo {
			entries[i].MessageGroupId, entries[i].MessageDeduplicationId = awssdk.String(o.group), awssdk.String(o.dedup)
		}
	}
	res, err := t.sns.PublishBatch(ctx, &sns.PublishBatchInput{TopicArn: awssdk.String(info.arn), PublishBatchRequestEntries: entries})
	if err != nil {
		all := make([]int, len(batch))
		for i, o := range batch {
			all[i] = o.index
		}
		t.dropClaims(ctx, batch, err)
		return all, t.publishError(topic, info, err)
	}
	if len(res.Failed) == 0 {
		return nil, nil
	}
	senderFault := false
	var idx []int
	var reasons []string
	var notSent []outgoing
	defer func() { t.dropClaims(ctx, notSent, nil) }()
	for _, f := range res.Failed {
		i, err := strconv.Atoi(awssdk.ToString(f.Id))
		if err != nil || i < 0 || i >= len(batch) {
			continue
		}
		idx = append(idx, batch[i].index)
		notSent = append(notSent, batch[i])
		reasons = append(reasons, fmt.Sprintf("%s: %s %s", batch[i].msg.UUID, awssdk.ToString(f.Code), awssdk.ToString(f.Message)))
		senderFault = senderFault || f.SenderFault
	}
	err = fmt.Errorf("aws: PublishBatch entries failed: %s", strings.Join(reasons, "; "))
	if !senderFault {
		err = fmt.Errorf("%w: %w", transport.ErrUnavailable, err)
	}
	return idx, err
}

func (t *Transport) publishError(topic string, info topicInfo, err error) error {
	if isNotFound(err) {
		// Deleted since it was resolved: forget it, so the next call looks again.
		t.mu.Lock()
		delete(t.topics, topic)
		t.mu.Unlock()
		return fmt.Errorf("%w: aws: SNS topic %q (%s): %w", transport.ErrUnknownTopic, topic, info.arn, err)
	}
	return classify(fmt.Errorf("aws: publish to %q: %w", topic, err))
}

func snsAttributes(attrs map[string]string) map[string]snstypes.MessageAttributeValue {
	out := make(map[string]snstypes.MessageAttributeValue, len(attrs))
	for k, v := range attrs {
		out[k] = snstypes.MessageAttributeValue{DataType: awssdk.String(stringType), StringValue: awssdk.String(v)}
	}
	return out
}

// fifoID returns id when SNS accepts it as a MessageGroupId or
// MessageDeduplicationId (1 to 128 ASCII letters, digits and punctuation),
// else its SHA-256 in hex: equal ids stay equal.
func fifoID(id string) string {
	ok := len(id) <= 128
	for i := 0; ok && i < len(id); i++ {
		ok = id[i] > ' ' && id[i] <= '~'
	}
	if ok {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}
