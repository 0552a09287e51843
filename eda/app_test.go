package eda_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport/memory"
)

type orderPlaced struct {
	OrderID string `json:"order_id"`
}

func (orderPlaced) EventName() string { return "test.OrderPlaced" }

type orderShipped struct {
	OrderID string `json:"order_id"`
}

func (orderShipped) EventName() string { return "test.OrderShipped" }

func newApp(t *testing.T) *eda.App {
	t.Helper()
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	app, err := eda.New(eda.Config{Transport: tr, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func TestPublishHandleCorrelation(t *testing.T) {
	app := newApp(t)
	must(t, eda.Register[orderPlaced](app, "orders"))
	must(t, eda.Register[orderShipped](app, "shipping"))
	shipped := make(chan eda.Envelope, 1)
	var placedEnv eda.Envelope
	must(t, eda.Handle(app, "warehouse", func(ctx context.Context, e orderPlaced) error {
		placedEnv, _ = eda.EnvelopeFromContext(ctx)
		return app.Publish(ctx, orderShipped{OrderID: e.OrderID})
	}))
	must(t, eda.Handle(app, "mailer", func(ctx context.Context, e orderShipped) error {
		env, _ := eda.EnvelopeFromContext(ctx)
		if e.OrderID != "o-1" {
			t.Errorf("order id %q", e.OrderID)
		}
		shipped <- env
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	must(t, app.Publish(context.Background(), orderPlaced{OrderID: "o-1"}))
	select {
	case env := <-shipped:
		if env.Type != "test.OrderShipped" || env.Source != "test" || env.SchemaVersion != 1 || env.ContentType != "application/json" {
			t.Errorf("envelope %+v", env)
		}
		if env.CausationID != placedEnv.ID || env.CorrelationID != placedEnv.CorrelationID || placedEnv.CorrelationID != placedEnv.ID {
			t.Errorf("causation/correlation: placed %+v shipped %+v", placedEnv, env)
		}
		if time.Since(env.Time) > time.Minute {
			t.Errorf("time %v", env.Time)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OrderShipped handled")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConstructionErrors(t *testing.T) {
	app := newApp(t)
	must(t, eda.Register[orderPlaced](app, "orders"))
	cases := map[string]struct {
		err  error
		want error
	}{
		"duplicate type":       {eda.Register[orderPlaced](app, "orders"), eda.ErrDuplicateEvent},
		"empty topic":          {eda.Register[orderShipped](app, ""), eda.ErrInvalidConfig},
		"nil handler":          {eda.Handle[orderPlaced](app, "q", nil), eda.ErrInvalidConfig},
		"empty queue":          {eda.Handle(app, "", func(context.Context, orderPlaced) error { return nil }), eda.ErrInvalidConfig},
		"unregistered":         {eda.Handle(app, "q", func(context.Context, orderShipped) error { return nil }), eda.ErrUnregisteredEvent},
		"publish unregistered": {app.Publish(context.Background(), orderShipped{}), eda.ErrUnregisteredEvent},
	}
	for name, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", name, c.err, c.want)
		}
	}
	if _, err := eda.New(eda.Config{}); !errors.Is(err, eda.ErrInvalidConfig) {
		t.Errorf("nil transport: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestPublishGroupsConsecutiveEventsPerTopic(t *testing.T) {
	tr, err := memory.New(memory.Config{})
	must(t, err)
	defer tr.Close()
	rec := &recordingPublisher{next: tr}
	app, err := eda.New(eda.Config{Transport: tr, Publisher: rec})
	must(t, err)
	must(t, eda.Register[orderPlaced](app, "orders"))
	must(t, eda.Register[orderShipped](app, "shipping"))
	ctx := context.Background()
	must(t, app.Publish(ctx, orderPlaced{"1"}, orderPlaced{"2"}, orderShipped{"1"}, orderPlaced{"3"}))
	want := []string{"orders:2", "shipping:1", "orders:1"}
	if len(rec.calls) != len(want) {
		t.Fatalf("publish calls %v, want %v", rec.calls, want)
	}
	for i := range want {
		if rec.calls[i] != want[i] {
			t.Fatalf("publish calls %v, want %v", rec.calls, want)
		}
	}
	// An event that cannot be encoded stops everything before publishing.
	rec.calls = nil
	if err := app.Publish(ctx, orderPlaced{"4"}, unregistered{}); !errors.Is(err, eda.ErrUnregisteredEvent) || len(rec.calls) != 0 {
		t.Fatalf("got %v after %v calls, want ErrUnregisteredEvent and no publish", err, rec.calls)
	}
}

type unregistered struct{}

func (unregistered) EventName() string { return "test.Unregistered" }

type recordingPublisher struct {
	next  message.Publisher
	calls []string
}

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.calls = append(p.calls, fmt.Sprintf("%s:%d", topic, len(msgs)))
	return p.next.Publish(topic, msgs...)
}

func (p *recordingPublisher) Close() error { return nil }

// discardPublisher takes messages and does nothing with them.
type discardPublisher struct{}

func (discardPublisher) Publish(string, ...*message.Message) error { return nil }
func (discardPublisher) Close() error                              { return nil }

// Publishing one event allocates what encoding it into a message does and
// nothing more (not the slice handed to the publisher).
func TestPublishOneAllocatesOnlyTheMessage(t *testing.T) {
	tr, err := memory.New(memory.Config{})
	must(t, err)
	defer tr.Close()
	app, err := eda.New(eda.Config{Transport: tr, Publisher: discardPublisher{}})
	must(t, err)
	must(t, eda.Register[orderPlaced](app, "orders"))
	ctx := context.Background()
	var ev eda.Event = orderPlaced{"1"}
	encode := testing.AllocsPerRun(100, func() {
		if _, _, err := app.NewMessage(ctx, ev); err != nil {
			t.Fatal(err)
		}
	})
	publish := testing.AllocsPerRun(100, func() {
		if err := app.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	})
	if publish > encode {
		t.Errorf("Publish of one event: %v allocations, NewMessage alone %v", publish, encode)
	}
}
