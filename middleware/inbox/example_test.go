package inbox_test

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware/inbox"
	"github.com/edaproject/eda/transport/memory"
)

type OrderPlaced struct {
	ID string `json:"id"`
}

func (OrderPlaced) EventName() string { return "shop.OrderPlaced" }

// The standalone inbox skips the second delivery of an event whose
// handler succeeded. Use pgstore.Store instead of Memory to share marks
// between processes and keep them across restarts.
func ExampleNew() {
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	idem, _ := inbox.New(inbox.Config{Store: inbox.NewMemory()})
	app, _ := eda.New(eda.Config{Transport: tr, Middleware: []message.HandlerMiddleware{idem}})
	_ = eda.Register[OrderPlaced](app, "orders")
	emails := make(chan string, 2)
	_ = eda.Handle(app, "mailer", func(ctx context.Context, e OrderPlaced) error {
		emails <- "confirmation for " + e.ID
		return nil
	})
	_ = app.Declare(context.Background())

	// The broker delivers one event twice.
	_, msg, _ := app.NewMessage(context.Background(), OrderPlaced{ID: "o-1"})
	for range 2 {
		dup := message.NewMessage(msg.UUID, msg.Payload)
		dup.Metadata = maps.Clone(msg.Metadata)
		_ = tr.Publish("orders", dup)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- app.Run(ctx) }()
	fmt.Println(<-emails)
	tick := time.NewTicker(time.Millisecond) // wait for the duplicate to be settled
	for v, f, _ := tr.Depth("mailer"); v+f > 0; v, f, _ = tr.Depth("mailer") {
		<-tick.C
	}
	cancel()
	<-done
	fmt.Println(len(emails), "more")
	// Output:
	// confirmation for o-1
	// 0 more
}
