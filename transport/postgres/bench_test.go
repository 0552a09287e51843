package postgres_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
)

// The benchmarks compare the transport with plain watermill-sql v4 on the
// same Postgres, in the same run: PostgreSQLQueueSchema (BYTEA payload) with
// PostgreSQLQueueOffsetsAdapter{DeleteOnAck: true}, its pgx adapters and
// default subscriber settings (batch 100). Payload 200 bytes with eda-like
// metadata; every message is acked.
//
// The machine they run on is shared and noisy, so each benchmark alternates
// eda and watermill-sql in slices of the same size (interleaved, as
// cmd/outboxbench does) and reports both per-message times and their ratio:
// eda-us/msg, wm-us/msg, and eda/wm, watermill-sql's time over eda's, that
// is eda's rate as a multiple of watermill-sql's (>= 1: eda as fast or
// faster). ns/op covers both.
//
//	go test -run '^$' -bench . -benchtime 3000x -count 3 ./transport/postgres/

func benchMessage(i int) *message.Message {
	m := message.NewMessage(fmt.Sprintf("%08d-0000-7000-8000-000000000000", i), make([]byte, 200))
	m.Metadata.Set(transport.MetadataEventID, m.UUID)
	m.Metadata.Set("ce_type", "orders.OrderPlaced")
	m.Metadata.Set("ce_source", "bench")
	return m
}

func benchEDA(b *testing.B, cfg postgres.Config) (*postgres.Transport, string, *sideStats) {
	b.Helper()
	st, schema := benchPool(b, "eda")
	cfg.Pool, cfg.Schema = st.pool, schema
	tr, err := postgres.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close() })
	topic := "bench-" + randomHex(4)
	if err := tr.Declare(context.Background(), transport.Queue{Name: topic, Topics: []string{topic}}); err != nil {
		b.Fatal(err)
	}
	return tr, topic, st
}

func benchWatermill(b *testing.B) (*wsql.Publisher, *wsql.Subscriber, string, *sideStats) {
	b.Helper()
	st, schema := benchPool(b, "wm")
	pool := st.pool
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
	return pub, sub, topic, st
}

// slices is how many alternating slices of each side a benchmark runs.
const slices = 6

// interleave runs eda and watermill-sql alternately, n messages in all for
// each side, and reports their per-message times and ratio, and per side
// (from es and ws) the backends' CPU (be-us), this process's CPU during the
// side's slices (go-us), the server's WAL (wal-B: all of the server's, so
// noisy when others write), round trips (rt) and statements (stmt) per
// message. The slices' setup (prefilling) is in none of them: a side's
// function calls mark when its measured part starts.
// EDA_BENCH_SIDE=eda or =wm runs one side only, to profile it (perf record
// on the Postgres backends, -cpuprofile on the client).
func interleave(b *testing.B, n int, es, ws *sideStats, eda, wm func(n int, mark func()) time.Duration) {
	b.Helper()
	_, _ = testPool(b)
	admin := shared.pool
	measure := func(st *sideStats, f func(int, func()) time.Duration) func(int) time.Duration {
		return func(k int) time.Duration {
			var from snapshot
			d := f(k, func() { from = st.snap(b, admin) })
			st.add(b, admin, from, st.snap(b, admin))
			return d
		}
	}
	edaRun, wmRun := measure(es, eda), measure(ws, wm)
	switch os.Getenv("EDA_BENCH_SIDE") {
	case "eda":
		wmRun = func(int) time.Duration { return 0 }
	case "wm":
		edaRun = func(int) time.Duration { return 0 }
	}
	var te, tw time.Duration
	for i := range slices {
		k := n/slices + boolInt(i < n%slices)
		if k == 0 {
			continue
		}
		if i%2 == 0 { // who goes first alternates too
			te += edaRun(k)
			tw += wmRun(k)
		} else {
			tw += wmRun(k)
			te += edaRun(k)
		}
	}
	b.ReportMetric(float64(te.Microseconds())/float64(n), "eda-us/msg")
	b.ReportMetric(float64(tw.Microseconds())/float64(n), "wm-us/msg")
	b.ReportMetric(float64(tw)/float64(te), "eda/wm")
	b.ReportMetric(0, "ns/op")
	es.report(b, "eda", n)
	ws.report(b, "wm", n)
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// BenchmarkPublish publishes one message per call or 100 per call (an op is
// a message either way), with 1 or 8 publishers.
func BenchmarkPublish(b *testing.B) {
	for _, c := range []struct {
		batch, publishers int
		notify            bool
	}{{1, 1, true}, {1, 8, true}, {100, 1, true}, {1, 1, false}, {1, 8, false}} {
		name := fmt.Sprintf("batch=%d/publishers=%d", c.batch, c.publishers)
		if !c.notify {
			name += "/nonotify"
		}
		b.Run(name, func(b *testing.B) {
			tr, etopic, es := benchEDA(b, postgres.Config{DisableNotify: !c.notify})
			pub, _, wtopic, ws := benchWatermill(b)
			run := func(p message.Publisher, topic string) func(int, func()) time.Duration {
				return func(n int, mark func()) time.Duration {
					mark()
					start := time.Now()
					publishN(b, p, topic, n, c.batch, c.publishers)
					return time.Since(start)
				}
			}
			b.ResetTimer()
			interleave(b, b.N, es, ws, run(tr, etopic), run(pub, wtopic))
		})
	}
}

// publishN publishes n messages in calls of batch messages from publishers
// goroutines.
func publishN(b *testing.B, pub message.Publisher, topic string, n, batch, publishers int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				first := int(next.Add(int64(batch))) - batch
				if first >= n {
					return
				}
				publishBatch(b, pub, topic, first, min(batch, n-first))
			}
		}()
	}
	wg.Wait()
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

// prefill publishes n messages in batches.
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

// BenchmarkConsume receives and acks prefilled messages, eda with the given
// settings against watermill-sql with its defaults and the same number of
// consumers. Prefilling is outside the times.
func BenchmarkConsume(b *testing.B) {
	for _, c := range []struct {
		name      string
		consumers int
		cfg       postgres.Config
	}{
		{"defaults/consumers=1", 1, postgres.Config{}},
		{"defaults/consumers=4", 4, postgres.Config{}},
		{"batch=1/consumers=1", 1, postgres.Config{BatchSize: 1, MaxBatchSize: 1}},
		{"batch=10/consumers=1", 1, postgres.Config{BatchSize: 10, MaxBatchSize: 10}},
		{"batch=100/consumers=1", 1, postgres.Config{BatchSize: 100}},
	} {
		b.Run(c.name, func(b *testing.B) {
			tr, etopic, es := benchEDA(b, c.cfg)
			pub, sub, wtopic, ws := benchWatermill(b)
			b.ResetTimer()
			interleave(b, b.N, es, ws, func(n int, mark func()) time.Duration {
				b.StopTimer()
				prefill(b, tr, etopic, n)
				b.StartTimer()
				mark()
				start := time.Now()
				consume(b, tr, etopic, n, c.consumers)
				return time.Since(start)
			}, func(n int, mark func()) time.Duration {
				b.StopTimer()
				prefill(b, pub, wtopic, n)
				b.StartTimer()
				mark()
				start := time.Now()
				consume(b, sub, wtopic, n, c.consumers)
				return time.Since(start)
			})
		})
	}
}
