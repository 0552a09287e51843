package ops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/postgres"
)

// TailEvent is one event a tail shows.
type TailEvent struct {
	Time        string            `json:"time"`
	Type        string            `json:"type"`
	ID          string            `json:"id"`
	Source      string            `json:"source,omitempty"`
	Correlation string            `json:"correlation,omitempty"`
	Metadata    map[string]string `json:"metadata"`
	Payload     string            `json:"payload"`
}

// EventOf describes msg as tail shows it.
func EventOf(msg *message.Message) TailEvent {
	md := msg.Metadata
	ev := TailEvent{
		Time: md.Get(eda.MetadataTime), Type: md.Get(eda.MetadataType), ID: md.Get(eda.MetadataID),
		Source: md.Get(eda.MetadataSource), Correlation: md.Get(eda.MetadataCorrelationID),
		Metadata: md, Payload: string(msg.Payload),
	}
	if ev.ID == "" {
		ev.ID = msg.UUID
	}
	return ev
}

// TailQueuePrefix starts the name of every temporary queue a Watcher
// creates (edactl iam -role operator grants them).
const TailQueuePrefix = "edactl-tail-"

// TailInfo says what a Watcher watches.
type TailInfo struct {
	What      string // "queue inventory (topics orders)"
	TempQueue string
}

// Watcher subscribes a temporary queue to what a queue receives, to show
// its events without consuming them, and removes it afterwards.
type Watcher interface {
	// Start subscribes the temporary queue to queue's topics (and filter
	// policies), or to topics when given. A queue that does not exist is
	// an ErrUnknownQueue error.
	Start(ctx context.Context, queue string, topics []string) (<-chan *message.Message, TailInfo, error)
	// Cleanup stops the subscription and deletes the temporary queue; call
	// it also when Start failed.
	Cleanup() error
}

var (
	_ Watcher = (*AWSWatcher)(nil)
	_ Watcher = (*PostgresWatcher)(nil)
)

func tempName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return TailQueuePrefix + hex.EncodeToString(b)
}

// AWSWatcher subscribes a temporary SQS queue to the watched queue's SNS
// topics, with the same filter policies.
type AWSWatcher struct {
	tr   *edaaws.Transport
	temp string // SQS name
	url  string
	subs []string // subscription ARNs of temp
}

// NewAWSWatcher watches through tr, which must create queues (its
// Config.AutoCreate); Cleanup closes tr.
func NewAWSWatcher(tr *edaaws.Transport) *AWSWatcher { return &AWSWatcher{tr: tr} }

// Start implements Watcher.
func (w *AWSWatcher) Start(ctx context.Context, queue string, topics []string) (<-chan *message.Message, TailInfo, error) {
	d := &AWSDLQ{tr: w.tr, sqs: w.tr.SQS()}
	fifo := false
	filters := map[string]string{}
	what := "topics " + strings.Join(topics, ", ")
	if queue != "" {
		url, err := d.queueURL(ctx, queue)
		if err != nil {
			return nil, TailInfo{}, err
		}
		attrs, err := d.attributes(ctx, url)
		if err != nil {
			return nil, TailInfo{}, err
		}
		fifo = attrs["FifoQueue"] == "true"
		if len(topics) == 0 {
			// The queue's subscriptions: its topics and filter policies.
			p := sns.NewListSubscriptionsPaginator(w.tr.SNS(), &sns.ListSubscriptionsInput{})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil, TailInfo{}, fmt.Errorf("list SNS subscriptions: %w", err)
				}
				for _, s := range page.Subscriptions {
					if awssdk.ToString(s.Protocol) != "sqs" || awssdk.ToString(s.Endpoint) != attrs["QueueArn"] {
						continue
					}
					topic := nameOfARN(awssdk.ToString(s.TopicArn))
					topics = append(topics, topic)
					sa, err := w.tr.SNS().GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: s.SubscriptionArn})
					if err == nil && sa.Attributes["FilterPolicy"] != "" {
						filters[topic] = sa.Attributes["FilterPolicy"]
					}
				}
			}
			if len(topics) == 0 {
				return nil, TailInfo{}, fmt.Errorf("%w: queue %s is subscribed to no topic: pass -topic", transport.ErrUnknownTopic, queue)
			}
		}
		slices.Sort(topics)
		what = fmt.Sprintf("queue %s (topics %s)", queue, strings.Join(topics, ", "))
	} else {
		for _, t := range topics {
			fifo = fifo || strings.HasSuffix(t, ".fifo")
		}
	}
	name := tempName()
	w.temp = name
	if fifo {
		w.temp += ".fifo"
	}
	q := edaaws.Queue{Queue: transport.Queue{Name: name, Topics: topics, FIFO: fifo}}
	for t, f := range filters {
		if slices.Contains(topics, t) {
			if q.FilterPolicies == nil {
				q.FilterPolicies = map[string]string{}
			}
			q.FilterPolicies[t] = f
		}
	}
	// Topics must exist: tail does not create them.
	for _, t := range topics {
		if _, err := w.topicARN(ctx, t); err != nil {
			return nil, TailInfo{}, err
		}
	}
	_, applyErr := w.tr.Apply(ctx, edaaws.Topology{Queues: []edaaws.Queue{q}})
	// Whatever Apply made must go at cleanup, even when it failed half way.
	if url, err := d.queueURL(ctx, w.temp); err == nil {
		w.url = url
	}
	if applyErr != nil {
		return nil, TailInfo{}, fmt.Errorf("create the temporary queue: %w", applyErr)
	}
	ch, err := w.tr.Subscribe(ctx, name)
	if err != nil {
		return nil, TailInfo{}, err
	}
	return ch, TailInfo{What: what, TempQueue: w.temp}, nil
}

// topicARN finds a topic by name (with or without .fifo).
func (w *AWSWatcher) topicARN(ctx context.Context, name string) (string, error) {
	p := sns.NewListTopicsPaginator(w.tr.SNS(), &sns.ListTopicsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("list SNS topics: %w", err)
		}
		for _, t := range page.Topics {
			n := nameOfARN(awssdk.ToString(t.TopicArn))
			if n == name || n == name+".fifo" {
				return awssdk.ToString(t.TopicArn), nil
			}
		}
	}
	return "", fmt.Errorf("%w: no SNS topic %q", transport.ErrUnknownTopic, name)
}

// cleanup stops the subscription, unsubscribes the temporary queue and
// deletes it.
func (w *AWSWatcher) Cleanup() error {
	_ = w.tr.Close()
	if w.url == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	attrs, err := (&AWSDLQ{sqs: w.tr.SQS()}).attributes(ctx, w.url)
	if err == nil {
		p := sns.NewListSubscriptionsPaginator(w.tr.SNS(), &sns.ListSubscriptionsInput{})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				errs = append(errs, err)
				break
			}
			for _, s := range page.Subscriptions {
				if awssdk.ToString(s.Endpoint) == attrs["QueueArn"] {
					if _, err := w.tr.SNS().Unsubscribe(ctx, &sns.UnsubscribeInput{SubscriptionArn: s.SubscriptionArn}); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
	} else {
		errs = append(errs, err)
	}
	if _, err := w.tr.SQS().DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: &w.url}); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove the temporary queue %s (delete it by hand): %w", w.temp, err)
	}
	return nil
}

// PostgresWatcher declares a temporary queue with the Postgres transport,
// subscribed to the watched queue's topics, and drops it afterwards.
type PostgresWatcher struct {
	d    *PostgresDLQ
	tr   *postgres.Transport
	temp string
}

// NewPostgresWatcher watches the transport tables in schema through pool
// (which stays the caller's).
func NewPostgresWatcher(ctx context.Context, pool *pgxpool.Pool, schema string) (*PostgresWatcher, error) {
	d, err := NewPostgresDLQ(ctx, pool, schema)
	if err != nil {
		return nil, err
	}
	tr, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: schema})
	if err != nil {
		return nil, err
	}
	return &PostgresWatcher{d: d, tr: tr}, nil
}

// Start implements Watcher.
func (w *PostgresWatcher) Start(ctx context.Context, queue string, topics []string) (<-chan *message.Message, TailInfo, error) {
	fifo := false
	what := "topics " + strings.Join(topics, ", ")
	if queue != "" {
		var err error
		if fifo, err = w.d.queueFIFO(ctx, w.d.pool, queue); err != nil {
			return nil, TailInfo{}, err
		}
		if len(topics) == 0 {
			rows, err := w.d.pool.Query(ctx, w.d.sql(`SELECT topic FROM {{schema}}.subscriptions WHERE queue = $1 ORDER BY topic`), queue)
			if err != nil {
				return nil, TailInfo{}, fmt.Errorf("read the subscriptions of %s: %w", queue, err)
			}
			if topics, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return nil, TailInfo{}, fmt.Errorf("read the subscriptions of %s: %w", queue, err)
			}
			if len(topics) == 0 {
				return nil, TailInfo{}, fmt.Errorf("%w: queue %s is subscribed to no topic: pass -topic", transport.ErrUnknownTopic, queue)
			}
		}
		what = fmt.Sprintf("queue %s (topics %s)", queue, strings.Join(topics, ", "))
	}
	w.temp = tempName()
	if err := w.tr.Declare(ctx, transport.Queue{Name: w.temp, Topics: topics, FIFO: fifo}); err != nil {
		return nil, TailInfo{}, fmt.Errorf("declare the temporary queue: %w", err)
	}
	ch, err := w.tr.Subscribe(ctx, w.temp)
	if err != nil {
		return nil, TailInfo{}, err
	}
	return ch, TailInfo{What: what, TempQueue: w.temp}, nil
}

// Cleanup implements Watcher; the pool stays open (it is the caller's).
func (w *PostgresWatcher) Cleanup() error {
	_ = w.tr.Close()
	if w.temp == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Deleting the queue deletes its subscriptions and messages (ON DELETE
	// CASCADE).
	if _, err := w.d.pool.Exec(ctx, w.d.sql(`DELETE FROM {{schema}}.queues WHERE name = $1`), w.temp); err != nil {
		return fmt.Errorf("drop the temporary queue %s (delete it by hand): %w", w.temp, err)
	}
	return nil
}
