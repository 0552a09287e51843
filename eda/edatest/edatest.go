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
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

// TB is the part of testing.TB a harness uses; *testing.T and *testing.B
// are TBs, and so is the T that Standalone passes (for Examples and
// programs).
type TB interface {
	Helper()
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

var _ TB = testing.TB(nil)

// Config configures a Harness. The zero value is ready to use: the memory
// transport, or the one EnvTransport names.
type Config struct {
	// Transport the app runs on. Default: EnvTransport, else Memory.
	Transport Kind
	// Source is the CloudEvents source of published events. Default "edatest".
	Source string
	// Middleware wraps every handler, as eda.Config.Middleware. For
	// middleware that needs the harness's transport (a poison queue
	// publisher), use Harness.Use.
	Middleware []message.HandlerMiddleware
	// Memory configures the memory transport.
	Memory memory.Config
	// Postgres configures the Postgres transport and the server it uses.
	Postgres PostgresConfig
	// AWS configures the SNS/SQS transport and the endpoint it uses.
	AWS AWSConfig
	// Timeout bounds every Wait. Default DefaultTimeout of the transport.
	Timeout time.Duration
}

// DefaultTimeout returns how long a Wait waits by default on kind: longer on
// a server than in memory (SQS long polling, Postgres polling fallback).
func DefaultTimeout(kind Kind) time.Duration {
	switch kind {
	case Postgres:
		return 15 * time.Second
	case AWS:
		return 45 * time.Second
	}
	return 5 * time.Second
}

// Record is one message the harness saw.
type Record struct {
	Topic    string // for published messages
	Queue    string // for handled and dead-lettered messages
	Envelope eda.Envelope
	Message  *message.Message
	Err      error // the handler's error, for failed handling
}

// Harness runs an eda.App on a transport (memory, Postgres or SNS/SQS) and
// records what is published, handled, failed and dead-lettered, through a
// publisher decorator, a handler middleware and the dead-letter queues, so
// the same assertions hold on every transport.
type Harness struct {
	// App is the app under test: register events and handlers on it, then
	// call Start.
	App *eda.App
	// Kind is the transport the app runs on.
	Kind Kind
	// Env is the test's isolated place on the transport's server.
	Env Env
	// Transport is the transport the app runs on, isolated for this test
	// (on SNS/SQS, names get Env.Prefix on the broker). Publish on it to
	// send raw messages; they are not recorded.
	Transport transport.Transport
	// Publisher publishes on Transport and records what it publishes as
	// Published; the app publishes through it. Give it to middleware that
	// publishes (a poison queue) so its messages are recorded, and those
	// carrying a poison reason count as dead-lettered.
	Publisher message.Publisher

	t       TB
	timeout time.Duration

	mu        sync.Mutex
	published []Record
	handled   []Record
	failed    []Record
	dead      []Record
	extra     []message.HandlerMiddleware
	started   bool
	changed   chan struct{}
}

// New returns a harness whose App runs on a fresh, isolated transport of
// cfg.Transport's kind (a Postgres schema, an SNS/SQS name prefix), removed
// when the test ends. When the server is absent the test fails with the
// command that starts it.
func New(t TB, cfg Config) *Harness {
	t.Helper()
	if cfg.Transport == "" {
		k, err := KindFromEnv()
		if err != nil {
			t.Fatalf("edatest: %s: %v", EnvTransport, err)
		}
		cfg.Transport = k
	}
	if _, err := ParseKind(string(cfg.Transport)); err != nil {
		t.Fatalf("edatest: Config.Transport: %v", err)
	}
	if cfg.Source == "" {
		cfg.Source = "edatest"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout(cfg.Transport)
	}
	env := NewEnv(t, cfg.Transport, cfg)
	tr := env.newTransport(t, cfg)
	h := &Harness{Kind: cfg.Transport, Env: env, Transport: tr, t: t, timeout: cfg.Timeout, changed: make(chan struct{})}
	h.Publisher = recordingPublisher{h: h, next: tr}
	app, err := eda.New(eda.Config{
		Transport:  tr,
		Publisher:  h.Publisher,
		Source:     cfg.Source,
		Middleware: append(append([]message.HandlerMiddleware{h.recordHandled}, cfg.Middleware...), h.useExtra),
	})
	if err != nil {
		t.Fatalf("edatest: %v", err)
	}
	h.App = app
	return h
}

// Use adds handler middleware after Config.Middleware, for middleware built
// from the harness (a poison queue publishing on h.Publisher). Call it
// before Start.
func (h *Harness) Use(mw ...message.HandlerMiddleware) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started {
		h.t.Fatalf("edatest: Use after Start")
	}
	h.extra = append(h.extra, mw...)
}

// useExtra applies the middleware given to Use; the router calls it when it
// builds each handler, at Start.
func (h *Harness) useExtra(next message.HandlerFunc) message.HandlerFunc {
	h.mu.Lock()
	extra := slices.Clone(h.extra)
	h.mu.Unlock()
	for i := len(extra) - 1; i >= 0; i-- {
		next = extra[i](next)
	}
	return next
}

// Start runs the app until the test ends and returns once every handler is
// subscribed. Dead-letter queues of declared queues are watched: the
// harness receives what they hold into DeadLettered and acknowledges it.
// They are the test's own queues, removed when it ends; outside a test,
// nothing in eda consumes a dead-letter queue (the operator does, with
// edactl).
func (h *Harness) Start() {
	h.t.Helper()
	h.mu.Lock()
	h.started = true
	h.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel) // registered first, so it runs after the app stopped: ends the DLQ watchers
	if p, ok := h.Transport.(*prefixedTransport); ok {
		consumed := map[string]bool{}
		for _, q := range h.App.Queues() {
			for _, t := range q.Topics {
				consumed[t] = true
			}
		}
		var bare []string
		for _, t := range h.App.Topics() {
			if !consumed[t] {
				bare = append(bare, t)
			}
		}
		if err := p.declareTopics(ctx, bare); err != nil {
			h.t.Fatalf("edatest: declare the topics no queue subscribes to: %v", err)
		}
	}
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
				h.add(&h.dead, Record{Queue: queue, Envelope: eda.EnvelopeOf(msg), Message: msg.Copy()})
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
// dead-letter queue by the transport, and those published on h.Publisher
// with a poison reason (middleware.Poison), whose Queue is the queue they
// failed on.
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
func PublishedEvents[E eda.Event](t TB, h *Harness) []E {
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
func RequirePublished[E eda.Event](t TB, h *Harness, n int) []E {
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
		rec := Record{Topic: topic, Envelope: eda.EnvelopeOf(m), Message: m.Copy()}
		p.h.add(&p.h.published, rec)
		if m.Metadata.Get(middleware.MetadataPoisonReason) != "" {
			rec.Queue = m.Metadata.Get(middleware.MetadataPoisonQueue)
			p.h.add(&p.h.dead, rec)
		}
	}
	return nil
}

func (p recordingPublisher) Close() error { return nil }
