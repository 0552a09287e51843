package eda_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

// benchEvent is the payload both sides of the comparison send.
type benchEvent struct {
	OrderID    string  `json:"order_id"`
	CustomerID string  `json:"customer_id"`
	Items      int     `json:"items"`
	Total      float64 `json:"total"`
}

func (benchEvent) EventName() string { return "bench.OrderCreated" }

var benchPayload = benchEvent{OrderID: "order-000123", CustomerID: "customer-42", Items: 3, Total: 99.95}

// counter counts handled messages and signals when the expected number is reached.
type counter struct {
	n, want atomic.Int64
	done    chan struct{}
}

func (c *counter) reset(want int) {
	c.n.Store(0)
	c.want.Store(int64(want))
	c.done = make(chan struct{})
}

func (c *counter) inc() {
	if c.n.Add(1) == c.want.Load() {
		close(c.done)
	}
}

func startRouter(b *testing.B, router *message.Router) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = router.Run(ctx) }()
	<-router.Running()
	b.Cleanup(func() { cancel(); _ = router.Close() })
}

// BenchmarkPublishHandle compares publish+handle through eda's typed layer
// with plain Watermill on the same gochannel Pub/Sub and payload:
//
//	go test -run '^$' -bench PublishHandle -benchmem -count 10 ./eda/ | tee /tmp/a.txt
//	benchstat /tmp/a.txt   (ratio: eda/Watermill rows)
func BenchmarkPublishHandle(b *testing.B) {
	b.Run("impl=watermill", func(b *testing.B) {
		benchWatermill(b, func(id string, payload []byte) *message.Message { return message.NewMessage(id, payload) })
	})
	// What a team using Watermill's own typed layer sends: its
	// cqrs.JSONMarshaler sets one metadata key, "name" (here a constant,
	// not the marshaler's default fmt-made struct name, which would cost
	// the baseline more). Any metadata at all costs what eda's envelope
	// costs on gochannel (the map's one group of slots, and one in each of
	// the two copies gochannel makes on delivery).
	b.Run("impl=watermill-cqrs", func(b *testing.B) {
		benchWatermill(b, func(id string, payload []byte) *message.Message {
			msg := message.NewMessage(id, payload)
			msg.Metadata.Set("name", "bench.OrderCreated")
			return msg
		})
	})
	// The same with the metadata eda's envelope carries (8 keys), set by
	// hand: what the typed layer costs beyond having an envelope at all (on
	// gochannel, the map and its two copies on delivery).
	b.Run("impl=watermill-envelope", func(b *testing.B) {
		benchWatermill(b, func(id string, payload []byte) *message.Message {
			msg := message.NewMessage(id, payload)
			msg.Metadata["ce_specversion"] = "1.0"
			msg.Metadata["ce_id"] = id
			msg.Metadata["ce_source"] = "bench"
			msg.Metadata["ce_type"] = "bench.OrderCreated"
			msg.Metadata["ce_time"] = "2026-12-01T19:00:00.123456789Z"
			msg.Metadata["ce_datacontenttype"] = "application/json"
			msg.Metadata["ce_dataschemaversion"] = "1"
			msg.Metadata["ce_correlationid"] = id
			return msg
		})
	})
	b.Run("impl=eda", func(b *testing.B) {
		pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
		app, err := eda.New(eda.Config{Transport: transport.Adapt(pubsub, pubsub)})
		if err != nil {
			b.Fatal(err)
		}
		var c counter
		if err := eda.Register[benchEvent](app, "orders"); err != nil {
			b.Fatal(err)
		}
		if err := eda.Handle(app, "inventory", func(_ context.Context, _ benchEvent) error { c.inc(); return nil }); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- app.Run(ctx) }()
		<-app.Running()
		b.Cleanup(func() { cancel(); <-done })
		c.reset(b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := app.Publish(ctx, benchPayload); err != nil {
				b.Fatal(err)
			}
		}
		<-c.done
	})
}

// benchWatermill publishes b.N messages built by newMsg through gochannel to
// a plain Watermill handler that decodes them.
func benchWatermill(b *testing.B, newMsg func(id string, payload []byte) *message.Message) {
	pubsub := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
	router := message.NewDefaultRouter(watermill.NopLogger{})
	var c counter
	router.AddConsumerHandler("h", "orders", pubsub, func(msg *message.Message) error {
		var e benchEvent
		if err := json.Unmarshal(msg.Payload, &e); err != nil {
			return err
		}
		c.inc()
		return nil
	})
	startRouter(b, router)
	c.reset(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		payload, err := json.Marshal(benchPayload)
		if err != nil {
			b.Fatal(err)
		}
		if err := pubsub.Publish("orders", newMsg(watermill.NewUUID(), payload)); err != nil {
			b.Fatal(err)
		}
	}
	<-c.done
}
