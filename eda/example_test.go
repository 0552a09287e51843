package eda_test

import (
	"context"
	"fmt"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport/memory"
)

type OrderCreated struct {
	OrderID string `json:"order_id"`
}

func (OrderCreated) EventName() string { return "orders.OrderCreated" }

// Declare an event, bind a handler to a queue, publish, run.
func Example() {
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	app, _ := eda.New(eda.Config{Transport: tr, Source: "orders-service"})
	_ = eda.Register[OrderCreated](app, "orders")
	handled := make(chan string)
	_ = eda.Handle(app, "inventory", func(ctx context.Context, e OrderCreated) error {
		env, _ := eda.EnvelopeFromContext(ctx)
		handled <- fmt.Sprintf("%s %s from %s", env.Type, e.OrderID, env.Source)
		return nil
	})

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	_ = app.Publish(ctx, OrderCreated{OrderID: "o-42"})
	fmt.Println(<-handled)
	stop()
	fmt.Println(<-done)
	// Output:
	// orders.OrderCreated o-42 from orders-service
	// <nil>
}
