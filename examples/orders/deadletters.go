package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/memory"
	"github.com/edaproject/eda/transport/postgres"
)

// deadLetter is one message in the poison queue or a DLQ.
type deadLetter struct {
	In                         string // the poison queue or DLQ holding it
	Queue, Type, Reason, Error string // Queue: where it failed
}

// deadLetters reads what the poison queue and the queues' dead-letter
// queues hold, for the demo's summary, and takes nothing from them: they
// belong to the operator, who lists, inspects and redrives them with edactl
// dlq. How it reads depends on the transport:
//   - postgres: a SELECT on the transport's messages table (no lease taken);
//   - aws: SQS queue attributes for the counts, and, when they change, a
//     peek that receives the messages and makes them visible again at once
//     (as edactl dlq show does), remembering each by its message id;
//   - memory (one process, -role all): the poisoned messages as the poison
//     middleware publishes them, and the transport's Depth of each queue.
type deadLetters struct {
	tr      transport.Transport
	queues  []string          // the poison queue, then the DLQs
	sources map[string]string // DLQ → the queue it backs

	pool   *pgxpool.Pool // postgres
	schema string
	closer func()

	mu        sync.Mutex
	published []deadLetter                     // memory: what Poison published
	seen      map[string]map[string]deadLetter // aws: queue → message id → letter
}

func newDeadLetters(ctx context.Context, o options, tr transport.Transport, d *db) (*deadLetters, error) {
	dl := &deadLetters{tr: tr, sources: map[string]string{}, seen: map[string]map[string]deadLetter{}, closer: func() {}}
	if _, ok := tr.(*postgres.Transport); ok {
		dl.schema = o.Schema + "_transport"
		dl.pool = d.pool
		if o.TransportDB != "" {
			p, err := pgxpool.New(ctx, o.TransportDB)
			if err != nil {
				return nil, err
			}
			dl.pool, dl.closer = p, p.Close
		}
	}
	return dl, nil
}

func (dl *deadLetters) close() { dl.closer() }

// publisher returns the publisher the poison middleware uses: tr, which on
// the memory transport also records what it poisons.
func (dl *deadLetters) publisher(tr transport.Transport) message.Publisher {
	if _, ok := tr.(*memory.Transport); ok {
		return recordingPublisher{Publisher: tr, dl: dl}
	}
	return tr
}

type recordingPublisher struct {
	message.Publisher
	dl *deadLetters
}

func (p recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	p.dl.mu.Lock()
	defer p.dl.mu.Unlock()
	for _, m := range msgs {
		p.dl.published = append(p.dl.published, letter("", m.Metadata, ""))
	}
	return nil
}

// watch sets the queues to report: poison, and the DLQs of app's queues.
func (dl *deadLetters) watch(poison string, queues []transport.Queue) {
	dl.queues = []string{poison}
	for _, q := range queues {
		if q.DeadLetterQueue != "" {
			dl.queues = append(dl.queues, q.DeadLetterQueue)
			dl.sources[q.DeadLetterQueue] = q.Name
		}
	}
}

// letter describes a dead message from its metadata.
func letter(in string, md message.Metadata, dlqSource string) deadLetter {
	dl := deadLetter{In: in, Queue: md.Get(middleware.MetadataPoisonQueue), Type: md.Get(eda.MetadataType),
		Reason: md.Get(middleware.MetadataPoisonReason), Error: md.Get(middleware.MetadataPoisonError)}
	if dl.Reason == "" { // moved by the broker's redrive policy: no reason recorded
		dl.Queue, dl.Reason = dlqSource, "max_receive_count"
	}
	return dl
}

// snapshot returns what the dead queues hold now.
func (dl *deadLetters) snapshot(ctx context.Context) ([]deadLetter, error) {
	if len(dl.queues) == 0 {
		return nil, nil
	}
	switch tr := dl.tr.(type) {
	case *postgres.Transport:
		return dl.readPostgres(ctx)
	case *edaaws.Transport:
		return dl.readSQS(ctx, tr.SQS())
	case *memory.Transport:
		dl.mu.Lock()
		out := slices.Clone(dl.published)
		dl.mu.Unlock()
		for i := range out {
			out[i].In = dl.queues[0]
		}
		for _, q := range dl.queues[1:] {
			visible, inFlight, err := tr.Depth(q)
			if err != nil {
				return nil, err
			}
			for range visible + inFlight {
				out = append(out, deadLetter{In: q, Queue: dl.sources[q], Reason: "max_receive_count"})
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("dead letters: unsupported transport %T", dl.tr)
}

// depth returns how many messages queue holds, waiting or in flight.
func (dl *deadLetters) depth(ctx context.Context, queue string) (int, error) {
	switch tr := dl.tr.(type) {
	case *postgres.Transport:
		v, f, err := tr.Depth(ctx, queue)
		return v + f, err
	case *memory.Transport:
		v, f, err := tr.Depth(queue)
		return v + f, err
	case *edaaws.Transport:
		url, err := sqsQueueURL(ctx, tr.SQS(), queue)
		if err != nil {
			return 0, err
		}
		return sqsDepth(ctx, tr.SQS(), url)
	}
	return 0, fmt.Errorf("dead letters: unsupported transport %T", dl.tr)
}

func (dl *deadLetters) readPostgres(ctx context.Context) ([]deadLetter, error) {
	rows, err := dl.pool.Query(ctx, strings.ReplaceAll(`
SELECT queue, metadata, coalesce(dead_letter_source, '') FROM {{schema}}.messages WHERE queue = ANY($1) ORDER BY id`,
		"{{schema}}", pgx.Identifier{dl.schema}.Sanitize()), dl.queues)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	defer rows.Close()
	var out []deadLetter
	for rows.Next() {
		var queue, src string
		var raw []byte
		if err := rows.Scan(&queue, &raw, &src); err != nil {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
		md, err := postgres.DecodeMetadata(raw)
		if err != nil {
			return nil, fmt.Errorf("dead letters: %s: %w", queue, err)
		}
		out = append(out, letter(queue, md, src))
	}
	return out, rows.Err()
}

// readSQS peeks at a queue only when its count differs from what was seen.
func (dl *deadLetters) readSQS(ctx context.Context, client *sqs.Client) ([]deadLetter, error) {
	var out []deadLetter
	for _, q := range dl.queues {
		url, err := sqsQueueURL(ctx, client, q)
		if err != nil {
			return nil, err
		}
		n, err := sqsDepth(ctx, client, url)
		if err != nil {
			return nil, err
		}
		if n != len(dl.seen[q]) {
			if err := dl.peekSQS(ctx, client, q, url, n); err != nil {
				return nil, err
			}
		}
		for _, d := range dl.seen[q] {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b deadLetter) int { return strings.Compare(a.In+a.Queue, b.In+b.Queue) })
	return out, nil
}

// peekSQS receives what queue holds, records it, and makes it visible again
// at once: it deletes nothing.
func (dl *deadLetters) peekSQS(ctx context.Context, client *sqs.Client, queue, url string, depth int) error {
	seen := map[string]deadLetter{}
	var held []sqstypes.Message
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for chunk := range slices.Chunk(held, 10) {
			in := &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: &url}
			for i, m := range chunk {
				in.Entries = append(in.Entries, sqstypes.ChangeMessageVisibilityBatchRequestEntry{
					Id: awssdk.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0})
			}
			_, _ = client.ChangeMessageVisibilityBatch(ctx, in) // else visible again after 10s anyway
		}
	}()
	for len(seen) < depth {
		resp, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: &url, MaxNumberOfMessages: 10, VisibilityTimeout: 10,
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameDeadLetterQueueSourceArn},
		})
		if err != nil {
			return fmt.Errorf("dead letters: peek %s: %w", queue, err)
		}
		if len(resp.Messages) == 0 {
			break // the rest is in flight with someone else (edactl dlq show)
		}
		held = append(held, resp.Messages...)
		for _, m := range resp.Messages {
			attrs := map[string]string{}
			for k, v := range m.MessageAttributes {
				if v.StringValue != nil {
					attrs[k] = *v.StringValue
				} else {
					attrs[k] = string(v.BinaryValue)
				}
			}
			msg, _, err := edaaws.DecodeSQS(awssdk.ToString(m.Body), attrs)
			if err != nil {
				return fmt.Errorf("dead letters: %s: %w", queue, err)
			}
			src := dl.sources[queue]
			if arn := m.Attributes[string(sqstypes.MessageSystemAttributeNameDeadLetterQueueSourceArn)]; arn != "" {
				src = strings.TrimSuffix(arn[strings.LastIndexByte(arn, ':')+1:], ".fifo")
			}
			seen[awssdk.ToString(m.MessageId)] = letter(queue, msg.Metadata, src)
		}
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if len(seen) >= len(dl.seen[queue]) { // else keep what an earlier peek saw of messages now in flight
		dl.seen[queue] = seen
	}
	return nil
}

func sqsQueueURL(ctx context.Context, client *sqs.Client, name string) (string, error) {
	var errs []error
	for _, n := range []string{name, name + ".fifo"} {
		out, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &n})
		if err == nil {
			return awssdk.ToString(out.QueueUrl), nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("dead letters: queue %s: %w", name, errors.Join(errs...))
}

// sqsDepth is the queue's approximate count, waiting and in flight.
func sqsDepth(ctx context.Context, client *sqs.Client, url string) (int, error) {
	out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: &url, AttributeNames: []sqstypes.QueueAttributeName{
		sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		return 0, fmt.Errorf("dead letters: %w", err)
	}
	v, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	f, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return v + f, nil
}
