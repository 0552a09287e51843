package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/postgres"
)

// tailEvent is one line of tail's output.
type tailEvent struct {
	Time        string            `json:"time"`
	Type        string            `json:"type"`
	ID          string            `json:"id"`
	Source      string            `json:"source,omitempty"`
	Correlation string            `json:"correlation,omitempty"`
	Metadata    map[string]string `json:"metadata"`
	Payload     string            `json:"payload"`
}

func runTail(ctx context.Context, c *cli, args []string) error {
	fs := c.flagSet("tail", "-transport aws|postgres -queue name [-topic t]... [-n count] [-for duration]")
	kind := fs.String("transport", envOr("EDA_TRANSPORT", ""), "aws or postgres (env EDA_TRANSPORT)")
	var af awsFlags
	af.register(fs)
	var pf pgFlags
	pf.register(fs)
	queue := fs.String("queue", "", "show what this queue receives: tail subscribes a temporary queue to its topics")
	var topics []string
	fs.Func("topic", "watch this topic (repeatable) instead of the queue's topics", func(s string) error {
		if s == "" {
			return errors.New("empty topic")
		}
		topics = append(topics, s)
		return nil
	})
	count := fs.Int("n", 0, "stop after this many events (default: until interrupted)")
	forDur := fs.Duration("for", 0, "stop after this long (default: until interrupted)")
	width := fs.Int("width", 100, "table: payload excerpt length")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	if *queue == "" && len(topics) == 0 {
		return usagef("-queue or -topic is required")
	}
	if *count < 0 || *forDur < 0 || *width < 10 {
		return usagef("-n, -for must not be negative; -width at least 10")
	}
	if *forDur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *forDur)
		defer cancel()
	}

	var w watcher
	switch *kind {
	case "aws":
		w, err = newAWSWatcher(ctx, af)
	case "postgres":
		if pf.dsn == "" {
			return usagef("-transport postgres needs -db postgres://...")
		}
		w, err = newPGWatcher(ctx, pf)
	case "":
		return usagef("-transport is required: aws or postgres")
	default:
		return usagef("-transport %q: want aws or postgres", *kind)
	}
	if err != nil {
		return err
	}
	msgs, info, err := w.start(ctx, *queue, topics)
	if err != nil {
		w.cleanup()
		return err
	}
	defer func() {
		if cerr := w.cleanup(); cerr != nil {
			fmt.Fprintf(c.stderr, "edactl tail: %v\n", cerr)
		}
	}()
	fmt.Fprintf(c.stderr, "tailing %s (temporary queue %s); Ctrl-C stops\n", info.what, info.tempQueue)
	if !c.json {
		fmt.Fprintf(c.stdout, "%-30s  %-32s  %-36s  %-36s  %s\n", "TIME", "TYPE", "ID", "CORRELATION", "PAYLOAD")
	}
	seen := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("the subscription ended")
			}
			md := msg.Metadata
			ev := tailEvent{
				Time: md.Get(eda.MetadataTime), Type: md.Get(eda.MetadataType), ID: md.Get(eda.MetadataID),
				Source: md.Get(eda.MetadataSource), Correlation: md.Get(eda.MetadataCorrelationID),
				Metadata: md, Payload: string(msg.Payload),
			}
			if ev.ID == "" {
				ev.ID = msg.UUID
			}
			msg.Ack()
			if c.json {
				b, _ := json.Marshal(ev)
				fmt.Fprintf(c.stdout, "%s\n", b)
			} else {
				fmt.Fprintf(c.stdout, "%-30s  %-32s  %-36s  %-36s  %s\n", ev.Time, ev.Type, ev.ID, ev.Correlation, excerpt(ev.Payload, *width))
			}
			seen++
			if *count > 0 && seen >= *count {
				return nil
			}
		}
	}
}

type tailInfo struct {
	what      string // "queue inventory (topics orders)"
	tempQueue string
}

// watcher subscribes a temporary queue and removes it afterwards.
type watcher interface {
	start(ctx context.Context, queue string, topics []string) (<-chan *message.Message, tailInfo, error)
	cleanup() error
}

func tempName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return tailQueuePrefix + hex.EncodeToString(b)
}

// awsWatcher subscribes a temporary SQS queue to the watched queue's SNS
// topics, with the same filter policies.
type awsWatcher struct {
	tr   *edaaws.Transport
	temp string // SQS name
	url  string
	subs []string // subscription ARNs of temp
}

func newAWSWatcher(ctx context.Context, af awsFlags) (*awsWatcher, error) {
	tr, err := af.transport(ctx, true)
	if err != nil {
		return nil, err
	}
	return &awsWatcher{tr: tr}, nil
}

func (w *awsWatcher) start(ctx context.Context, queue string, topics []string) (<-chan *message.Message, tailInfo, error) {
	d := &awsDLQ{tr: w.tr, sqs: w.tr.SQS()}
	fifo := false
	filters := map[string]string{}
	what := "topics " + strings.Join(topics, ", ")
	if queue != "" {
		url, err := d.queueURL(ctx, queue)
		if err != nil {
			return nil, tailInfo{}, err
		}
		attrs, err := d.attributes(ctx, url)
		if err != nil {
			return nil, tailInfo{}, err
		}
		fifo = attrs["FifoQueue"] == "true"
		if len(topics) == 0 {
			// The queue's subscriptions: its topics and filter policies.
			p := sns.NewListSubscriptionsPaginator(w.tr.SNS(), &sns.ListSubscriptionsInput{})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil, tailInfo{}, fmt.Errorf("list SNS subscriptions: %w", err)
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
				return nil, tailInfo{}, fmt.Errorf("%w: queue %s is subscribed to no topic: pass -topic", transport.ErrUnknownTopic, queue)
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
			return nil, tailInfo{}, err
		}
	}
	_, applyErr := w.tr.Apply(ctx, edaaws.Topology{Queues: []edaaws.Queue{q}})
	// Whatever Apply made must go at cleanup, even when it failed half way.
	if url, err := d.queueURL(ctx, w.temp); err == nil {
		w.url = url
	}
	if applyErr != nil {
		return nil, tailInfo{}, fmt.Errorf("create the temporary queue: %w", applyErr)
	}
	ch, err := w.tr.Subscribe(ctx, name)
	if err != nil {
		return nil, tailInfo{}, err
	}
	return ch, tailInfo{what: what, tempQueue: w.temp}, nil
}

// topicARN finds a topic by name (with or without .fifo).
func (w *awsWatcher) topicARN(ctx context.Context, name string) (string, error) {
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
func (w *awsWatcher) cleanup() error {
	_ = w.tr.Close()
	if w.url == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	attrs, err := (&awsDLQ{sqs: w.tr.SQS()}).attributes(ctx, w.url)
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

// pgWatcher declares a temporary queue with the Postgres transport,
// subscribed to the watched queue's topics, and drops it afterwards.
type pgWatcher struct {
	d    *pgDLQ
	tr   *postgres.Transport
	temp string
}

func newPGWatcher(ctx context.Context, pf pgFlags) (*pgWatcher, error) {
	d, err := newPGDLQ(ctx, pf)
	if err != nil {
		return nil, err
	}
	tr, err := postgres.New(ctx, postgres.Config{Pool: d.pool, Schema: pf.schema})
	if err != nil {
		d.close()
		return nil, err
	}
	return &pgWatcher{d: d, tr: tr}, nil
}

func (w *pgWatcher) start(ctx context.Context, queue string, topics []string) (<-chan *message.Message, tailInfo, error) {
	fifo := false
	what := "topics " + strings.Join(topics, ", ")
	if queue != "" {
		var err error
		if fifo, err = w.d.queueFIFO(ctx, w.d.pool, queue); err != nil {
			return nil, tailInfo{}, err
		}
		if len(topics) == 0 {
			rows, err := w.d.pool.Query(ctx, w.d.sql(`SELECT topic FROM {{schema}}.subscriptions WHERE queue = $1 ORDER BY topic`), queue)
			if err != nil {
				return nil, tailInfo{}, fmt.Errorf("read the subscriptions of %s: %w", queue, err)
			}
			if topics, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return nil, tailInfo{}, fmt.Errorf("read the subscriptions of %s: %w", queue, err)
			}
			if len(topics) == 0 {
				return nil, tailInfo{}, fmt.Errorf("%w: queue %s is subscribed to no topic: pass -topic", transport.ErrUnknownTopic, queue)
			}
		}
		what = fmt.Sprintf("queue %s (topics %s)", queue, strings.Join(topics, ", "))
	}
	w.temp = tempName()
	if err := w.tr.Declare(ctx, transport.Queue{Name: w.temp, Topics: topics, FIFO: fifo}); err != nil {
		return nil, tailInfo{}, fmt.Errorf("declare the temporary queue: %w", err)
	}
	ch, err := w.tr.Subscribe(ctx, w.temp)
	if err != nil {
		return nil, tailInfo{}, err
	}
	return ch, tailInfo{what: what, tempQueue: w.temp}, nil
}

func (w *pgWatcher) cleanup() error {
	defer w.d.close()
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
