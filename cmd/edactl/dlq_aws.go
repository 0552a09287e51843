package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// awsDLQ reads SQS dead-letter and poison queues with the SDK: the
// transport's subscriber would consume them, and dlq show must not.
type awsDLQ struct {
	tr         *edaaws.Transport
	sqs        *sqs.Client
	visibility time.Duration  // how long received messages stay hidden while edactl holds them
	maxReceive map[string]int // source queue → its maxReceiveCount
}

func (a *awsDLQ) close() { _ = a.tr.Close() }

// sqsQueue is a queue with its attributes.
type sqsQueue struct {
	name, url string
	attrs     map[string]string
}

func (q sqsQueue) arn() string { return q.attrs["QueueArn"] }

// redriveTarget returns the ARN of the queue's dead-letter queue, if any.
func (q sqsQueue) redriveTarget() string {
	var rp struct {
		DeadLetterTargetArn string `json:"deadLetterTargetArn"`
	}
	if json.Unmarshal([]byte(q.attrs["RedrivePolicy"]), &rp) != nil {
		return ""
	}
	return rp.DeadLetterTargetArn
}

func nameOfARN(arn string) string { return arn[strings.LastIndexByte(arn, ':')+1:] }

// logical is the name eda uses for an SQS queue: without ".fifo".
func logical(name string) string { return strings.TrimSuffix(name, ".fifo") }

func (a *awsDLQ) attributes(ctx context.Context, url string) (map[string]string, error) {
	out, err := a.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &url, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll},
	})
	if err != nil {
		return nil, fmt.Errorf("get attributes of %s: %w", url, err)
	}
	return out.Attributes, nil
}

// queues lists the queues whose name starts with prefix, with attributes.
func (a *awsDLQ) queues(ctx context.Context, prefix string) ([]sqsQueue, error) {
	in := &sqs.ListQueuesInput{MaxResults: awssdk.Int32(1000)}
	if prefix != "" {
		in.QueueNamePrefix = &prefix
	}
	var out []sqsQueue
	p := sqs.NewListQueuesPaginator(a.sqs, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list SQS queues: %w", err)
		}
		for _, url := range page.QueueUrls {
			attrs, err := a.attributes(ctx, url)
			if err != nil {
				return nil, err
			}
			out = append(out, sqsQueue{name: url[strings.LastIndexByte(url, '/')+1:], url: url, attrs: attrs})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func (a *awsDLQ) list(ctx context.Context, prefix string) ([]deadQueue, error) {
	qs, err := a.queues(ctx, prefix)
	if err != nil {
		return nil, err
	}
	sources := map[string][]string{} // DLQ ARN → source queues
	for _, q := range qs {
		if t := q.redriveTarget(); t != "" {
			sources[t] = append(sources[t], logical(q.name))
		}
	}
	var out []deadQueue
	for _, q := range qs {
		d := deadQueue{Queue: logical(q.name), Sources: sources[q.arn()]}
		name := logical(q.name)
		switch {
		case len(d.Sources) > 0:
			d.Kind = kindDeadLetter
		case strings.Contains(name, "poison"):
			d.Kind = kindPoison
		case strings.HasSuffix(name, "-dlq"):
			d.Kind = kindNamed
		default:
			continue
		}
		depth := edaaws.DepthFromAttributes(q.attrs) // what the transport's Inspector reads
		d.Messages, d.InFlight = depth.Visible, depth.InFlight
		out = append(out, d)
	}
	return out, nil
}

// queueURL finds a queue by its eda name (or SQS name).
func (a *awsDLQ) queueURL(ctx context.Context, name string) (string, error) {
	candidates := []string{name}
	if !strings.HasSuffix(name, ".fifo") {
		candidates = append(candidates, name+".fifo")
	}
	for _, c := range candidates {
		out, err := a.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: awssdk.String(c)})
		if err == nil {
			return awssdk.ToString(out.QueueUrl), nil
		}
		var nf *sqstypes.QueueDoesNotExist
		if !errors.As(err, &nf) && !strings.Contains(err.Error(), "NonExistentQueue") && !strings.Contains(err.Error(), "QueueDoesNotExist") {
			return "", fmt.Errorf("find queue %q: %w", c, err)
		}
	}
	return "", fmt.Errorf("%w: no SQS queue %s", transport.ErrUnknownQueue, strings.Join(candidates, " or "))
}

// receive takes up to n messages and hides them for a.visibility.
func (a *awsDLQ) receive(ctx context.Context, url string, n int) ([]sqstypes.Message, error) {
	out, err := a.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    &url,
		MaxNumberOfMessages:         int32(min(n, 10)),
		VisibilityTimeout:           int32(a.visibility / time.Second),
		WaitTimeSeconds:             1,
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
	})
	if err != nil {
		return nil, fmt.Errorf("receive from %s: %w", url, err)
	}
	return out.Messages, nil
}

// release makes received messages visible again at once. It runs even
// when ctx is cancelled (Ctrl-C), so nothing stays hidden for long.
func (a *awsDLQ) release(ctx context.Context, url string, msgs []sqstypes.Message) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	for chunk := range slices.Chunk(msgs, 10) {
		in := &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: &url}
		for i, m := range chunk {
			in.Entries = append(in.Entries, sqstypes.ChangeMessageVisibilityBatchRequestEntry{
				Id: awssdk.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0,
			})
		}
		out, err := a.sqs.ChangeMessageVisibilityBatch(ctx, in)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range out.Failed {
			errs = append(errs, fmt.Errorf("%s: %s", awssdk.ToString(f.Code), awssdk.ToString(f.Message)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("make messages visible again in %s (they reappear after -visibility anyway): %w", url, err)
	}
	return nil
}

// attrsOf returns the message attributes as strings.
func attrsOf(m sqstypes.Message) map[string]string {
	attrs := make(map[string]string, len(m.MessageAttributes))
	for k, v := range m.MessageAttributes {
		if v.StringValue != nil {
			attrs[k] = *v.StringValue
		} else if v.BinaryValue != nil {
			attrs[k] = string(v.BinaryValue)
		}
	}
	return attrs
}

// describe decodes a received message.
func (a *awsDLQ) describe(ctx context.Context, m sqstypes.Message, dlqSource string) (deadMessage, string, []byte, error) {
	id := awssdk.ToString(m.MessageId)
	md, payload, claim, err := decodeSQS(awssdk.ToString(m.Body), attrsOf(m))
	if err != nil {
		return deadMessage{ID: id}, "", nil, fmt.Errorf("message %s: %w", id, err)
	}
	if src := m.Attributes[string(sqstypes.MessageSystemAttributeNameDeadLetterQueueSourceArn)]; src != "" {
		dlqSource = logical(nameOfARN(src))
	}
	d := newDeadMessage(id, md, payload, dlqSource, a.maxReceiveCount(ctx, dlqSource))
	d.ReceiveCount = m.Attributes[string(sqstypes.MessageSystemAttributeNameApproximateReceiveCount)]
	if at, ok := sentAt(m); ok {
		d.Enqueued = at.UTC().Format(time.RFC3339Nano)
	}
	d.ClaimCheck = claim
	return d, dlqSource, payload, nil
}

// sentAt is the message's SentTimestamp: when SQS accepted it (for a
// message its redrive policy moved, AWS keeps the original one).
func sentAt(m sqstypes.Message) (time.Time, bool) {
	ms, err := strconv.ParseInt(m.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// maxReceiveCount returns the maxReceiveCount of queue's redrive policy:
// how many times it delivered a message its policy dead-lettered. 0 when
// unknown.
func (a *awsDLQ) maxReceiveCount(ctx context.Context, queue string) int {
	if queue == "" {
		return 0
	}
	if n, ok := a.maxReceive[queue]; ok {
		return n
	}
	n := 0
	if url, err := a.queueURL(ctx, queue); err == nil {
		if attrs, err := a.attributes(ctx, url); err == nil {
			var rp struct {
				MaxReceiveCount json.RawMessage `json:"maxReceiveCount"` // a number, or a string of one
			}
			if json.Unmarshal([]byte(attrs["RedrivePolicy"]), &rp) == nil {
				n, _ = strconv.Atoi(strings.Trim(string(rp.MaxReceiveCount), `"`))
			}
		}
	}
	if a.maxReceive == nil {
		a.maxReceive = map[string]int{}
	}
	a.maxReceive[queue] = n
	return n
}

// sourceOf returns the one queue whose redrive policy targets the
// dead-letter queue url, "" when none or several do (then the poison
// metadata or -to decide).
func (a *awsDLQ) sourceOf(ctx context.Context, url string) (string, error) {
	attrs, err := a.attributes(ctx, url)
	if err != nil {
		return "", err
	}
	arn := attrs["QueueArn"]
	// AWS answers ListDeadLetterSourceQueues; emulators may not.
	if out, err := a.sqs.ListDeadLetterSourceQueues(ctx, &sqs.ListDeadLetterSourceQueuesInput{QueueUrl: &url}); err == nil {
		if len(out.QueueUrls) == 1 {
			u := out.QueueUrls[0]
			return logical(u[strings.LastIndexByte(u, '/')+1:]), nil
		}
		if len(out.QueueUrls) > 1 {
			return "", nil
		}
	}
	// eda names a dead-letter queue after its queue ("inventory-dlq").
	name := logical(nameOfARN(arn))
	if base, ok := strings.CutSuffix(name, "-dlq"); ok {
		if u, err := a.queueURL(ctx, base); err == nil {
			if qa, err := a.attributes(ctx, u); err == nil && (sqsQueue{attrs: qa}).redriveTarget() == arn {
				return base, nil
			}
		}
	}
	if strings.Contains(name, "poison") {
		return "", nil // a poison queue: its messages say where they came from
	}
	qs, err := a.queues(ctx, "")
	if err != nil {
		return "", err
	}
	var found []string
	for _, q := range qs {
		if q.redriveTarget() == arn {
			found = append(found, logical(q.name))
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return "", nil
}

func (a *awsDLQ) peek(ctx context.Context, queue string, limit int) ([]deadMessage, error) {
	url, err := a.queueURL(ctx, queue)
	if err != nil {
		return nil, err
	}
	src, err := a.sourceOf(ctx, url)
	if err != nil {
		return nil, err
	}
	var held []sqstypes.Message
	var out []deadMessage
	var errs []error
	for len(held) < limit {
		msgs, err := a.receive(ctx, url, limit-len(held))
		if err != nil {
			errs = append(errs, err)
			break
		}
		if len(msgs) == 0 {
			break
		}
		held = append(held, msgs...)
		for _, m := range msgs {
			d, _, _, err := a.describe(ctx, m, src)
			if err != nil {
				d.Error = "cannot decode: " + err.Error()
			}
			out = append(out, d)
		}
	}
	errs = append(errs, a.release(ctx, url, held))
	return out, errors.Join(errs...)
}

// redrive moves what was in the queue when it started (o.started: by
// SentTimestamp, and each SQS message id once) and o selects. It holds every
// message it receives and does not move (not selected, arrived later, failed)
// until it is done, so each receive brings new ones, then makes them all
// visible again at once; it stops at the first receive that brings none.
func (a *awsDLQ) redrive(ctx context.Context, queue string, o redriveOptions) (res redriveResult, err error) {
	url, err := a.queueURL(ctx, queue)
	if err != nil {
		return res, err
	}
	urls := map[string]string{} // target queue → URL
	if o.to != "" {
		// A -to that does not exist fails before anything is received.
		u, err := a.queueURL(ctx, o.to)
		if err != nil {
			return res, fmt.Errorf("-to: %w", err)
		}
		urls[o.to] = u
	}
	src := ""
	if o.to == "" {
		if src, err = a.sourceOf(ctx, url); err != nil {
			return res, err
		}
	}
	kept := map[string]sqstypes.Message{} // received, not moved: made visible again at the end
	seen := map[string]bool{}             // message ids considered
	defer func() {
		if rerr := a.release(ctx, url, slices.Collect(maps.Values(kept))); rerr != nil {
			res.Failed = append(res.Failed, failedMove{Error: rerr.Error()})
		}
	}()
	// SentTimestamp has millisecond precision, from the server's clock.
	cutoff := o.started.Truncate(time.Millisecond)
	for o.limit == 0 || len(res.Moved) < o.limit {
		msgs, err := a.receive(ctx, url, 10)
		if err != nil {
			return res, err
		}
		fresh := 0
		for _, m := range msgs {
			id := awssdk.ToString(m.MessageId)
			if seen[id] {
				kept[id] = m // its visibility ran out while we held it: the newest receipt
				continue
			}
			fresh++
			seen[id] = true
			if at, ok := sentAt(m); ok && at.After(cutoff) {
				kept[id] = m
				res.Later++
				continue
			}
			if o.limit > 0 && len(res.Moved) >= o.limit {
				kept[id] = m
				continue
			}
			d, dlqSource, payload, err := a.describe(ctx, m, src)
			if err != nil {
				kept[id] = m
				res.Failed = append(res.Failed, failedMove{ID: d.ID, Error: err.Error()})
				continue
			}
			if !o.selects(d) {
				kept[id] = m
				continue
			}
			t, err := redriveTarget(dlqSource, d.Metadata, o.to)
			md := redriveMetadata(d, dlqSource, a.maxReceiveCount(ctx, dlqSource))
			moved := movedMessage{ID: d.ID, EventID: d.EventID, Type: d.Type, Reason: d.Reason, To: t.String()}
			moved.Redrives, _ = strconv.Atoi(md[middleware.MetadataPoisonRedrives])
			if err == nil && o.dryRun {
				kept[id] = m
				res.Moved = append(res.Moved, moved)
				continue
			}
			if err == nil {
				err = a.send(ctx, t, m, md, payload, d.ClaimCheck, urls)
			}
			if err != nil {
				kept[id] = m
				res.Failed = append(res.Failed, failedMove{ID: d.ID, EventID: d.EventID, Error: err.Error()})
				continue
			}
			// Sent: only now delete it from the dead-letter queue.
			if _, err := a.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: m.ReceiptHandle}); err != nil {
				res.Failed = append(res.Failed, failedMove{ID: d.ID, EventID: d.EventID,
					Error: fmt.Sprintf("sent to %s but not deleted from %s (a later redrive sends it again; the inbox drops the duplicate): %v", t, queue, err)})
				continue
			}
			res.Moved = append(res.Moved, moved)
		}
		if fresh == 0 {
			break // nothing left that this redrive has not considered
		}
	}
	return res, nil
}

// send re-sends a dead message: to a queue as it was (body and attributes,
// without the redrive keys), or to a topic through the transport.
func (a *awsDLQ) send(ctx context.Context, t target, m sqstypes.Message, md message.Metadata, payload []byte, claim string, urls map[string]string) error {
	if t.topic != "" {
		if claim != "" {
			return fmt.Errorf("claim-checked message: redrive it to a queue with -to")
		}
		msg := message.NewMessage(awssdk.ToString(m.MessageId), payload)
		if id := md.Get(transport.MetadataEventID); id != "" {
			msg.UUID = id
		}
		msg.Metadata = md
		msg.SetContext(ctx)
		return a.tr.Publish(t.topic, msg)
	}
	url, ok := urls[t.queue]
	if !ok {
		var err error
		if url, err = a.queueURL(ctx, t.queue); err != nil {
			return err
		}
		urls[t.queue] = url
	}
	body, attrs, err := reencodeSQS(awssdk.ToString(m.Body), attrsOf(m), md)
	if err != nil {
		return err
	}
	in := &sqs.SendMessageInput{QueueUrl: &url, MessageBody: &body, MessageAttributes: map[string]sqstypes.MessageAttributeValue{}}
	for k, v := range attrs {
		in.MessageAttributes[k] = sqstypes.MessageAttributeValue{DataType: awssdk.String("String"), StringValue: awssdk.String(v)}
	}
	if strings.HasSuffix(url, ".fifo") {
		group := groupID(m.Attributes[string(sqstypes.MessageSystemAttributeNameMessageGroupId)], md)
		if group == "" {
			return fmt.Errorf("%w: %s is FIFO and the message has no group id", transport.ErrMissingGroupID, t.queue)
		}
		in.MessageGroupId = &group
		// A fresh deduplication id (the original one may still be within
		// the 5-minute window), stable for this dead message so a redrive
		// repeated after a failed delete is dropped as a duplicate.
		in.MessageDeduplicationId = awssdk.String("redrive-" + awssdk.ToString(m.MessageId))
	}
	if _, err := a.sqs.SendMessage(ctx, in); err != nil {
		return fmt.Errorf("send to %s: %w", t.queue, err)
	}
	return nil
}
