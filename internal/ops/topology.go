package ops

import (
	"context"
	"fmt"
	"slices"
	"strings"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/postgres"
)

// Queue kinds in a Topology besides the dead-letter ones (KindDeadLetter,
// KindPoison, KindNamed).
const KindQueue = "queue"

// QueueInfo is one queue of a Topology as the broker reports it.
type QueueInfo struct {
	Name string
	Kind string // KindQueue, KindDeadLetter, KindPoison or KindNamed
	// Topics the queue is subscribed to.
	Topics []string
	// DLQ is the queue's dead-letter queue (its redrive policy), if any.
	DLQ   string
	FIFO  bool
	Depth transport.Depth
}

// IsDead tells whether the queue holds dead letters: a dead-letter or
// poison queue.
func (q QueueInfo) IsDead() bool { return q.Kind != KindQueue }

// Topology is what the broker reports: topics, the queues subscribed to
// them with their depths, their dead-letter queues and the poison queue.
type Topology struct {
	Topics []string
	Queues []QueueInfo
}

// Queue returns the queue named name.
func (t Topology) Queue(name string) (QueueInfo, bool) {
	for _, q := range t.Queues {
		if q.Name == name {
			return q, true
		}
	}
	return QueueInfo{}, false
}

// kindOf classifies a queue: a dead-letter queue of another, the poison
// queue (by name, as edactl dlq list does), named like a DLQ, or a queue.
func kindOf(name string, isTarget bool) string {
	switch {
	case isTarget:
		return KindDeadLetter
	case strings.Contains(name, "poison"):
		return KindPoison
	case strings.HasSuffix(name, "-dlq"):
		return KindNamed
	}
	return KindQueue
}

// Topology reads the Postgres transport's queues and subscriptions whose
// name starts with prefix, and every queue's depth in one query
// (postgres.Transport.QueueDepths). Tail's temporary queues are left out.
func (d *PostgresDLQ) Topology(ctx context.Context, prefix string) (Topology, error) {
	var top Topology
	rows, err := d.pool.Query(ctx, d.sql(`
SELECT q.name, coalesce(q.dead_letter_queue, ''), q.fifo,
	EXISTS (SELECT 1 FROM {{schema}}.queues s WHERE s.dead_letter_queue = q.name),
	coalesce((SELECT array_agg(s.topic ORDER BY s.topic) FROM {{schema}}.subscriptions s WHERE s.queue = q.name), '{}')
FROM {{schema}}.queues q
WHERE starts_with(q.name, $1) AND NOT starts_with(q.name, $2)
ORDER BY q.name`), prefix, TailQueuePrefix)
	if err != nil {
		return top, fmt.Errorf("read the topology: %w", err)
	}
	topics := map[string]bool{}
	for rows.Next() {
		var q QueueInfo
		var target bool
		if err := rows.Scan(&q.Name, &q.DLQ, &q.FIFO, &target, &q.Topics); err != nil {
			rows.Close()
			return top, fmt.Errorf("read the topology: %w", err)
		}
		q.Kind = kindOf(q.Name, target)
		for _, t := range q.Topics {
			topics[t] = true
		}
		top.Queues = append(top.Queues, q)
	}
	if err := rows.Err(); err != nil {
		return top, fmt.Errorf("read the topology: %w", err)
	}
	top.Topics = sortedSet(topics)
	if len(top.Queues) == 0 {
		return top, nil
	}
	tr, err := d.transport(ctx)
	if err != nil {
		return top, err
	}
	names := make([]string, len(top.Queues))
	for i, q := range top.Queues {
		names[i] = q.Name
	}
	depths, err := tr.QueueDepths(ctx, names)
	if err != nil {
		return top, fmt.Errorf("read queue depths: %w", err)
	}
	for i := range top.Queues {
		top.Queues[i].Depth = depths[top.Queues[i].Name]
	}
	return top, nil
}

// transport returns a Postgres transport on the DLQ's pool, for its
// Inspector (made once).
func (d *PostgresDLQ) transport(ctx context.Context) (*postgres.Transport, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tr == nil {
		tr, err := postgres.New(ctx, postgres.Config{Pool: d.pool, Schema: d.schema})
		if err != nil {
			return nil, err
		}
		d.tr = tr
	}
	return d.tr, nil
}

// Topology reads the SQS queues and SNS topics whose name starts with
// prefix, the subscriptions between them, and each queue's depth from the
// attributes it lists them with (edaaws.DepthFromAttributes; the age of the
// oldest message is not known on SQS). Tail's temporary queues are left out.
func (a *AWSDLQ) Topology(ctx context.Context, prefix string) (Topology, error) {
	var top Topology
	qs, err := a.queues(ctx, prefix)
	if err != nil {
		return top, err
	}
	arnName := map[string]string{}
	targets := map[string]bool{}
	for _, q := range qs {
		arnName[q.arn()] = logical(q.name)
		if t := q.redriveTarget(); t != "" {
			targets[t] = true
		}
	}
	subs := map[string][]string{} // queue → topics
	topics := map[string]bool{}
	p := sns.NewListSubscriptionsPaginator(a.tr.SNS(), &sns.ListSubscriptionsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return top, fmt.Errorf("list SNS subscriptions: %w", err)
		}
		for _, s := range page.Subscriptions {
			q, ok := arnName[awssdk.ToString(s.Endpoint)]
			if !ok || awssdk.ToString(s.Protocol) != "sqs" {
				continue
			}
			t := logical(nameOfARN(awssdk.ToString(s.TopicArn)))
			subs[q] = append(subs[q], t)
			topics[t] = true
		}
	}
	tp := sns.NewListTopicsPaginator(a.tr.SNS(), &sns.ListTopicsInput{})
	for tp.HasMorePages() {
		page, err := tp.NextPage(ctx)
		if err != nil {
			return top, fmt.Errorf("list SNS topics: %w", err)
		}
		for _, t := range page.Topics {
			if n := logical(nameOfARN(awssdk.ToString(t.TopicArn))); strings.HasPrefix(n, prefix) {
				topics[n] = true
			}
		}
	}
	for _, q := range qs {
		name := logical(q.name)
		if strings.HasPrefix(name, TailQueuePrefix) {
			continue
		}
		info := QueueInfo{Name: name, Kind: kindOf(name, targets[q.arn()]), FIFO: q.attrs["FifoQueue"] == "true",
			Depth: edaaws.DepthFromAttributes(q.attrs)}
		if t := q.redriveTarget(); t != "" {
			info.DLQ = logical(nameOfARN(t))
		}
		info.Topics = subs[name]
		slices.Sort(info.Topics)
		top.Queues = append(top.Queues, info)
	}
	top.Topics = sortedSet(topics)
	return top, nil
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
