package postgres_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
)

// Migrate the schema, declare a queue subscribed to a topic, publish inside
// the caller's transaction and consume.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	// A schema of its own, so that runs of this example do not collide.
	schema := fmt.Sprintf("eda_example_%d", os.Getpid())
	defer pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")

	cfg := postgres.Config{Pool: pool, Schema: schema}
	if err := postgres.Migrate(ctx, cfg); err != nil { // once, at deploy or start-up
		fmt.Println(err)
		return
	}
	tr, err := postgres.New(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.Close()

	err = tr.Declare(ctx, transport.Queue{
		Name:              "billing",
		Topics:            []string{"orders"},
		VisibilityTimeout: 30 * time.Second,
		MaxReceiveCount:   5, // then to "billing-dlq"
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	msgs, err := tr.Subscribe(ctx, "billing")
	if err != nil {
		fmt.Println(err)
		return
	}

	// The event commits, or rolls back, with the order.
	tx, err := pool.Begin(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tx.Rollback(ctx)
	// ... INSERT INTO orders ...
	if err := tr.PublishTx(ctx, tx, "orders", message.NewMessage("order-1", []byte(`{"total":42}`))); err != nil {
		fmt.Println(err)
		return
	}
	if err := tx.Commit(ctx); err != nil {
		fmt.Println(err)
		return
	}

	m := <-msgs
	fmt.Printf("%s %s receive count %s\n", m.UUID, m.Payload, m.Metadata.Get(transport.MetadataReceiveCount))
	m.Ack()
	// Output: order-1 {"total":42} receive count 1
}
