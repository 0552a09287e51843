package edatest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport/memory"
)

// Config configures a Harness. The zero value is ready to use.
type Config struct {
	// Source is the CloudEvents source of published events. Default "edatest".
	Source string
	// Middleware wraps every handler, as eda.Config.Middleware.
	Middleware []message.HandlerMiddleware
	// Memory configures the memory transport.
	Memory memory.Config
	// Timeout bounds every Wait. Default 5s.
	Timeout time.Duration
}

// Record is one message the harness saw.
type Record struct {
	Topic    string // for published messages
	Queue    string // for handled and dead-lettered messages
	Envelope eda.Envelope
	Message  *message.Message
	Err      error // the handler's error, for failed handling
}

// Harness runs an eda.App on the memory transport and records traffic.
type Harness struct {
	// App is the app under test: register events and handlers on it, then
	// call Start.
	App *eda.App
	// Transport is the memory transport the app runs on.
	Transport *memory.Transport

	t       testing.TB
	timeout time.Duration

	mu        sync.Mutex
	published []Record
	handled   []Record
	failed    []Record
	dead      []Record
	changed   chan struct{}
}

// New returns a harness whose App runs on a fresh memory transport. The
// transport is closed when the test ends.
func New(t testing.TB, cfg Config) *Harness {
	t.Helper()
	if cfg.Source == "" {
		cfg.Source = "edatest"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	tr, err := memory.New(cfg.Memory)
	if err != nil {
		t.Fatalf("edatest: memory transport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	h := &Harness{Transport: tr, t: t, timeout: cfg.Timeout, changed: make(chan struct{})}
	app, err := eda.New(eda.Config{
		Transport:  tr,
		Publisher:  recordingPublisher{h: h, next: tr},
		Source:     cfg.Source,
		Middleware: append([]message.HandlerMiddleware{h.recordHandled}, cfg.Middleware...),
	})
	if err != nil {
		t.Fatalf("edatest: %v", err)
	}
	h.App = app
	return h
}

// Start runs the app until the test ends and returns once every handler is
// subscribed. Dead-letter queues of declared queues are watched.
func (h *Harness) Start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel) // registered first, so it runs after the app stopped: ends the DLQ watchers
	Run(h.t, h.App)
	for _, q := range h.App.Queues() {
		if q.DeadLetterQueue == "" {
			continue
		}
		ch, err := h.Transport.Subscribe(ctx, q.DeadLetterQueue)
		if err != nil {
			h.t.Fatalf("edatest: watch DLQ %q: %v", q.DeadLetterQueue, err)
		}
		go func(queue string) {
			for msg := range ch {
				h.add(&h.dead, Record{Queue: queue, Envelope: eda.EnvelopeOf(msg), Message: msg})
				msg.Ack()
			}
		}(q.Name)
	}
}

// Publish publishes events through the app, failing the test on error.
func (h *Harness) Publish(events ...eda.Event) {
	h.t.Helper()
	if err := h.App.Publish(context.Background(), events...); err != nil {
		h.t.Fatalf("edatest: publish: %v", err)
	}
}

// Published returns every message published through the app so far.
func (h *Harness) Published() []Record { return h.snapshot(&h.published) }

// Handled returns the messages handlers returned nil for, on queue ("" for all).
func (h *Harness) Handled(queue string) []Record { return filter(h.snapshot(&h.handled), queue) }

// Failed returns every failed handling attempt on queue ("" for all).
func (h *Harness) Failed(queue string) []Record { return filter(h.snapshot(&h.failed), queue) }

// DeadLettered returns the messages moved from queue ("" for all) to its
// dead-letter queue.
func (h *Harness) DeadLettered(queue string) []Record { return filter(h.snapshot(&h.dead), queue) }

// WaitHandled waits until queue ("" for all) has handled at least n messages.
func (h *Harness) WaitHandled(queue string, n int) []Record {
	h.t.Helper()
	return h.wait(fmt.Sprintf("%d handled on %q", n, queue), func() []Record { return h.Handled(queue) }, n)
}

// WaitFailed waits until queue has at least n failed attempts.
func (h *Harness) WaitFailed(queue string, n int) []Record {
	h.t.Helper()
	return h.wait(fmt.Sprintf("%d failed on %q", n, queue), func() []Record { return h.Failed(queue) }, n)
}

// WaitDeadLettered waits until queue has dead-lettered at least n messages.
func (h *Harness) WaitDeadLettered(queue string, n int) []Record {
	h.t.Helper()
	return h.wait(fmt.Sprintf("%d dead-lettered from %q", n, queue), func() []Record { return h.DeadLettered(queue) }, n)
}

// WaitPublished waits until at least n messages were published.
func (h *Harness) WaitPublished(n int) []Record {
	h.t.Helper()
	return h.wait(fmt.Sprintf("%d published", n), h.Published, n)
}

// Eventually waits until cond holds, re-checking after every recorded
// message, and fails the test after the timeout.
func (h *Harness) Eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.After(h.timeout)
	for {
		h.mu.Lock()
		changed := h.changed
		h.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-time.After(10 * time.Millisecond): // cond may depend on state the harness does not see
		case <-deadline:
			h.t.Fatalf("edatest: timed out after %s waiting for %s", h.timeout, what)
		}
	}
}

func (h *Harness) wait(what string, get func() []Record, n int) []Record {
	h.t.Helper()
	var recs []Record
	h.Eventually(what, func() bool { recs = get(); return len(recs) >= n })
	return recs
}

// PublishedEvents decodes the published events of type E.
func PublishedEvents[E eda.Event](t testing.TB, h *Harness) []E {
	t.Helper()
	var zero E
	var out []E
	for _, r := range h.Published() {
		if r.Envelope.Type != zero.EventName() {
			continue
		}
		var e E
		if err := (eda.JSON{}).Unmarshal(r.Message.Payload, &e); err != nil {
			t.Fatalf("edatest: decode published %s: %v", r.Envelope.Type, err)
		}
		out = append(out, e)
	}
	return out
}

// RequirePublished waits until n events of type E were published and
// returns them.
func RequirePublished[E eda.Event](t testing.TB, h *Harness, n int) []E {
	t.Helper()
	var out []E
	var zero E
	h.Eventually(fmt.Sprintf("%d %s published", n, zero.EventName()), func() bool {
		out = PublishedEvents[E](t, h)
		return len(out) >= n
	})
	return out
}

func (h *Harness) recordHandled(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := next(msg)
		rec := Record{Queue: message.SubscribeTopicFromCtx(msg.Context()), Envelope: eda.EnvelopeOf(msg), Message: msg.Copy(), Err: err}
		if err != nil {
			h.add(&h.failed, rec)
		} else {
			h.add(&h.handled, rec)
		}
		return out, err
	}
}

func (h *Harness) add(list *[]Record, r Record) {
	h.mu.Lock()
	defer h.mu.Unlock()
	*list = append(*list, r)
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *Harness) snapshot(list *[]Record) []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(*list)
}

func filter(recs []Record, queue string) []Record {
	if queue == "" {
		return recs
	}
	return slices.DeleteFunc(recs, func(r Record) bool { return r.Queue != queue })
}

type recordingPublisher struct {
	h    *Harness
	next message.Publisher
}

func (p recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.next.Publish(topic, msgs...); err != nil {
		return err
	}
	for _, m := range msgs {
		p.h.add(&p.h.published, Record{Topic: topic, Envelope: eda.EnvelopeOf(m), Message: m.Copy()})
	}
	return nil
}

func (p recordingPublisher) Close() error { return nil }
