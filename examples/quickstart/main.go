// Command quickstart is the smallest eda service: one event, two queues
// subscribed to its topic, a handler that publishes a follow-up event, all on
// the in-memory transport. Run it with:
//
//	go run ./examples/quickstart
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport/memory"
)

// OrderCreated is published when an order is placed.
type OrderCreated struct {
	OrderID string `json:"order_id"`
	Items   int    `json:"items"`
}

// EventName is the event's stable name on the wire.
func (OrderCreated) EventName() string { return "orders.OrderCreated" }

// StockReserved is published by the inventory handler.
type StockReserved struct {
	OrderID string `json:"order_id"`
}

// EventName is the event's stable name on the wire.
func (StockReserved) EventName() string { return "inventory.StockReserved" }

func main() {
	if err := run(context.Background()); err != nil {
		slog.Error("quickstart failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	tr, err := memory.New(memory.Config{})
	if err != nil {
		return err
	}
	defer tr.Close()
	app, err := eda.New(eda.Config{Transport: tr, Source: "quickstart"})
	if err != nil {
		return err
	}
	const orders = 3
	var wg sync.WaitGroup
	wg.Add(2 * orders) // each order: one notification, one reservation
	var mu sync.Mutex  // keeps the printed lines whole
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	err = firstErr(
		eda.Register[OrderCreated](app, "orders"),
		eda.Register[StockReserved](app, "inventory-events"),
		eda.Handle(app, "inventory", func(ctx context.Context, e OrderCreated) error {
			say("inventory:    reserving %d item(s) for %s", e.Items, e.OrderID)
			return app.Publish(ctx, StockReserved{OrderID: e.OrderID})
		}),
		eda.Handle(app, "notification", func(ctx context.Context, e OrderCreated) error {
			defer wg.Done()
			env, _ := eda.EnvelopeFromContext(ctx)
			say("notification: order %s received (event %s)", e.OrderID, env.ID)
			return nil
		}),
		eda.Handle(app, "shipping", func(ctx context.Context, e StockReserved) error {
			defer wg.Done()
			env, _ := eda.EnvelopeFromContext(ctx)
			say("shipping:     stock reserved for %s (caused by %s)", e.OrderID, env.CausationID)
			return nil
		}),
	)
	if err != nil {
		return err
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	for i := 1; i <= orders; i++ {
		if err := app.Publish(ctx, OrderCreated{OrderID: fmt.Sprintf("order-%d", i), Items: i}); err != nil {
			return err
		}
	}
	wg.Wait()
	stop()
	if err := <-done; err != nil {
		return err
	}
	fmt.Printf("done: %d orders, each reserved and notified\n", orders)
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
