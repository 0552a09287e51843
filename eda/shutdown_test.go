package eda_test

import (
	"context"
	"testing"
	"time"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport/memory"
)

// An app stopped while a handler runs loses nothing: the handler sees its
// context cancelled, the message goes back to the queue, and the next
// instance on the same broker handles it.
func TestShutdownMidHandlerLosesNothing(t *testing.T) {
	tr, err := memory.New(memory.Config{})
	must(t, err)
	defer tr.Close()
	newInstance := func(handle func(context.Context, orderPlaced) error) *eda.App {
		app, err := eda.New(eda.Config{Transport: tr, CloseTimeout: 5 * time.Second})
		must(t, err)
		must(t, eda.Register[orderPlaced](app, "orders"))
		must(t, eda.Handle(app, "warehouse", handle))
		return app
	}
	inHandler := make(chan struct{})
	first := newInstance(func(ctx context.Context, _ orderPlaced) error {
		close(inHandler)
		<-ctx.Done() // shutdown reaches the handler
		return ctx.Err()
	})
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan error)
	go func() { done1 <- first.Run(ctx1) }()
	<-first.Running()
	must(t, first.Publish(context.Background(), orderPlaced{OrderID: "o-7"}))
	<-inHandler
	stop1()
	must(t, <-done1)

	got := make(chan string, 1)
	second := newInstance(func(_ context.Context, e orderPlaced) error { got <- e.OrderID; return nil })
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	go func() { _ = second.Run(ctx2) }()
	select {
	case id := <-got:
		if id != "o-7" {
			t.Fatalf("second instance handled %q", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("message in flight at shutdown was lost")
	}
}
