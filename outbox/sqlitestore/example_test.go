package sqlitestore_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/sqlitestore"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Total   int    `json:"total"`
}

func (OrderPlaced) EventName() string     { return "orders.placed" }
func (e OrderPlaced) OrderingKey() string { return e.OrderID }

// An order and its event are written in one SQLite transaction; the relay
// publishes the event once the transaction has committed.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "app.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		panic(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)"); err != nil {
		panic(err)
	}

	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	app, _ := eda.New(eda.Config{Transport: tr, Source: "orders"})
	_ = eda.Register[OrderPlaced](app, "orders")
	_ = tr.Declare(ctx, transport.Queue{Name: "billing", Topics: []string{"orders"}})

	store, err := sqlitestore.New(db, sqlitestore.Config{})
	if err != nil {
		panic(err)
	}
	if err := store.Migrate(ctx); err != nil {
		panic(err)
	}

	// The service's transaction: the order and its event commit together.
	tx, _ := db.BeginTx(ctx, nil)
	_, _ = tx.ExecContext(ctx, "INSERT INTO orders (id, total) VALUES (?, ?)", "o-1", 42)
	if err := store.Write(ctx, tx, app, OrderPlaced{OrderID: "o-1", Total: 42}); err != nil {
		panic(err)
	}
	if err := tx.Commit(); err != nil {
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
	select {
	case msg := <-msgs:
		msg.Ack()
		fmt.Println(msg.Metadata.Get(eda.MetadataType), string(msg.Payload))
	case <-time.After(10 * time.Second):
		fmt.Println("not published")
	}
	stop()
	<-done
	stats, _ := store.Stats(ctx)
	fmt.Println("pending:", stats.Pending)
	// Output:
	// orders.placed {"order_id":"o-1","total":42}
	// pending: 0
}
