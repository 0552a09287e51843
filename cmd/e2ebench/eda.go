package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	smithymw "github.com/aws/smithy-go/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/middleware/inbox/pgstore"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// edaBuild is the flow on eda's public API: the order and its event in one
// implicit transaction (pgxstore.Store.Queue, one round trip), the outbox
// relay into the eda AWS transport (SNS PublishBatch), batched SQS
// consumers, middleware.Default (retry, poison queue) and each handler in
// a pgstore.Tx, whose inbox mark commits with the handler's effects (the
// mark goes with the BEGIN; the inventory handler's outbox insert goes
// with the COMMIT, on pgstore.CommitBatch).
type edaBuild struct {
	env   *env
	pool  *pgxpool.Pool
	store *pgxstore.Store
	app   *eda.App
	tr    *edaaws.Transport
	stop  func()
}

func newEdaBuild(ctx context.Context, e *env, prefix string, timed *timedPublisher) (_ *edaBuild, err error) {
	b := &edaBuild{env: e}
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
	schema := prefix + "_eda"
	if b.pool, err = e.newPool(ctx, schema); err != nil {
		return nil, err
	}
	closers = append(closers, b.pool.Close)
	if b.store, err = pgxstore.New(b.pool, pgxstore.Config{Schema: schema}); err != nil {
		return nil, err
	}
	if err := b.store.Migrate(ctx); err != nil {
		return nil, err
	}
	in, err := pgstore.New(b.pool, pgstore.Config{Schema: schema})
	if err != nil {
		return nil, err
	}
	if err := in.Migrate(ctx); err != nil {
		return nil, err
	}

	name := func(s string) string { return prefix + "-eda-" + s }
	awsCfg := e.awsCfg.Copy()
	if e.stages {
		// When the inventory queue's ReceiveMessage returns each order,
		// and when SQS enqueued it (SentTimestamp, ms).
		awsCfg.APIOptions = append(awsCfg.APIOptions, receiveMarks(e.tracker("eda"), name(queueInventory), ""),
			receiveMarks(e.tracker("eda"), name(queueOrderStatus), " 2"))
	}
	if b.tr, err = edaaws.New(edaaws.Config{AWS: awsCfg, Endpoint: e.endpoint, AccountID: account, AutoCreate: true,
		Concurrency: e.concurrency}); err != nil {
		return nil, err
	}
	closers = append(closers, func() { b.tr.Close() })
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond},
		Poison: &middleware.PoisonConfig{Publisher: b.tr, Topic: name(topicPoison)},
	})
	if err != nil {
		return nil, err
	}
	t := e.tracker("eda")
	// countRedeliveries only counts, for -stages.
	countRedeliveries := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if n, _ := strconv.Atoi(msg.Metadata.Get(transport.MetadataReceiveCount)); n > 1 {
				t.redelivered.Add(1)
			}
			return h(msg)
		}
	}
	if b.app, err = eda.New(eda.Config{Transport: b.tr, Source: "e2ebench", Middleware: append([]message.HandlerMiddleware{countRedeliveries}, stack...)}); err != nil {
		return nil, err
	}
	queue := func(q string) eda.QueueConfig {
		return eda.QueueConfig{Queue: transport.Queue{Name: name(q), MaxReceiveCount: 5}}
	}
	err = errors.Join(
		eda.Register[OrderCreated](b.app, name(topicOrders)),
		eda.Register[StockReserved](b.app, name(topicInventory)),
		eda.Register[StockReservationFailed](b.app, name(topicInventory)),
		b.app.DeclareQueue(middleware.PoisonQueue(name(queuePoison), name(topicPoison))),
		b.app.DeclareQueue(queue(queueInventory)),
		b.app.DeclareQueue(queue(queueNotification)),
		b.app.DeclareQueue(queue(queueOrderStatus)),
		eda.Handle(b.app, name(queueInventory), committed(t, pgstore.Tx(in, "inventory", func(ctx context.Context, tx pgx.Tx, ev OrderCreated) error {
			t.stage("1 inventory", ev.OrderID)
			t.mark("inventory handler", ev.OrderID, time.Now())
			ok, reason, err := reserve(ctx, tx, ev)
			if err != nil {
				return err
			}
			var out eda.Event = StockReserved{OrderID: ev.OrderID, CustomerID: ev.CustomerID}
			if !ok {
				out = StockReservationFailed{OrderID: ev.OrderID, CustomerID: ev.CustomerID, Reason: reason}
			}
			// The outbox insert goes with the commit, in its round trip.
			commit, _ := pgstore.CommitBatch(ctx)
			return b.store.Queue(ctx, commit, b.app, out)
		}))),
		eda.Handle(b.app, name(queueNotification), pgstore.Tx(in, "notification", func(ctx context.Context, tx pgx.Tx, ev OrderCreated) error {
			env, _ := eda.EnvelopeFromContext(ctx)
			return notify(ctx, tx, env.ID, ev)
		})),
		eda.Handle(b.app, name(queueOrderStatus), tracked(t, func(e StockReserved) string { return e.OrderID },
			pgstore.Tx(in, "orders", func(ctx context.Context, tx pgx.Tx, ev StockReserved) error {
				t.stage("2 order-status", ev.OrderID)
				t.mark("order-status handler", ev.OrderID, time.Now())
				return finish(ctx, tx, ev.OrderID, "reserved", "")
			}))),
		eda.Handle(b.app, name(queueOrderStatus), tracked(t, func(e StockReservationFailed) string { return e.OrderID },
			pgstore.Tx(in, "orders", func(ctx context.Context, tx pgx.Tx, ev StockReservationFailed) error {
				t.stage("2 order-status", ev.OrderID)
				t.mark("order-status handler", ev.OrderID, time.Now())
				return finish(ctx, tx, ev.OrderID, "rejected", ev.Reason)
			}))),
	)
	if err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	closers = append(closers, func() { cancel(); wg.Wait() })
	appErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); appErr <- b.app.Run(runCtx) }()
	select {
	case <-b.app.Running():
	case err := <-appErr:
		return nil, fmt.Errorf("eda app: %w", err)
	}
	// The relay wakes on the outbox's NOTIFY; PollInterval only covers a
	// lost notification.
	timed.next = b.tr
	var store outbox.Store = b.store
	if e.stages {
		timed.pool = b.pool
		store = timedStore{DueStore: b.store, pub: timed}
	}
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: store, Publisher: timed, Workers: e.relayWorkers, PollInterval: e.relayPoll})
	if err != nil {
		return nil, err
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = relay.Run(runCtx) }()
	return b, nil
}

// receiveMarks marks, for each OrderCreated a ReceiveMessage on queue
// returns, when it returned and when SQS enqueued it.
func receiveMarks(t *tracker, queue, suffix string) func(*smithymw.Stack) error {
	return func(st *smithymw.Stack) error {
		return st.Initialize.Add(smithymw.InitializeMiddlewareFunc("e2ebench-receive-marks"+suffix,
			func(ctx context.Context, in smithymw.InitializeInput, next smithymw.InitializeHandler) (smithymw.InitializeOutput, smithymw.Metadata, error) {
				out, md, err := next.HandleInitialize(ctx, in)
				rin, ok := in.Parameters.(*sqs.ReceiveMessageInput)
				if err != nil || !ok || !strings.HasSuffix(awssdk.ToString(rin.QueueUrl), "/"+queue) {
					return out, md, err
				}
				now := time.Now()
				if res, ok := out.Result.(*sqs.ReceiveMessageOutput); ok {
					for _, m := range res.Messages {
						var ev struct {
							OrderID string `json:"order_id"`
						}
						if json.Unmarshal([]byte(awssdk.ToString(m.Body)), &ev) != nil {
							continue
						}
						t.mark("ReceiveMessage returned"+suffix, ev.OrderID, now)
						if ms, err := strconv.ParseInt(m.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
							t.mark("SQS SentTimestamp"+suffix, ev.OrderID, time.UnixMilli(ms))
						}
					}
				}
				return out, md, err
			}), smithymw.Before)
	}
}

// committed marks, with -stages, when the inventory handler's transaction
// has committed.
func committed(t *tracker, fn func(context.Context, OrderCreated) error) func(context.Context, OrderCreated) error {
	return func(ctx context.Context, e OrderCreated) error {
		err := fn(ctx, e)
		if err == nil {
			t.mark("inventory committed", e.OrderID, time.Now())
		}
		return err
	}
}

// tracked reports to t when fn, the order-status handler, has committed
// the order's final state.
func tracked[E eda.Event](t *tracker, id func(E) string, fn func(context.Context, E) error) func(context.Context, E) error {
	return func(ctx context.Context, e E) error {
		if err := fn(ctx, e); err != nil {
			return err
		}
		t.finish(id(e))
		return nil
	}
}

// place commits the order row and its OrderCreated event in one round trip:
// a pgx.Batch sent outside a transaction runs as one implicit transaction.
func (b *edaBuild) place(ctx context.Context, req orderRequest, items []byte) error {
	batch := &pgx.Batch{}
	batch.Queue(sqlInsertOrder, req.ID, req.CustomerID, items)
	if err := b.store.Queue(ctx, batch, b.app, OrderCreated{OrderID: req.ID, CustomerID: req.CustomerID, Items: req.Items}); err != nil {
		return err
	}
	if err := b.pool.SendBatch(ctx, batch).Close(); err != nil {
		return err
	}
	b.env.tracker("eda").mark("committed", req.ID, time.Now())
	return nil
}

func (b *edaBuild) close() { b.stop() }
