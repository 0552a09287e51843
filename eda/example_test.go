package eda_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
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

// sqsLike stands for a transport that delays delivery by up to 15 minutes,
// as SQS does; it prints what it is asked to publish.
type sqsLike struct{}

func (sqsLike) Features() transport.Features {
	return transport.Features{DelayedDelivery: true, MaxDeliveryDelay: 15 * time.Minute}
}
func (sqsLike) Close() error { return nil }
func (sqsLike) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		at, _, _ := transport.DeliverAt(m)
		fmt.Printf("publish %s to %s, deliver in %s\n", m.Metadata.Get(eda.MetadataType), topic, time.Until(at).Round(time.Minute))
	}
	return nil
}

// Deliver an event later: After and At wrap it with its due time. A delay
// the publisher cannot honour is refused before anything is published (use
// an outbox for those).
func ExampleAfter() {
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	app, _ := eda.New(eda.Config{Transport: tr, Publisher: sqsLike{}})
	_ = eda.Register[OrderCreated](app, "orders")
	ctx := context.Background()

	fmt.Println(app.Publish(ctx, eda.After(10*time.Minute, OrderCreated{OrderID: "o-1"})))
	err := app.Publish(ctx, eda.After(time.Hour, OrderCreated{OrderID: "o-2"}))
	fmt.Println(errors.Is(err, transport.ErrDelayUnsupported))
	err = app.Publish(ctx, eda.After(-time.Minute, OrderCreated{OrderID: "o-3"}))
	fmt.Println(errors.Is(err, eda.ErrInvalidConfig))

	_, msg, _ := app.NewMessage(ctx, eda.At(time.Date(2030, 1, 1, 9, 0, 0, 0, time.UTC), OrderCreated{OrderID: "o-4"}))
	fmt.Println(msg.Metadata.Get(transport.MetadataDeliverAt))
	// Output:
	// publish orders.OrderCreated to orders, deliver in 10m0s
	// <nil>
	// true
	// true
	// 2030-01-01T09:00:00Z
}
