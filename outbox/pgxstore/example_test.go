package pgxstore_test

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/internal/pgtest"
	"github.com/edaproject/eda/outbox/pgxstore"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

func (OrderPlaced) EventName() string     { return "orders.placed" }
func (e OrderPlaced) OrderingKey() string { return e.OrderID }

// The order row and its event are written in the service's own pgx
// transaction; a relay publishes the event after the commit. A second order
// goes in one round trip with Store.Queue on a pgx.Batch.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.DSN())
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	const schema = "outbox_example"
	_, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	defer pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")

	store, err := pgxstore.New(pool, pgxstore.Config{Schema: schema})
	if err != nil {
		panic(err)
	}
	if err := store.Migrate(ctx); err != nil { // once, at deploy or start-up
		panic(err)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+schema+".orders (id text PRIMARY KEY, total int)"); err != nil {
		panic(err)
	}

	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	app, _ := eda.New(eda.Config{Transport: tr, Source: "orders"})
	_ = eda.Register[OrderPlaced](app, "orders")
	_ = tr.Declare(ctx, transport.Queue{Name: "billing", Topics: []string{"orders"}})

	// In the service's transaction.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+schema+".orders VALUES ($1, $2)", "o-1", 42); err != nil {
			return err
		}
		return store.Write(ctx, tx, app, OrderPlaced{OrderID: "o-1", Total: 42})
	})
	if err != nil {
		panic(err)
	}
	// In one batch: one round trip, one implicit transaction.
	b := &pgx.Batch{}
	b.Queue("INSERT INTO "+schema+".orders VALUES ($1, $2)", "o-2", 7)
	if err := store.Queue(ctx, b, app, OrderPlaced{OrderID: "o-2", Total: 7}); err != nil {
		panic(err)
	}
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		panic(err)
	}

	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: store, Publisher: tr})
	if err != nil {
		panic(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- relay.Run(rctx) }()

	msgs, _ := tr.Subscribe(ctx, "billing")
	for range 2 {
		select {
		case msg := <-msgs:
			msg.Ack()
			fmt.Println(msg.Metadata.Get(eda.MetadataType), string(msg.Payload))
		case <-time.After(10 * time.Second):
			fmt.Println("not published")
		}
	}
	stop()
	<-done
	stats, _ := store.Stats(ctx)
	fmt.Println("pending:", stats.Pending, "failed:", stats.Failed)
	// Output:
	// orders.placed {"order_id":"o-1","total":42}
	// orders.placed {"order_id":"o-2","total":7}
	// pending: 0 failed: 0
}

// Store.Begin is a transaction that sends BEGIN with its first statement
// and the events with COMMIT: the order and its event take two round trips.
func ExampleStore_Begin() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.DSN())
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	const schema = "outbox_example_begin"
	_, _ = pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	defer pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	store, err := pgxstore.New(pool, pgxstore.Config{Schema: schema})
	if err != nil {
		panic(err)
	}
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+schema+".orders (id bigserial PRIMARY KEY, total int)"); err != nil {
		panic(err)
	}
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	app, _ := eda.New(eda.Config{Transport: tr, Source: "orders"})
	_ = eda.Register[OrderPlaced](app, "orders")

	tx, err := store.Begin(ctx)
	if err != nil {
		panic(err)
	}
	defer tx.Rollback(ctx) // no-op after Commit
	var id int64
	if err := tx.QueryRow(ctx, "INSERT INTO "+schema+".orders (total) VALUES ($1) RETURNING id", 42).Scan(&id); err != nil {
		panic(err) // round trip 1: BEGIN and the insert
	}
	if err := tx.Write(ctx, app, OrderPlaced{OrderID: fmt.Sprint(id), Total: 42}); err != nil {
		panic(err) // queued: nothing sent
	}
	if err := tx.Commit(ctx); err != nil {
		panic(err) // round trip 2: the outbox insert and COMMIT
	}
	stats, _ := store.Stats(ctx)
	fmt.Println("order", id, "pending events:", stats.Pending)
	// Output:
	// order 1 pending events: 1
}
