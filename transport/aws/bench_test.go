package aws_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// The benchmarks run against the emulator: make bench-aws, or
//
//	scripts/emulator.sh up
//	go test -run '^$' -bench . -benchtime 2000x ./transport/aws/
//
// They report msgs/s; the consumer variants read the same number of
// messages from a pre-filled queue in the same run.

// fillQueue sends n small messages straight to an SQS queue.
func fillQueue(b *testing.B, client *sqs.Client, url string, n int) {
	b.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for start := 0; start < n; start += 10 {
		entries := make([]sqstypes.SendMessageBatchRequestEntry, 0, 10)
		for i := start; i < min(start+10, n); i++ {
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{
				Id:          awssdk.String(strconv.Itoa(i - start)),
				MessageBody: awssdk.String(`{"n":` + strconv.Itoa(i) + `}`),
			})
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			out, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: entries})
			if err != nil || len(out.Failed) > 0 {
				b.Errorf("fill: %v %v", err, out)
			}
		}()
	}
	wg.Wait()
}

// benchQueue declares a fresh queue and fills it with b.N messages.
func benchQueue(b *testing.B, tr *edaaws.Transport) (name, url string) {
	b.Helper()
	ctx := context.Background()
	name = uniq("bench")
	if err := tr.Declare(ctx, transport.Queue{Name: name, VisibilityTimeout: 30 * time.Second}); err != nil {
		b.Fatal(err)
	}
	out, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &name})
	if err != nil {
		b.Fatal(err)
	}
	fillQueue(b, tr.SQS(), *out.QueueUrl, b.N)
	return name, *out.QueueUrl
}

func reportRate(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkConsume(b *testing.B) {
	for _, work := range []time.Duration{0, time.Millisecond} {
		b.Run("work="+work.String(), func(b *testing.B) { benchConsume(b, work) })
	}
}

// benchConsume consumes with handlers that work for the given time (a
// timer, as an I/O-bound handler waits).
func benchConsume(b *testing.B, work time.Duration) {
	// Plain loop: receive one message, handle it, delete it, repeat.
	b.Run("impl=sdk-one-by-one", func(b *testing.B) {
		tr := newTransport(b, testConfig(b))
		_, url := benchQueue(b, tr)
		client := tr.SQS()
		ctx := context.Background()
		b.ResetTimer()
		for got := 0; got < b.N; {
			out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 1, WaitTimeSeconds: 1})
			if err != nil {
				b.Fatal(err)
			}
			for _, m := range out.Messages {
				if work > 0 {
					time.Sleep(work)
				}
				if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: m.ReceiptHandle}); err != nil {
					b.Fatal(err)
				}
				got++
			}
		}
		reportRate(b, b.N)
	})
	// watermill-aws's SQS subscriber, defaults (one message per receive).
	b.Run("impl=watermill-aws", func(b *testing.B) {
		tr := newTransport(b, testConfig(b))
		name, _ := benchQueue(b, tr)
		ep := endpoint()
		sub, err := wmsqs.NewSubscriber(wmsqs.SubscriberConfig{
			AWSConfig:                   awsConfig(),
			OptFns:                      []func(*sqs.Options){func(o *sqs.Options) { o.BaseEndpoint = &ep }},
			DoNotCreateQueueIfNotExists: true,
		}, watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.ResetTimer()
		ch, err := sub.Subscribe(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		consume(b, ch, b.N, work)
		reportRate(b, b.N)
	})
	for _, c := range []struct{ concurrency, batch int }{{1, 10}, {32, 10}} {
		// The limit: a hand-written SDK loop with eda's concurrency and
		// receive calls, and nothing else (no decoding, no router, no
		// visibility bookkeeping).
		b.Run(fmt.Sprintf("impl=sdk-optimal-batch%d-c%d", c.batch, c.concurrency), func(b *testing.B) {
			tr := newTransport(b, testConfig(b))
			_, url := benchQueue(b, tr)
			b.ResetTimer()
			optimalConsume(b, tr.SQS(), url, b.N, c.concurrency, c.batch, work)
			reportRate(b, b.N)
		})
		b.Run(fmt.Sprintf("impl=eda-batch%d-c%d", c.batch, c.concurrency), func(b *testing.B) {
			cfg := testConfig(b)
			cfg.Concurrency, cfg.BatchSize = c.concurrency, c.batch
			tr := newTransport(b, cfg)
			name, _ := benchQueue(b, tr)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ResetTimer()
			ch, err := tr.Subscribe(ctx, name)
			if err != nil {
				b.Fatal(err)
			}
			consume(b, ch, b.N, work)
			reportRate(b, b.N)
			cancel()
			_ = tr.Close() // waits for the last deletes
		})
	}
}

// optimalConsume is the best an SDK loop does at a concurrency: as many
// goroutines as eda runs receive loops (1 + (concurrency-1)/batch), each
// receives up to batch messages with long polling, handles them in their
// own goroutines with at most concurrency handlers running in all, and
// deletes the batch with one DeleteMessageBatch, until n are deleted.
func optimalConsume(b *testing.B, client *sqs.Client, url string, n, concurrency, batch int, work time.Duration) {
	b.Helper()
	// Done when n are deleted: receives still long-polling the empty queue
	// are cancelled, as eda's subscription is.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var deleted atomic.Int64
	handlers := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for range 1 + (concurrency-1)/batch {
		wg.Go(func() {
			for deleted.Load() < int64(n) {
				out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: int32(batch), WaitTimeSeconds: 1})
				if err != nil {
					if ctx.Err() == nil {
						b.Error(err)
					}
					return
				}
				if len(out.Messages) == 0 {
					continue
				}
				var hw sync.WaitGroup
				entries := make([]sqstypes.DeleteMessageBatchRequestEntry, len(out.Messages))
				for i, m := range out.Messages {
					entries[i] = sqstypes.DeleteMessageBatchRequestEntry{Id: awssdk.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
					handlers <- struct{}{}
					hw.Go(func() {
						if work > 0 {
							time.Sleep(work)
						}
						<-handlers
					})
				}
				hw.Wait()
				del, err := client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: &url, Entries: entries})
				if err != nil || len(del.Failed) > 0 {
					b.Errorf("delete: %v %v", err, del)
					return
				}
				if deleted.Add(int64(len(entries))) >= int64(n) {
					cancel()
				}
			}
		})
	}
	wg.Wait()
}

// consume handles n messages, each in its own goroutine as the Watermill
// router does: work, then ack.
func consume(b *testing.B, ch <-chan *message.Message, n int, work time.Duration) {
	b.Helper()
	for range n {
		select {
		case m := <-ch:
			go func() {
				if work > 0 {
					time.Sleep(work)
				}
				m.Ack()
			}()
		case <-time.After(30 * time.Second):
			b.Fatal("consume: nothing for 30s")
		}
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("impl=eda-publish-batch%d", batch), func(b *testing.B) {
			tr := newTransport(b, testConfig(b))
			topic := uniq("bench")
			if err := tr.Declare(context.Background(), transport.Queue{Name: uniq("bench"), Topics: []string{topic}}); err != nil {
				b.Fatal(err)
			}
			msgs := make([]*message.Message, b.N)
			for i := range msgs {
				msgs[i] = newMsg(`{"n":`+strconv.Itoa(i)+`}`, map[string]string{"ce_type": "bench.Event", "ce_source": "bench"})
			}
			b.ResetTimer()
			for start := 0; start < b.N; start += batch {
				if err := tr.Publish(topic, msgs[start:min(start+batch, b.N)]...); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, b.N)
		})
	}
}
