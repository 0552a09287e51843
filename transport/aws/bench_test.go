package aws_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	smithymw "github.com/aws/smithy-go/middleware"

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
	return sliceQueue(b, tr, b.N)
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
	// One timer for the run, not one per message (time.After): the SDK
	// loop it is compared with has none.
	idle := time.NewTimer(30 * time.Second)
	defer idle.Stop()
	for range n {
		select {
		case m := <-ch:
			go func() {
				if work > 0 {
					time.Sleep(work)
				}
				m.Ack()
			}()
			idle.Reset(30 * time.Second)
		case <-idle.C:
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

// BenchmarkConsumeInterleaved compares eda's subscription with the optimal
// SDK loop (optimalConsume) in alternating slices of the same run, so the
// noise of a shared machine and emulator hits both: each slice declares
// two fresh queues, fills both with the same interleaveSlice messages (not
// timed), then consumes one with eda and the other with the SDK loop, in
// turns (eda first in even slices, the SDK loop first in odd ones). Both
// sides run the same number of receive loops, 1 + (concurrency-1)/10, and
// the same handlers (one goroutine per message); a side's time runs from
// its first receive to its last delete (eda's Subscribe, which looks the
// queue up, is not timed).
//
// Fresh queues per slice keep the sides apart on fauxqs, which wakes every
// ReceiveMessage waiting on a queue when a message arrives: eda's long
// polls in flight when its subscription stops run on until WaitTime (their
// messages would be adopted or released), and would otherwise take part
// of the next slice; the queues are deleted after each slice, which ends
// them.
//
// It reports msgs/s of each side, their ratio (eda/sdk: overall, and the
// median of the slices' ratios), and per message of each side: the SQS
// calls (ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch)
// and the CPU time of this process and of the emulator's (from /proc, when
// scripts/emulator.sh started it) and the heap allocations of this process,
// during that side's slices. On a shared machine the allocations are the
// steadiest of these; the CPU times move with the load of other processes. The
// one-by-one runs of BenchmarkConsume are the second line.
//
// Against an emulator of its own (it floods the emulator):
//
//	EDA_EMULATOR_PORT=4582 scripts/emulator.sh up
//	EDA_AWS_ENDPOINT=http://127.0.0.1:4582 go test -run '^$' -bench ConsumeInterleaved -benchtime 5000x -count 3 ./transport/aws/
//	EDA_EMULATOR_PORT=4582 scripts/emulator.sh down
//
// go test -cpuprofile works on it: the two sides' goroutines carry the
// label side=eda or side=sdk (go tool pprof -tagfocus side=eda).
func BenchmarkConsumeInterleaved(b *testing.B) {
	for _, work := range []time.Duration{0, time.Millisecond} {
		for _, c := range []int{1, 32} {
			b.Run(fmt.Sprintf("work=%s/c=%d", work, c), func(b *testing.B) { benchInterleaved(b, work, c) })
		}
	}
}

// interleaveSlice is how many messages each side consumes per slice.
const interleaveSlice = 250

// side is what one side of an interleaved benchmark measured.
type side struct {
	calls          callCounter
	n              int
	wall           time.Duration
	goCPU, emuCPU  time.Duration
	emuCPUMeasured bool
	allocs         uint64 // heap allocations of this process
}

// measure runs f (which consumes n messages) and adds its wall time, the
// CPU time of this process and of the emulator's process (when its pid is
// known) and its SQS calls.
func (s *side) measure(b *testing.B, name string, emuPID, n int, f func()) time.Duration {
	s.calls.on.Store(true)
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	allocStart := mem.Mallocs
	goStart, emuStart := processCPU(os.Getpid()), processCPU(emuPID)
	b.StartTimer()
	start := time.Now()
	// Goroutines started by f carry the label: a CPU profile tells the
	// sides apart (go tool pprof -tagfocus side=eda).
	pprof.Do(context.Background(), pprof.Labels("side", name), func(context.Context) { f() })
	wall := time.Since(start)
	b.StopTimer()
	s.goCPU += processCPU(os.Getpid()) - goStart
	runtime.ReadMemStats(&mem)
	s.allocs += mem.Mallocs - allocStart
	if emuPID > 0 {
		s.emuCPU += processCPU(emuPID) - emuStart
		s.emuCPUMeasured = true
	}
	s.calls.on.Store(false)
	s.wall += wall
	s.n += n
	return wall
}

func (s *side) report(b *testing.B, name string) {
	b.ReportMetric(float64(s.n)/s.wall.Seconds(), name+"-msgs/s")
	b.ReportMetric(float64(s.goCPU.Microseconds())/float64(s.n), name+"-go-cpu-us/msg")
	b.ReportMetric(float64(s.allocs)/float64(s.n), name+"-allocs/msg")
	if s.emuCPUMeasured {
		b.ReportMetric(float64(s.emuCPU.Microseconds())/float64(s.n), name+"-emu-cpu-us/msg")
	}
	for _, op := range []string{"ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"} {
		b.ReportMetric(float64(s.calls.get(op))/float64(s.n), name+"-"+op+"/msg")
	}
}

func benchInterleaved(b *testing.B, work time.Duration, concurrency int) {
	const batch = 10
	var eda, sdk side
	cfg := testConfig(b)
	cfg.Concurrency, cfg.BatchSize = concurrency, batch
	cfg.AWS.APIOptions = append(cfg.AWS.APIOptions, eda.calls.middleware)
	edaTr := newTransport(b, cfg)
	sdkCfg := testConfig(b)
	sdkCfg.AWS.APIOptions = append(sdkCfg.AWS.APIOptions, sdk.calls.middleware)
	sdkTr := newTransport(b, sdkCfg)
	emuPID := emulatorPID()
	ctx := context.Background()

	b.StopTimer()
	var ratios []float64 // per slice: eda's rate over the SDK loop's
	for slice := 0; eda.n < b.N; slice++ {
		n := min(interleaveSlice, b.N-eda.n)
		// Both queues are declared and filled by the same (uncounted) calls.
		edaName, edaURL := sliceQueue(b, sdkTr, n)
		_, sdkURL := sliceQueue(b, sdkTr, n)
		var edaWall, sdkWall time.Duration
		runEda := func() {
			// Subscribe's one-time queue lookup is not counted: the SDK
			// loop is given the URL.
			pprof.Do(ctx, pprof.Labels("side", "eda"), func(ctx context.Context) {
				subCtx, cancel := context.WithCancel(ctx)
				defer cancel()
				ch, err := edaTr.Subscribe(subCtx, edaName)
				if err != nil {
					b.Fatal(err)
				}
				edaWall = eda.measure(b, "eda", emuPID, n, func() { edaConsume(b, ch, cancel, n, work) })
			})
		}
		runSDK := func() {
			sdkWall = sdk.measure(b, "sdk", emuPID, n, func() { optimalConsume(b, sdkTr.SQS(), sdkURL, n, concurrency, batch, work) })
		}
		if slice%2 == 0 {
			runEda()
			runSDK()
		} else {
			runSDK()
			runEda()
		}
		ratios = append(ratios, sdkWall.Seconds()/edaWall.Seconds())
		if testing.Verbose() {
			b.Logf("slice %d: eda %v, sdk %v", slice, edaWall, sdkWall)
		}
		for _, url := range []string{edaURL, sdkURL} {
			if _, err := sdkTr.SQS().DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: &url}); err != nil {
				b.Fatal(err)
			}
		}
	}
	eda.report(b, "eda")
	sdk.report(b, "sdk")
	b.ReportMetric((float64(eda.n)/eda.wall.Seconds())/(float64(sdk.n)/sdk.wall.Seconds()), "eda/sdk")
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "eda/sdk-median")
	b.ReportMetric(0, "ns/op") // the time of both sides: the rates above are what counts
}

// processCPU is the user and system CPU time of a process so far (0 when
// it cannot be read).
func processCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command's closing parenthesis: utime and stime
	// are the 12th and 13th, in clock ticks (100 a second on Linux).
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// emulatorPID is the pid of the emulator at EDA_AWS_ENDPOINT when
// scripts/emulator.sh started it (its pid file), else 0.
func emulatorPID() int {
	u, err := url.Parse(endpoint())
	if err != nil {
		return 0
	}
	pid, err := os.ReadFile("../../.tools/emulator/fauxqs." + u.Port() + ".pid")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
	return n
}

// sliceQueue declares a fresh queue and fills it with n messages.
func sliceQueue(b *testing.B, tr *edaaws.Transport, n int) (name, url string) {
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
	fillQueue(b, tr.SQS(), *out.QueueUrl, n)
	return name, *out.QueueUrl
}

// edaConsume handles n messages of a subscription (each in its own
// goroutine, as the Watermill router does), stops it and returns once the
// last delete is done (the channel closes after the acker's deletes).
func edaConsume(b *testing.B, ch <-chan *message.Message, cancel func(), n int, work time.Duration) {
	b.Helper()
	var handlers sync.WaitGroup
	idle := time.NewTimer(30 * time.Second) // one for the run: the SDK loop has none
	defer idle.Stop()
	for range n {
		select {
		case m := <-ch:
			handlers.Go(func() {
				if work > 0 {
					time.Sleep(work)
				}
				m.Ack()
			})
			idle.Reset(30 * time.Second)
		case <-idle.C:
			b.Fatal("consume: nothing for 30s")
		}
	}
	handlers.Wait()
	cancel()
	for range ch {
		b.Error("a message after the last")
	}
}

// callCounter counts SDK calls by operation while on.
type callCounter struct {
	on     atomic.Bool
	mu     sync.Mutex
	counts map[string]int
}

func (c *callCounter) middleware(stack *smithymw.Stack) error {
	return stack.Initialize.Add(smithymw.InitializeMiddlewareFunc("benchCount",
		func(ctx context.Context, in smithymw.InitializeInput, next smithymw.InitializeHandler) (smithymw.InitializeOutput, smithymw.Metadata, error) {
			if c.on.Load() {
				op := awsmw.GetOperationName(ctx)
				c.mu.Lock()
				if c.counts == nil {
					c.counts = map[string]int{}
				}
				c.counts[op]++
				c.mu.Unlock()
			}
			return next.HandleInitialize(ctx, in)
		}), smithymw.After)
}

func (c *callCounter) get(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[op]
}
