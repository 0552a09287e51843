package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
)

// The benchmarks compare the transport with plain watermill-sql v4 on the
// same Postgres, in the same run: PostgreSQLQueueSchema (BYTEA payload) with
// PostgreSQLQueueOffsetsAdapter{DeleteOnAck: true}, its pgx adapters and
// default subscriber settings. Both publish one message per call and ack
// every message; payload 200 bytes with eda-like metadata.
//
//	go test -run '^$' -bench . -benchtime 5000x ./transport/postgres/

func benchMessage(i int) *message.Message {
	m := message.NewMessage(fmt.Sprintf("%08d-0000-7000-8000-000000000000", i), make([]byte, 200))
	m.Metadata.Set(transport.MetadataEventID, m.UUID)
	m.Metadata.Set("ce_type", "orders.OrderPlaced")
	m.Metadata.Set("ce_source", "bench")
	return m
}

func benchEDA(b *testing.B, cfg postgres.Config) (*postgres.Transport, string) {
	b.Helper()
	pool, schema := testPool(b)
	cfg.Pool, cfg.Schema = pool, schema
	tr, err := postgres.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close() })
	topic := "bench-" + randomHex(4)
	if err := tr.Declare(context.Background(), transport.Queue{Name: topic, Topics: []string{topic}}); err != nil {
		b.Fatal(err)
	}
	return tr, topic
}

func benchWatermill(b *testing.B) (*wsql.Publisher, *wsql.Subscriber, string) {
	b.Helper()
	pool, schema := testPool(b)
	table := func(topic string) string { return pgx.Identifier{schema, "wm_" + topic}.Sanitize() }
	schemaAdapter := wsql.PostgreSQLQueueSchema{
		GeneratePayloadType:       func(string) string { return "BYTEA" },
		GenerateMessagesTableName: table,
	}
	db := wsql.BeginnerFromPgx(pool)
	pub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: schemaAdapter, AutoInitializeSchema: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	sub, err := wsql.NewSubscriber(db, wsql.SubscriberConfig{
		SchemaAdapter:    schemaAdapter,
		OffsetsAdapter:   wsql.PostgreSQLQueueOffsetsAdapter{DeleteOnAck: true, GenerateMessagesTableName: table},
		InitializeSchema: true,
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pub.Close(); _ = sub.Close() })
	topic := "bench_" + randomHex(4)
	if err := sub.SubscribeInitialize(topic); err != nil {
		b.Fatal(err)
	}
	return pub, sub, topic
}

// BenchmarkPublish publishes one message per call (an op is a message) or
// 100 per call (an op is still a message), with 1 or 8 publishers.
func BenchmarkPublish(b *testing.B) {
	for _, c := range []struct {
		batch, publishers int
	}{{1, 1}, {1, 8}, {100, 1}} {
		run := func(b *testing.B, pub message.Publisher, topic string) {
			b.SetParallelism(c.publishers) // with GOMAXPROCS 2: 2×publishers goroutines
			var next atomic.Int64
			b.ResetTimer()
			if c.publishers == 1 {
				for i := 0; i < b.N; i += c.batch {
					publishBatch(b, pub, topic, i, min(c.batch, b.N-i))
				}
				return
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					publishBatch(b, pub, topic, int(next.Add(1)), 1)
				}
			})
		}
		suffix := fmt.Sprintf("batch=%d/publishers=%d", c.batch, c.publishers)
		b.Run("eda/"+suffix, func(b *testing.B) {
			tr, topic := benchEDA(b, postgres.Config{})
			run(b, tr, topic)
		})
		b.Run("eda-nonotify/"+suffix, func(b *testing.B) {
			tr, topic := benchEDA(b, postgres.Config{DisableNotify: true})
			run(b, tr, topic)
		})
		b.Run("watermill-sql/"+suffix, func(b *testing.B) {
			pub, _, topic := benchWatermill(b)
			run(b, pub, topic)
		})
	}
}

func publishBatch(b *testing.B, pub message.Publisher, topic string, first, n int) {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = benchMessage(first + i)
	}
	if err := pub.Publish(topic, msgs...); err != nil {
		b.Error(err)
	}
}

// prefill publishes n messages in batches, outside the timer.
func prefill(b *testing.B, pub message.Publisher, topic string, n int) {
	b.Helper()
	for i := 0; i < n; i += 500 {
		var msgs []*message.Message
		for j := i; j < min(i+500, n); j++ {
			msgs = append(msgs, benchMessage(j))
		}
		if err := pub.Publish(topic, msgs...); err != nil {
			b.Fatal(err)
		}
	}
}

// consume receives and acks n messages with the given number of consumers.
func consume(b *testing.B, sub message.Subscriber, name string, n, consumers int) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	left := n
	var chans []<-chan *message.Message
	for range consumers {
		ch, err := sub.Subscribe(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		chans = append(chans, ch)
	}
	for _, ch := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				m.Ack()
				mu.Lock()
				left--
				if left == 0 {
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func BenchmarkConsume(b *testing.B) {
	for _, c := range []struct {
		consumers, batch int
	}{{1, 1}, {1, postgres.DefaultBatchSize}, {1, 100}, {4, postgres.DefaultBatchSize}} {
		b.Run(fmt.Sprintf("eda/consumers=%d/batch=%d", c.consumers, c.batch), func(b *testing.B) {
			tr, topic := benchEDA(b, postgres.Config{BatchSize: c.batch})
			prefill(b, tr, topic, b.N)
			b.ResetTimer()
			consume(b, tr, topic, b.N, c.consumers)
		})
	}
	b.Run("watermill-sql/consumers=1", func(b *testing.B) {
		pub, sub, topic := benchWatermill(b)
		prefill(b, pub, topic, b.N)
		b.ResetTimer()
		consume(b, sub, topic, b.N, 1)
	})
}
