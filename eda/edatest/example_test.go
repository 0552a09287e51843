package edatest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/transport"
)

// Publish an event and assert that a handler handled it. In a test, t is the
// test's *testing.T; an Example has none, so it runs the body with
// Standalone. The transport is memory unless EDA_TEST_TRANSPORT says
// postgres or aws: the same body runs on all three.
func Example() {
	err := edatest.Standalone(func(t edatest.TB) {
		h := edatest.New(t, edatest.Config{})
		_ = eda.Register[OrderCreated](h.App, "orders")
		_ = eda.Handle(h.App, "inventory", func(ctx context.Context, e OrderCreated) error { return nil })
		h.Start()

		h.Publish(OrderCreated{ID: "o-1", Qty: 2})
		handled := h.WaitHandled("inventory", 1)
		fmt.Println("handled", handled[0].Envelope.Type, "on", handled[0].Queue)
		fmt.Println("published", len(h.Published()), "to", h.Published()[0].Topic)
	})
	fmt.Println("failures:", err)
	// Output:
	// handled orders.OrderCreated on inventory
	// published 1 to orders
	// failures: <nil>
}

// A handler that keeps failing: after MaxReceiveCount deliveries the
// transport moves the message to the queue's dead-letter queue.
func Example_deadLetter() {
	err := edatest.Standalone(func(t edatest.TB) {
		h := edatest.New(t, edatest.Config{})
		_ = eda.Register[OrderCreated](h.App, "orders")
		_ = h.App.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "inventory", MaxReceiveCount: 2}})
		_ = eda.Handle(h.App, "inventory", func(ctx context.Context, e OrderCreated) error {
			return errors.New("warehouse offline")
		})
		h.Start()

		h.Publish(OrderCreated{ID: "o-1", Qty: 1})
		dead := h.WaitDeadLettered("inventory", 1)
		fmt.Println("dead-lettered", dead[0].Envelope.Type, "from", dead[0].Queue)
		failed := h.Failed("inventory")
		fmt.Println("failed attempts:", len(failed), "last error:", failed[len(failed)-1].Err)
	})
	fmt.Println("failures:", err)
	// Output:
	// dead-lettered orders.OrderCreated from inventory
	// failed attempts: 2 last error: warehouse offline
	// failures: <nil>
}

// A handler that publishes: RequirePublished waits for the event and
// decodes it.
func Example_handlerPublishes() {
	err := edatest.Standalone(func(t edatest.TB) {
		h := edatest.New(t, edatest.Config{})
		_ = eda.Register[OrderCreated](h.App, "orders")
		_ = eda.Register[StockReserved](h.App, "inventory-events")
		_ = eda.Handle(h.App, "inventory", func(ctx context.Context, e OrderCreated) error {
			return h.App.Publish(ctx, StockReserved{OrderID: e.ID})
		})
		h.Start()

		h.Publish(OrderCreated{ID: "o-7", Qty: 1})
		reserved := edatest.RequirePublished[StockReserved](t, h, 1)
		fmt.Println("reserved order", reserved[0].OrderID)
	})
	fmt.Println("failures:", err)
	// Output:
	// reserved order o-7
	// failures: <nil>
}
