package postgres_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
)

type orderPlaced struct {
	OrderID string `json:"order_id"`
}

func (orderPlaced) EventName() string { return "pgtest.OrderPlaced" }

// Typed events through an eda App on this transport: a handler that fails
// gets the event again (the router nacks), with the receive count the
// transport keeps.
func TestEDAApp(t *testing.T) {
	tr := newTransport(t, postgres.Config{})
	app, err := eda.New(eda.Config{Transport: tr, Source: "pgtest"})
	if err != nil {
		t.Fatal(err)
	}
	topic, queue := names(t)
	if err := eda.Register[orderPlaced](app, topic); err != nil {
		t.Fatal(err)
	}
	type delivery struct {
		id    string
		count string
	}
	got := make(chan delivery, 4)
	var attempts atomic.Int32
	err = eda.Handle(app, queue, func(ctx context.Context, e orderPlaced) error {
		count := ""
		if msg, ok := eda.MessageFromContext(ctx); ok {
			count = msg.Metadata.Get(transport.MetadataReceiveCount)
		}
		got <- delivery{e.OrderID, count}
		if attempts.Add(1) == 1 {
			return errors.New("first attempt fails")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	if err := app.Publish(ctx, orderPlaced{OrderID: "o-1"}); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		select {
		case d := <-got:
			if d.id != "o-1" || d.count != strconv.Itoa(attempt) {
				t.Errorf("attempt %d handled %q with receive count %q", attempt, d.id, d.count)
			}
		case err := <-done:
			t.Fatalf("app stopped: %v", err)
		case <-time.After(wait):
			t.Fatalf("attempt %d not handled within %s", attempt, wait)
		}
	}
	waitEmpty(t, tr, queue)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
