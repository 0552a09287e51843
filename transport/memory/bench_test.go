package memory_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

// BenchmarkPublishHandle compares the memory transport, with its SNS/SQS
// semantics (fan-out copy, visibility timer, receive count, ack tracking),
// with Watermill's gochannel under the same router, handler and payload:
//
//	go test -run '^$' -bench PublishHandle -benchmem -count 10 ./transport/memory/ | tee /tmp/b.txt
//	benchstat /tmp/b.txt
func BenchmarkPublishHandle(b *testing.B) {
	payload := []byte(`{"order_id":"order-000123","customer_id":"customer-42","items":3,"total":99.95}`)
	run := func(b *testing.B, pub message.Publisher, sub message.Subscriber, queue string) {
		var n atomic.Int64
		done := make(chan struct{})
		router := message.NewDefaultRouter(watermill.NopLogger{})
		router.AddConsumerHandler("h", queue, sub, func(*message.Message) error {
			if n.Add(1) == int64(b.N) {
				close(done)
			}
			return nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { _ = router.Run(ctx) }()
		<-router.Running()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if err := pub.Publish("orders", message.NewMessage(watermill.NewUUID(), payload)); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		b.StopTimer()
		_ = router.Close()
	}
	b.Run("impl=gochannel", func(b *testing.B) {
		ps := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NopLogger{})
		run(b, ps, ps, "orders")
	})
	b.Run("impl=memory", func(b *testing.B) {
		tr, err := memory.New(memory.Config{})
		if err != nil {
			b.Fatal(err)
		}
		if err := tr.Declare(context.Background(), transport.Queue{Name: "inventory", Topics: []string{"orders"}}); err != nil {
			b.Fatal(err)
		}
		run(b, tr, tr, "inventory")
	})
}
