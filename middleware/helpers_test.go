package middleware_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

// placed and shipped are the events of these tests.
type placed struct {
	ID string `json:"id"`
}

func (placed) EventName() string { return "test.Placed" }

type shipped struct {
	ID string `json:"id"`
}

func (shipped) EventName() string { return "test.Shipped" }

const (
	placedTopic  = "placed"
	shippedTopic = "shipped"
	poisonTopic  = "poison"
	poisonQueue  = "poison-q"
	waitTimeout  = 10 * time.Second
)

// newTransport returns a memory transport closed when the test ends.
func newTransport(t testing.TB) *memory.Transport {
	t.Helper()
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// newApp returns an app on tr with the test events registered.
func newApp(t testing.TB, tr transport.Transport, pub message.Publisher, mw ...message.HandlerMiddleware) *eda.App {
	t.Helper()
	app, err := eda.New(eda.Config{Transport: tr, Publisher: pub, Source: "test", Middleware: mw, CloseTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	must(t, eda.Register[placed](app, placedTopic))
	must(t, eda.Register[shipped](app, shippedTopic))
	return app
}

// start runs app until the test ends (or stop is called) and returns once
// it is running.
func start(t testing.TB, app *eda.App) (stop func()) {
	t.Helper()
	return edatest.Run(t, app)
}

// subscribe declares queue on topic and returns its messages, acking none.
func subscribe(t testing.TB, tr transport.Transport, queue, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	must(t, tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}))
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// receive returns the next message of ch, acked, or fails the test.
func receive(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case msg := <-ch:
		msg.Ack()
		return msg
	case <-time.After(waitTimeout):
		t.Fatal("no message received")
		return nil
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// drained waits until queue has no message waiting or in flight.
func drained(t testing.TB, tr *memory.Transport, queue string) {
	t.Helper()
	eventually(t, "queue "+queue+" drained", func() bool {
		v, f, err := tr.Depth(queue)
		return err == nil && v == 0 && f == 0
	})
}

// calls records handler calls.
type calls struct {
	mu   sync.Mutex
	list []call
	ch   chan call
}

type call struct {
	ReceiveCount string
	At           time.Time
	Err          error
}

func newCalls() *calls { return &calls{ch: make(chan call, 1000)} }

func (c *calls) add(ctx context.Context, err error) error {
	msg, _ := eda.MessageFromContext(ctx)
	cl := call{At: time.Now(), Err: err}
	if msg != nil {
		cl.ReceiveCount = msg.Metadata.Get(transport.MetadataReceiveCount)
	}
	c.mu.Lock()
	c.list = append(c.list, cl)
	c.mu.Unlock()
	c.ch <- cl
	return err
}

func (c *calls) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.list)
}

func (c *calls) all() []call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]call(nil), c.list...)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustMW(t testing.TB) func(message.HandlerMiddleware, error) message.HandlerMiddleware {
	return func(m message.HandlerMiddleware, err error) message.HandlerMiddleware {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
}

// strlog is a list of strings safe for concurrent use.
type strlog struct {
	mu   sync.Mutex
	list []string
}

func (l *strlog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, s)
}

func (l *strlog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.list...)
}

func (l *strlog) count(s string) int {
	n := 0
	for _, x := range l.all() {
		if x == s {
			n++
		}
	}
	return n
}
