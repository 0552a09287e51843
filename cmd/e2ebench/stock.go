package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsns "github.com/ThreeDotsLabs/watermill-aws/sns"
	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	awssns "github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// stockBuild is the same flow from stock Watermill components, as their
// documentation shows them, tuned where a competent team would tune them:
//
//   - Outbox: a watermill-sql publisher on the handler's own pgx
//     transaction (wsql.TxFromPgx), wrapped by forwarder.NewPublisher, and
//     forwarder.NewForwarder draining the table into SNS; the order
//     service and the inventory service each have their own table and
//     forwarder, as two services would. A forwarder is a router handler on
//     a consumer group whose offset row is locked (FOR UPDATE) while it
//     reads: one message at a time, each published with one SNS Publish
//     call and acked before the next. That serial loop bounds the build's
//     throughput (see cmd/outboxbench); a second forwarder on one table
//     waits on the same lock. The watermill-sql subscriber polls (no LISTEN/
//     NOTIFY): PollInterval is lowered from its 1s default to stockPoll, a
//     latency a team would ask for, at the cost of an idle SELECT per
//     interval.
//   - SNS: watermill-aws's sns.Publisher, one Publish call per message (it
//     has no PublishBatch path). Its marshaler sends the ARN as TargetArn,
//     which the emulator refuses, so topicArnMarshaler moves it to
//     TopicArn; nothing else changes.
//   - SQS: watermill-aws's sns.Subscriber, which creates each queue, its
//     policy and its subscription (RawMessageDelivery). ConsumeWorkers
//     receive loops per queue (-stock-workers, default 2: the eda
//     transport's pollers per queue at 16 in flight), each receiving up to
//     10 messages, as a team would set. A worker hands its messages to the
//     router one by one and waits for each ack, then deletes it with its
//     own DeleteMessage call (there is no DeleteMessageBatch path), so a
//     queue handles at most ConsumeWorkers messages at once. More workers
//     do not help on the emulator: fauxqs wakes every waiting
//     ReceiveMessage on each enqueue and the losers answer empty and poll
//     again, so each SNS Publish got slower with every waiting loop
//     (0.7 ms with none, 2.6 ms with 16, 6.9 ms with 48, in a probe), and
//     in the bench 4 workers per queue sustained 50 orders/s where 1 or 2
//     sustained 100-150. On AWS that cost does not exist.
//   - Router middleware: Watermill's PoisonQueue (publishing to an SNS
//     poison topic with a queue subscribed) outside Retry (3 retries,
//     10ms..100ms), the order the documentation shows.
//   - Idempotency: each handler inserts (consumer, message UUID) into
//     processed_events in its own transaction, ON CONFLICT DO NOTHING, and
//     does nothing more when the row was there: Watermill's Deduplicator
//     middleware keeps its keys in process memory only, which a fair
//     exactly-once build cannot use.
type stockBuild struct {
	env    *env
	pool   *pgxpool.Pool
	snsPub *wsns.Publisher
	router *message.Router
	stop   func()
}

// stockPoll is the watermill-sql subscriber's PollInterval in the stock
// build: how long the forwarder sleeps after finding its table empty.
const stockPoll = 100 * time.Millisecond

// The stock outbox tables (watermill_<topic>): the order service's and
// the inventory service's.
const (
	outboxOrders    = "orders_outbox"
	outboxInventory = "inventory_outbox"
)

func newStockBuild(ctx context.Context, e *env, prefix string, timed *timedPublisher) (_ *stockBuild, err error) {
	b := &stockBuild{env: e}
	var closers []func()
	b.stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			b.stop()
		}
	}()
	schema := prefix + "_stock"
	if b.pool, err = e.newPool(ctx, schema); err != nil {
		return nil, err
	}
	closers = append(closers, b.pool.Close)
	logger := watermill.NopLogger{}
	name := func(s string) string { return prefix + "-stock-" + s }

	// Each service has its own outbox table and forwarder, as separate
	// services would: the order service's and the inventory service's.
	// Each table is created as the docs do (InitializeSchema).
	var outSubs []*wsql.Subscriber
	for _, topic := range []string{outboxOrders, outboxInventory} {
		cfg := wsql.SubscriberConfig{
			SchemaAdapter:    stockSchema(e.stockSchema),
			OffsetsAdapter:   wsql.PostgreSQLQueueOffsetsAdapter{},
			InitializeSchema: true,
			PollInterval:     stockPoll,
		}
		if e.stockSchema == "default" {
			cfg.ConsumerGroup, cfg.OffsetsAdapter = "forwarder", wsql.DefaultPostgreSQLOffsetsAdapter{}
		}
		sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(b.pool), cfg, logger)
		if err != nil {
			return nil, err
		}
		if err := sub.SubscribeInitialize(topic); err != nil {
			return nil, err
		}
		outSubs = append(outSubs, sub)
	}

	resolver, err := wsns.NewGenerateArnTopicResolver(account, e.awsCfg.Region)
	if err != nil {
		return nil, err
	}
	ep := e.endpoint
	snsOpts := []func(*awssns.Options){func(o *awssns.Options) { o.BaseEndpoint = &ep }}
	sqsOpts := []func(*sqs.Options){func(o *sqs.Options) { o.BaseEndpoint = &ep }}
	if b.snsPub, err = wsns.NewPublisher(wsns.PublisherConfig{
		AWSConfig: e.awsCfg, OptFns: snsOpts, TopicResolver: resolver, Marshaler: topicArnMarshaler{},
	}, logger); err != nil {
		return nil, err
	}
	timed.next = b.snsPub
	for _, t := range []string{topicOrders, topicInventory, topicPoison} {
		if _, err := b.snsPub.CreateTopic(ctx, name(t)); err != nil {
			return nil, fmt.Errorf("create topic on the emulator at %s (start it with scripts/emulator.sh up): %w", e.endpoint, err)
		}
	}
	subscriber := func(queue string) (*wsns.Subscriber, error) {
		qname := name(queue)
		return wsns.NewSubscriber(wsns.SubscriberConfig{
			AWSConfig: e.awsCfg, OptFns: snsOpts, TopicResolver: resolver,
			GenerateSqsQueueName: func(context.Context, wsns.TopicArn) (string, error) { return qname, nil },
		}, wsqs.SubscriberConfig{
			AWSConfig: e.awsCfg, OptFns: sqsOpts, ConsumeWorkers: e.stockWorkers,
			GenerateReceiveMessageInput: func(ctx context.Context, url wsqs.QueueURL) (*sqs.ReceiveMessageInput, error) {
				in, err := wsqs.GenerateReceiveMessageInputDefault(ctx, url)
				if err == nil {
					in.MaxNumberOfMessages = 10
				}
				return in, err
			},
		}, logger)
	}
	// The poison topic's queue keeps what the poison middleware publishes;
	// nothing consumes it.
	poisonSub, err := subscriber(queuePoison)
	if err != nil {
		return nil, err
	}
	if err := poisonSub.SubscribeInitializeWithContext(ctx, name(topicPoison)); err != nil {
		return nil, err
	}

	if b.router, err = message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger); err != nil {
		return nil, err
	}
	poison, err := wmw.PoisonQueue(b.snsPub, name(topicPoison))
	if err != nil {
		return nil, err
	}
	retry := wmw.Retry{MaxRetries: 2, InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Multiplier: 2}.Middleware
	b.router.AddMiddleware(poison, retry)

	// The forwarders run on the same router. forwarder.NewForwarder names
	// its handler "events_forwarder", and a router takes one handler per
	// name, so the second gets a router of its own.
	fwd2, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		return nil, err
	}
	fwd2.AddMiddleware(poison, retry)
	for i, r := range []*message.Router{b.router, fwd2} {
		if _, err := forwarder.NewForwarder(outSubs[i], timed, logger, forwarder.Config{ForwarderTopic: []string{outboxOrders, outboxInventory}[i], Router: r}); err != nil {
			return nil, err
		}
	}

	t := e.tracker("stock")
	for _, h := range []struct {
		queue, topic string
		fn           message.NoPublishHandlerFunc
	}{
		{queueInventory, topicOrders, b.idempotent("inventory", b.onOrderCreatedInventory(t, name(topicInventory)))},
		{queueNotification, topicOrders, b.idempotent("notification", b.onOrderCreatedNotification)},
		{queueOrderStatus, topicInventory, b.tracked(t, b.idempotent("orders", b.onInventoryEvent(t)))},
	} {
		sub, err := subscriber(h.queue)
		if err != nil {
			return nil, err
		}
		if err := sub.SubscribeInitializeWithContext(ctx, name(h.topic)); err != nil {
			return nil, err
		}
		b.router.AddConsumerHandler(h.queue, name(h.topic), sub, h.fn)
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	closers = append(closers, func() { cancel(); _ = b.router.Close(); _ = fwd2.Close(); wg.Wait() })
	for _, r := range []*message.Router{b.router, fwd2} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(runCtx) }()
		select {
		case <-r.Running():
		case <-time.After(30 * time.Second):
			return nil, errors.New("stock router did not start")
		}
	}
	return b, nil
}

// outboxPublisher is the stock write path on tx: the watermill-sql
// publisher on the caller's transaction, wrapped by the forwarder's
// envelope publisher. Creating it per transaction is what the docs do.
func (b *stockBuild) outboxPublisher(tx pgx.Tx, forwarderTopic string) (message.Publisher, error) {
	pub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: stockSchema(b.env.stockSchema)}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	return forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: forwarderTopic}), nil
}

// stockSchema is the watermill-sql schema adapter of the stock outbox:
// "queue" (PostgreSQLQueueSchema) or "default" (DefaultPostgreSQLSchema).
func stockSchema(name string) wsql.SchemaAdapter {
	if name == "default" {
		return wsql.DefaultPostgreSQLSchema{}
	}
	return wsql.PostgreSQLQueueSchema{}
}

// eventTypeKey names the event type in a stock message's metadata (the
// order-status queue carries two types).
const eventTypeKey = "event_type"

func newStockMessage(eventType string, v any) (*message.Message, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	msg.Metadata.Set(eventTypeKey, eventType)
	return msg, nil
}

// place commits the order row and its event in one transaction.
func (b *stockBuild) place(ctx context.Context, req orderRequest, items []byte) error {
	msg, err := newStockMessage(OrderCreated{}.EventName(), OrderCreated{OrderID: req.ID, CustomerID: req.CustomerID, Items: req.Items})
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlInsertOrder, req.ID, req.CustomerID, items); err != nil {
			return err
		}
		pub, err := b.outboxPublisher(tx, outboxOrders)
		if err != nil {
			return err
		}
		return pub.Publish(b.name(topicOrders), msg)
	})
}

func (b *stockBuild) name(s string) string { return b.env.prefix + "-stock-" + s }

// txHandler is a handler's work inside its transaction.
type txHandler func(ctx context.Context, tx pgx.Tx, msg *message.Message) error

// idempotent runs fn in a transaction that first records (consumer, message
// UUID) in processed_events; a duplicate commits nothing more.
func (b *stockBuild) idempotent(consumer string, fn txHandler) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ctx := msg.Context()
		return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, consumer, msg.UUID)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				return nil // processed before
			}
			return fn(ctx, tx, msg)
		})
	}
}

// tracked reports the order's final state once its handler committed.
func (b *stockBuild) tracked(t *tracker, fn message.NoPublishHandlerFunc) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		if err := fn(msg); err != nil {
			return err
		}
		var ev struct {
			OrderID string `json:"order_id"`
		}
		if err := json.Unmarshal(msg.Payload, &ev); err == nil {
			t.finish(ev.OrderID)
		}
		return nil
	}
}

// errUnknownType is permanent: the poison middleware takes it.
var errUnknownType = errors.New("unknown event type")

func (b *stockBuild) onOrderCreatedInventory(t *tracker, topic string) txHandler {
	return func(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
		var ev OrderCreated
		if err := json.Unmarshal(msg.Payload, &ev); err != nil {
			return err
		}
		t.stage("1 inventory", ev.OrderID)
		ok, reason, err := reserve(ctx, tx, ev)
		if err != nil {
			return err
		}
		var out *message.Message
		if ok {
			out, err = newStockMessage(StockReserved{}.EventName(), StockReserved{OrderID: ev.OrderID, CustomerID: ev.CustomerID})
		} else {
			out, err = newStockMessage(StockReservationFailed{}.EventName(), StockReservationFailed{OrderID: ev.OrderID, CustomerID: ev.CustomerID, Reason: reason})
		}
		if err != nil {
			return err
		}
		pub, err := b.outboxPublisher(tx, outboxInventory)
		if err != nil {
			return err
		}
		return pub.Publish(topic, out)
	}
}

func (b *stockBuild) onOrderCreatedNotification(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
	var ev OrderCreated
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return err
	}
	return notify(ctx, tx, msg.UUID, ev)
}

func (b *stockBuild) onInventoryEvent(t *tracker) txHandler {
	return func(ctx context.Context, tx pgx.Tx, msg *message.Message) error {
		switch typ := msg.Metadata.Get(eventTypeKey); typ {
		case StockReserved{}.EventName():
			var ev StockReserved
			if err := json.Unmarshal(msg.Payload, &ev); err != nil {
				return err
			}
			t.stage("2 order-status", ev.OrderID)
			return finish(ctx, tx, ev.OrderID, "reserved", "")
		case StockReservationFailed{}.EventName():
			var ev StockReservationFailed
			if err := json.Unmarshal(msg.Payload, &ev); err != nil {
				return err
			}
			t.stage("2 order-status", ev.OrderID)
			return finish(ctx, tx, ev.OrderID, "rejected", ev.Reason)
		default:
			return fmt.Errorf("%w %q", errUnknownType, typ)
		}
	}
}

func (b *stockBuild) close() { b.stop() }

// topicArnMarshaler is watermill-aws's default marshaler with the ARN sent
// as TopicArn instead of TargetArn: the emulator (fauxqs) requires TopicArn
// (AWS accepts either). Nothing else changes.
type topicArnMarshaler struct {
	wsns.DefaultMarshalerUnmarshaler
}

func (m topicArnMarshaler) Marshal(arn wsns.TopicArn, msg *message.Message) *awssns.PublishInput {
	in := m.DefaultMarshalerUnmarshaler.Marshal(arn, msg)
	in.TopicArn, in.TargetArn = in.TargetArn, nil
	return in
}
