package edatest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/transport"
)

type OrderCreated struct {
	ID  string `json:"id"`
	Qty int    `json:"qty"`
}

func (OrderCreated) EventName() string { return "orders.OrderCreated" }

type StockReserved struct {
	OrderID string `json:"order_id"`
}

func (StockReserved) EventName() string { return "inventory.StockReserved" }

func TestHarnessRecordsPublishedHandledAndDeadLettered(t *testing.T) {
	h := edatest.New(t, edatest.Config{})
	must(t, eda.Register[OrderCreated](h.App, "orders"))
	must(t, eda.Register[StockReserved](h.App, "inventory-events"))
	must(t, h.App.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "inventory", MaxReceiveCount: 2}}))
	must(t, eda.Handle(h.App, "inventory", func(ctx context.Context, e OrderCreated) error {
		if e.Qty < 0 {
			return errors.New("negative quantity")
		}
		return h.App.Publish(ctx, StockReserved{OrderID: e.ID})
	}))
	h.Start()

	h.Publish(OrderCreated{ID: "o-1", Qty: 2}, OrderCreated{ID: "o-bad", Qty: -1})
	reserved := edatest.RequirePublished[StockReserved](t, h, 1)
	if reserved[0].OrderID != "o-1" {
		t.Fatalf("reserved %+v", reserved)
	}
	dead := h.WaitDeadLettered("inventory", 1)
	if got := dead[0].Envelope.Type; got != "orders.OrderCreated" {
		t.Fatalf("dead-lettered %q", got)
	}
	if n := len(h.Failed("inventory")); n != 2 {
		t.Fatalf("failed attempts %d, want 2 (MaxReceiveCount)", n)
	}
	if n := len(h.Handled("inventory")); n != 1 {
		t.Fatalf("handled %d, want 1", n)
	}
	if got := h.Handled("inventory")[0].Envelope; got.Type != "orders.OrderCreated" {
		t.Fatalf("handled envelope %+v", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
