package pgstore_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware/inbox/pgstore"
	"github.com/edaproject/eda/transport/memory"
)

type OrderPlaced struct {
	ID string `json:"id"`
}

func (OrderPlaced) EventName() string { return "shop.OrderPlaced" }

// Tx runs the handler in a transaction with the inbox mark: its INSERT and
// the mark commit together, so a redelivered event changes nothing.
func ExampleTx() {
	ctx := context.Background()
	pool, err := sharedPool()
	if err != nil {
		fmt.Println(err)
		return
	}
	schema := "eda_example_" + randomSuffix()
	defer pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	store, _ := pgstore.New(pool, pgstore.Config{Schema: schema})
	_ = store.Migrate(ctx)
	invoices := pgx.Identifier{schema, "invoices"}.Sanitize()
	_, _ = pool.Exec(ctx, "CREATE TABLE "+invoices+" (order_id text)")

	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	app, _ := eda.New(eda.Config{Transport: tr})
	_ = eda.Register[OrderPlaced](app, "orders")
	_ = eda.Handle(app, "billing", pgstore.Tx(store, "billing",
		func(ctx context.Context, tx pgx.Tx, e OrderPlaced) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+invoices+" (order_id) VALUES ($1)", e.ID)
			return err
		}))

	// The broker delivers one event twice.
	_ = app.Declare(ctx)
	_, msg, _ := app.NewMessage(ctx, OrderPlaced{ID: "o-1"})
	_ = tr.Publish("orders", msg)
	_ = tr.Publish("orders", msg.Copy())
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- app.Run(runCtx) }()
	waitDrained(tr, "billing")
	cancel()
	<-done

	var n int
	_ = pool.QueryRow(ctx, "SELECT count(*) FROM "+invoices).Scan(&n)
	fmt.Println("invoices:", n)
	// Output: invoices: 1
}
