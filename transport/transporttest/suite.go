package transporttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/edaproject/eda/transport"
)

// Harness tells the suite how to reach the transport under test.
type Harness struct {
	// New returns a fresh transport on the broker under test. The suite
	// closes it. Required.
	New func(t *testing.T) transport.Transport
	// Timeout bounds every wait for a delivery. Default 10s.
	Timeout time.Duration
}

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("transporttest: Harness.New is nil")
	}
	if h.Timeout == 0 {
		h.Timeout = 10 * time.Second
	}
	probe := h.New(t)
	f := probe.Features()
	if err := probe.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s := &suite{h: h, f: f}
	tests := []struct {
		name string
		run  func(*testing.T)
		on   bool
	}{
		{"RoundTrip", s.roundTrip, true},
		{"MetadataRoundTrip", s.metadataRoundTrip, true},
		{"FanOut", s.fanOut, true},
		{"CompetingConsumers", s.competingConsumers, true},
		{"RedeliveryAfterNack", s.redeliveryAfterNack, true},
		{"ConcurrentPublishers", s.concurrentPublishers, true},
		{"ShutdownWithoutLoss", s.shutdownWithoutLoss, true},
		{"CloseEndsSubscriptions", s.closeEndsSubscriptions, true},
		{"BadInput", s.badInput, true},
		{"RedeliveryAfterCrash", s.redeliveryAfterCrash, f.VisibilityTimeout},
		{"DeadLetterAfterMaxReceiveCount", s.deadLetter, f.DeadLetter},
		{"FIFOGroupOrder", s.fifoOrder, f.FIFO},
		{"FIFODeduplication", s.fifoDedup, f.FIFO && f.Deduplication},
		{"MaxMessageSize", s.maxMessageSize, f.MaxMessageSize > 0},
		{"DelayedRedelivery", s.delayedRedelivery, f.DelayedRedelivery},
		{"DelayedDelivery", s.delayedDelivery, f.DelayedDelivery},
		{"Heartbeat", s.heartbeat, f.Heartbeat && f.VisibilityTimeout},
		{"Inspect", s.inspect, inspects(probe)},
	}
	for _, tc := range tests {
		if !tc.on {
			t.Logf("transporttest: %s not run: the transport does not declare that feature (%+v)", tc.name, f)
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t)
		})
	}
}

type suite struct {
	h Harness
	f transport.Features
}

// env is one test's transport, names and context.
type env struct {
	t   *testing.T
	s   *suite
	tr  transport.Transport
	ctx context.Context
	id  string
}

func (s *suite) env(t *testing.T) *env {
	t.Helper()
	tr := s.h.New(t)
	t.Cleanup(func() { _ = tr.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &env{t: t, s: s, tr: tr, ctx: ctx, id: hex.EncodeToString(b)}
}

// name returns a unique, broker-safe name.
func (e *env) name(kind string) string { return "tt-" + kind + "-" + e.id }

func (e *env) declare(q transport.Queue) transport.Queue {
	e.t.Helper()
	if err := e.tr.Declare(e.ctx, q); err != nil {
		e.t.Fatalf("Declare %q: %v", q.Name, err)
	}
	return q.WithDefaults()
}

func (e *env) subscribe(ctx context.Context, queue string) <-chan *message.Message {
	e.t.Helper()
	ch, err := e.tr.Subscribe(ctx, queue)
	if err != nil {
		e.t.Fatalf("Subscribe %q: %v", queue, err)
	}
	return ch
}

func (e *env) publish(topic string, msgs ...*message.Message) {
	e.t.Helper()
	if err := e.tr.Publish(topic, msgs...); err != nil {
		e.t.Fatalf("Publish to %q: %v", topic, err)
	}
}

// receive waits for the next message on ch.
func (e *env) receive(ch <-chan *message.Message, what string) *message.Message {
	e.t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			e.t.Fatalf("%s: subscription channel closed", what)
		}
		return m
	case <-time.After(e.s.h.Timeout):
		e.t.Fatalf("%s: nothing received within %s", what, e.s.h.Timeout)
	}
	return nil
}

// drain acks messages from ch until want ids are all seen; it returns how
// many times each id was delivered.
func (e *env) drain(ch <-chan *message.Message, want []string) map[string]int {
	e.t.Helper()
	got := map[string]int{}
	missing := map[string]bool{}
	for _, id := range want {
		missing[id] = true
	}
	for len(missing) > 0 {
		m := e.receive(ch, fmt.Sprintf("drain (%d of %d missing)", len(missing), len(want)))
		id := idOf(m)
		got[id]++
		delete(missing, id)
		m.Ack()
	}
	return got
}

func newMessage(payload string, md map[string]string) *message.Message {
	id := uuid.Must(uuid.NewV7()).String()
	m := message.NewMessage(id, []byte(payload))
	m.Metadata.Set(transport.MetadataEventID, id)
	m.Metadata.Set("ce_type", "transporttest.Message")
	for k, v := range md {
		m.Metadata.Set(k, v)
	}
	return m
}

func newMessages(n int, prefix string) ([]*message.Message, []string) {
	msgs := make([]*message.Message, n)
	ids := make([]string, n)
	for i := range n {
		msgs[i] = newMessage(fmt.Sprintf("%s-%d", prefix, i), nil)
		ids[i] = idOf(msgs[i])
	}
	return msgs, ids
}

func idOf(m *message.Message) string { return m.Metadata.Get(transport.MetadataEventID) }

func (s *suite) visibility() time.Duration {
	return max(s.f.MinVisibilityTimeout, 300*time.Millisecond)
}

func (s *suite) roundTrip(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}})
	ch := e.subscribe(e.ctx, q.Name)
	sent := newMessage(`{"hello":"world"}`, nil)
	e.publish(topic, sent)
	got := e.receive(ch, "round trip")
	if string(got.Payload) != string(sent.Payload) || idOf(got) != idOf(sent) {
		t.Fatalf("received %q (id %s), sent %q (id %s)", got.Payload, idOf(got), sent.Payload, idOf(sent))
	}
	if s.f.ReceiveCount && got.Metadata.Get(transport.MetadataReceiveCount) != "1" {
		t.Errorf("first delivery has %s=%q, want 1", transport.MetadataReceiveCount, got.Metadata.Get(transport.MetadataReceiveCount))
	}
	got.Ack()
}

func (s *suite) metadataRoundTrip(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}})
	ch := e.subscribe(e.ctx, q.Name)
	md := map[string]string{
		"ce_specversion":   "1.0",
		"ce_source":        "transporttest",
		"ce_time":          "2026-11-25T12:00:00.123456789Z",
		"ce_correlationid": uuid.NewString(),
		"ce_causationid":   uuid.NewString(),
		"ce_schemaversion": "3",
		"traceparent":      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"x-unicode":        "zürich – 東京 ✓",
		"x-spaces":         "  a value with spaces  ",
	}
	sent := newMessage("payload", md)
	e.publish(topic, sent)
	got := e.receive(ch, "metadata round trip")
	defer got.Ack()
	for k, v := range sent.Metadata {
		if got.Metadata.Get(k) != v {
			t.Errorf("metadata %q: got %q, want %q", k, got.Metadata.Get(k), v)
		}
	}
}

func (s *suite) fanOut(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	const queues, n = 3, 5
	chans := make([]<-chan *message.Message, queues)
	for i := range queues {
		q := e.declare(transport.Queue{Name: e.name("queue" + strconv.Itoa(i)), Topics: []string{topic}})
		chans[i] = e.subscribe(e.ctx, q.Name)
	}
	// A queue not subscribed to the topic must receive nothing from it.
	other := e.declare(transport.Queue{Name: e.name("other"), Topics: []string{e.name("othertopic")}})
	otherCh := e.subscribe(e.ctx, other.Name)

	msgs, ids := newMessages(n, "fanout")
	e.publish(topic, msgs...)
	for i, ch := range chans {
		got := e.drain(ch, ids)
		if len(got) != n {
			t.Errorf("queue %d received %d distinct messages, want %d", i, len(got), n)
		}
	}
	marker := newMessage("marker", nil)
	e.publish(e.name("othertopic"), marker)
	if got := e.receive(otherCh, "unrelated queue"); idOf(got) != idOf(marker) {
		t.Errorf("queue subscribed to another topic received %s (%q), want only the marker", idOf(got), got.Payload)
	}
}

func (s *suite) competingConsumers(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}})
	const n = 50
	msgs, ids := newMessages(n, "compete")
	e.publish(topic, msgs...)

	a := e.subscribe(e.ctx, q.Name)
	first := e.receive(a, "consumer A")
	// While A holds its message, B must get others: the queue is shared.
	b := e.subscribe(e.ctx, q.Name)
	fromB := e.receive(b, "consumer B while A holds a message")
	if idOf(fromB) == idOf(first) {
		t.Fatalf("consumer B received %s, the message consumer A holds", idOf(first))
	}
	first.Ack()
	fromB.Ack()

	var mu sync.Mutex
	seen := map[string]int{idOf(first): 1}
	seen[idOf(fromB)]++
	done := make(chan struct{})
	consume := func(ch <-chan *message.Message) {
		for {
			select {
			case m, ok := <-ch:
				if !ok {
					return
				}
				mu.Lock()
				seen[idOf(m)]++
				complete := len(seen) == n
				mu.Unlock()
				m.Ack()
				if complete {
					select {
					case <-done:
					default:
						close(done)
					}
				}
			case <-done:
				return
			}
		}
	}
	go consume(a)
	go consume(b)
	select {
	case <-done:
	case <-time.After(s.h.Timeout):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("competing consumers received %d of %d messages", len(seen), n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if seen[id] == 0 {
			t.Errorf("message %s never delivered", id)
		}
	}
}

func (s *suite) redeliveryAfterNack(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}})
	ch := e.subscribe(e.ctx, q.Name)
	sent := newMessage("nack me", nil)
	e.publish(topic, sent)
	for attempt := 1; attempt <= 3; attempt++ {
		got := e.receive(ch, fmt.Sprintf("delivery %d", attempt))
		if idOf(got) != idOf(sent) || string(got.Payload) != "nack me" {
			t.Fatalf("delivery %d: got %s %q", attempt, idOf(got), got.Payload)
		}
		if s.f.ReceiveCount {
			if rc := got.Metadata.Get(transport.MetadataReceiveCount); rc != strconv.Itoa(attempt) {
				t.Errorf("delivery %d: receive count %q", attempt, rc)
			}
		}
		if attempt < 3 {
			got.Nack()
		} else {
			got.Ack()
		}
	}
}

func (s *suite) redeliveryAfterCrash(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}, VisibilityTimeout: s.visibility()})
	crashCtx, crash := context.WithCancel(e.ctx)
	ch := e.subscribe(crashCtx, q.Name)
	sent := newMessage("crash", nil)
	e.publish(topic, sent)
	got := e.receive(ch, "first delivery")
	if idOf(got) != idOf(sent) {
		t.Fatalf("got %s, want %s", idOf(got), idOf(sent))
	}
	crash() // the consumer dies mid-handler: neither ack nor nack
	again := e.receive(e.subscribe(e.ctx, q.Name), "redelivery after crash")
	if idOf(again) != idOf(sent) {
		t.Fatalf("redelivered %s, want %s", idOf(again), idOf(sent))
	}
	if s.f.ReceiveCount && again.Metadata.Get(transport.MetadataReceiveCount) != "2" {
		t.Errorf("receive count after crash %q, want 2", again.Metadata.Get(transport.MetadataReceiveCount))
	}
	again.Ack()
}

func (s *suite) deadLetter(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}, MaxReceiveCount: 2, VisibilityTimeout: s.visibility()})
	ch := e.subscribe(e.ctx, q.Name)
	dlq := e.subscribe(e.ctx, q.DeadLetterQueue)
	poison, ok := newMessage("poison", nil), newMessage("fine", nil)
	e.publish(topic, poison)
	for i := 1; i <= 2; i++ {
		got := e.receive(ch, fmt.Sprintf("poison delivery %d", i))
		if idOf(got) != idOf(poison) {
			t.Fatalf("delivery %d: got %s, want the poison message", i, idOf(got))
		}
		got.Nack()
	}
	dead := e.receive(dlq, "dead-letter queue")
	if idOf(dead) != idOf(poison) || string(dead.Payload) != "poison" {
		t.Fatalf("DLQ received %s %q, want the poison message", idOf(dead), dead.Payload)
	}
	dead.Ack()
	// The source queue still works and no longer has the poison message.
	e.publish(topic, ok)
	got := e.receive(ch, "message after dead-lettering")
	if idOf(got) != idOf(ok) {
		t.Errorf("after dead-lettering, queue delivered %s (%q), want the next message", idOf(got), got.Payload)
	}
	got.Ack()
}

func (s *suite) fifoOrder(t *testing.T) {
	e := s.env(t)
	topic := e.name("fifotopic")
	q := e.declare(transport.Queue{Name: e.name("fifoqueue"), Topics: []string{topic}, FIFO: true, VisibilityTimeout: 30 * time.Second})
	// A group longer than a receive batch (SQS: 10): a transport that hands
	// out the rest of a group to a second consumer breaks order.
	const groups, perGroup = 2, 25
	var msgs []*message.Message
	// Each group's messages are published back to back: two consumers
	// taking the next two messages would break the group's order.
	for g := range groups {
		for i := range perGroup {
			msgs = append(msgs, newMessage(fmt.Sprintf("g%d-%d", g, i), map[string]string{
				transport.MetadataGroupID: fmt.Sprintf("group-%d", g),
				"seq":                     strconv.Itoa(i),
			}))
		}
	}
	// Publish in small batches: per-group order must survive batching.
	for i := 0; i < len(msgs); i += 5 {
		e.publish(topic, msgs[i:min(i+5, len(msgs))]...)
	}

	var mu sync.Mutex
	next := map[string]int{}
	inFlight := map[string]bool{}
	total := 0
	var errs []string
	done := make(chan struct{})
	consume := func(ch <-chan *message.Message) {
		for {
			select {
			case m, ok := <-ch:
				if !ok {
					return
				}
				g := m.Metadata.Get(transport.MetadataGroupID)
				seq, _ := strconv.Atoi(m.Metadata.Get("seq"))
				mu.Lock()
				if inFlight[g] {
					errs = append(errs, fmt.Sprintf("%s: two messages in flight at once", g))
				}
				inFlight[g] = true
				if seq != next[g] {
					errs = append(errs, fmt.Sprintf("%s: got seq %d, want %d", g, seq, next[g]))
				}
				next[g] = seq + 1
				mu.Unlock()
				time.Sleep(time.Millisecond) // hold the message: a second in-flight message of the group would show
				mu.Lock()
				inFlight[g] = false
				total++
				complete := total == groups*perGroup
				mu.Unlock()
				m.Ack()
				if complete {
					close(done)
				}
			case <-done:
				return
			}
		}
	}
	go consume(e.subscribe(e.ctx, q.Name))
	go consume(e.subscribe(e.ctx, q.Name))
	select {
	case <-done:
	case <-time.After(s.h.Timeout):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("FIFO: %d of %d messages received; errors: %v", total, groups*perGroup, errs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("FIFO order violated:\n%s", strings.Join(errs, "\n"))
	}
}

func (s *suite) fifoDedup(t *testing.T) {
	e := s.env(t)
	topic := e.name("fifotopic")
	q := e.declare(transport.Queue{Name: e.name("fifoqueue"), Topics: []string{topic}, FIFO: true})
	ch := e.subscribe(e.ctx, q.Name)
	group := map[string]string{transport.MetadataGroupID: "g"}
	first := newMessage("first", group)
	first.Metadata.Set(transport.MetadataDedupID, "dedup-"+e.id)
	dup := newMessage("duplicate", group)
	dup.Metadata.Set(transport.MetadataDedupID, "dedup-"+e.id)
	second := newMessage("second", group)
	sameID := newMessage("same event id", group)
	sameID.Metadata.Set(transport.MetadataEventID, idOf(second)) // no dedup id: the event id is the key
	last := newMessage("last", group)
	for _, m := range []*message.Message{first, dup, second, sameID, last} {
		e.publish(topic, m)
	}
	// One group is delivered in order: a duplicate would arrive between
	// the messages it duplicates and the last one.
	for _, want := range []string{"first", "second", "last"} {
		got := e.receive(ch, want)
		if string(got.Payload) != want {
			t.Fatalf("got %q, want %q (duplicates must be dropped)", got.Payload, want)
		}
		got.Ack()
	}
}

func (s *suite) maxMessageSize(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}})
	ch := e.subscribe(e.ctx, q.Name)
	atLimit := newMessage("", nil)
	atLimit.Payload = []byte(strings.Repeat("x", s.f.MaxMessageSize-transport.MessageSize(atLimit)))
	if size := transport.MessageSize(atLimit); size != s.f.MaxMessageSize {
		t.Fatalf("test message is %d bytes, want %d", size, s.f.MaxMessageSize)
	}
	over := newMessage("", nil)
	over.Payload = []byte(strings.Repeat("y", s.f.MaxMessageSize-transport.MessageSize(over)+1))
	err := e.tr.Publish(topic, over)
	if !errors.Is(err, transport.ErrMessageTooLarge) {
		t.Fatalf("publishing %d bytes (limit %d): got %v, want ErrMessageTooLarge", transport.MessageSize(over), s.f.MaxMessageSize, err)
	}
	e.publish(topic, atLimit)
	got := e.receive(ch, "message at the size limit")
	if idOf(got) != idOf(atLimit) || len(got.Payload) != len(atLimit.Payload) {
		t.Fatalf("got %s with %d bytes, want %s with %d", idOf(got), len(got.Payload), idOf(atLimit), len(atLimit.Payload))
	}
	got.Ack()
}

func (s *suite) concurrentPublishers(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}})
	ch := e.subscribe(e.ctx, q.Name)
	const publishers, each = 4, 25
	var all []string
	var wg sync.WaitGroup
	errc := make(chan error, publishers*each)
	for p := range publishers {
		msgs, ids := newMessages(each, "pub"+strconv.Itoa(p))
		all = append(all, ids...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, m := range msgs {
				if err := e.tr.Publish(topic, m); err != nil {
					errc <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("concurrent Publish: %v", err)
	}
	got := e.drain(ch, all)
	if len(got) != publishers*each {
		t.Fatalf("received %d distinct messages, want %d", len(got), publishers*each)
	}
}

// shutdownWithoutLoss stops a consumer while it holds a message (its handler
// sees the context cancelled and nacks, as the router does), then checks a
// new consumer gets every message not acked before.
func (s *suite) shutdownWithoutLoss(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}, VisibilityTimeout: s.visibility()})
	const n = 20
	msgs, ids := newMessages(n, "shutdown")
	e.publish(topic, msgs...)

	ctx1, stop := context.WithCancel(e.ctx)
	ch1 := e.subscribe(ctx1, q.Name)
	acked := map[string]bool{}
	for range 5 {
		m := e.receive(ch1, "before shutdown")
		acked[idOf(m)] = true
		m.Ack()
	}
	inHand := e.receive(ch1, "held at shutdown")
	stop()
	<-inHand.Context().Done() // the handler learns of the shutdown
	inHand.Nack()
	for m := range ch1 { // the subscription closes; what it still hands out goes back
		m.Nack()
	}
	var rest []string
	for _, id := range ids {
		if !acked[id] {
			rest = append(rest, id)
		}
	}
	got := e.drain(e.subscribe(e.ctx, q.Name), rest)
	for id := range got {
		if acked[id] {
			t.Errorf("message %s was acked before shutdown and delivered again", id)
		}
	}
}

func (s *suite) closeEndsSubscriptions(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}})
	ch := e.subscribe(e.ctx, q.Name)
	if err := e.tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	timeout := time.After(s.h.Timeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("subscription channel still open %s after Close", s.h.Timeout)
		}
	}
}

func (s *suite) badInput(t *testing.T) {
	e := s.env(t)
	if err := e.tr.Declare(e.ctx, transport.Queue{Name: ""}); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Errorf("Declare with an empty name: got %v, want ErrInvalidConfig", err)
	}
	if err := e.tr.Declare(e.ctx, transport.Queue{Name: e.name("q"), MaxReceiveCount: -1}); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Errorf("Declare with MaxReceiveCount -1: got %v, want ErrInvalidConfig", err)
	}
	if _, err := e.tr.Subscribe(e.ctx, e.name("undeclared")); !errors.Is(err, transport.ErrUnknownQueue) {
		t.Errorf("Subscribe to an undeclared queue: got %v, want ErrUnknownQueue", err)
	}
}

// delay is the delay the delay cases ask for: twice the visibility timeout
// they declare, so that a transport that lets the visibility timeout run out
// instead of honouring the delay fails too.
func (s *suite) delay() time.Duration { return 2 * s.visibility() }

// quiet fails if ch delivers anything within d.
func (e *env) quiet(ch <-chan *message.Message, d time.Duration, what string) {
	e.t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			e.t.Fatalf("%s: received %s (%q, receive count %s)", what, idOf(m), m.Payload, m.Metadata.Get(transport.MetadataReceiveCount))
		}
	case <-time.After(d):
	}
}

// delayedRedelivery nacks a message with a redelivery delay: it must not
// come back before the delay and must after it, with its receive count
// grown and without the delay request.
func (s *suite) delayedRedelivery(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}, VisibilityTimeout: s.visibility()})
	ch := e.subscribe(e.ctx, q.Name)
	sent := newMessage("later", nil)
	e.publish(topic, sent)
	got := e.receive(ch, "first delivery")
	if idOf(got) != idOf(sent) {
		t.Fatalf("got %s, want %s", idOf(got), idOf(sent))
	}
	d := s.delay()
	if s.f.MaxRedeliveryDelay > 0 {
		d = min(d, s.f.MaxRedeliveryDelay)
	}
	transport.SetRedeliveryDelay(got, d)
	nackedAt := time.Now()
	got.Nack()
	again := e.receive(ch, "redelivery after the delay")
	waited := time.Since(nackedAt)
	if idOf(again) != idOf(sent) {
		t.Fatalf("redelivered %s, want %s", idOf(again), idOf(sent))
	}
	if waited < d {
		t.Errorf("redelivered %s after the nack, before the redelivery delay %s", waited, d)
	}
	if s.f.ReceiveCount && again.Metadata.Get(transport.MetadataReceiveCount) != "2" {
		t.Errorf("receive count after delayed redelivery %q, want 2", again.Metadata.Get(transport.MetadataReceiveCount))
	}
	if v, ok := again.Metadata[transport.MetadataRedeliveryDelay]; ok {
		t.Errorf("redelivered message still carries %s=%q", transport.MetadataRedeliveryDelay, v)
	}
	again.Ack()
}

// delayedDelivery publishes messages with MetadataDeliverAt: in the future
// (delivered no earlier), in the past (delivered at once), over
// MaxDeliveryDelay (refused with ErrDelayUnsupported, the whole call) and
// malformed (refused with ErrInvalidConfig).
func (s *suite) delayedDelivery(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}, VisibilityTimeout: s.visibility()})
	ch := e.subscribe(e.ctx, q.Name)

	// Refused calls first: whatever they sent would arrive before the marker.
	if s.f.MaxDeliveryDelay > 0 {
		fine, tooLate := newMessage("fine", nil), newMessage("too late", nil)
		transport.SetDeliverAt(tooLate, time.Now().Add(s.f.MaxDeliveryDelay+time.Minute))
		err := e.tr.Publish(topic, fine, tooLate)
		if !errors.Is(err, transport.ErrDelayUnsupported) {
			t.Errorf("publishing with a delay over MaxDeliveryDelay %s: got %v, want ErrDelayUnsupported", s.f.MaxDeliveryDelay, err)
		}
	}
	bad := newMessage("bad deliver-at", nil)
	bad.Metadata.Set(transport.MetadataDeliverAt, "tomorrow")
	if err := e.tr.Publish(topic, newMessage("fine too", nil), bad); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Errorf("publishing with %s=%q: got %v, want ErrInvalidConfig", transport.MetadataDeliverAt, "tomorrow", err)
	}
	marker := newMessage("marker", nil)
	e.publish(topic, marker)
	if got := e.receive(ch, "marker after refused publishes"); idOf(got) != idOf(marker) {
		t.Fatalf("received %q before the marker: a refused Publish sent it", got.Payload)
	} else {
		got.Ack()
	}

	// One call with a delayed message and one due already.
	d := s.delay()
	if s.f.MaxDeliveryDelay > 0 {
		d = min(d, s.f.MaxDeliveryDelay)
	}
	delayed, past := newMessage("delayed", nil), newMessage("past", nil)
	deliverAt := time.Now().Add(d)
	transport.SetDeliverAt(delayed, deliverAt)
	transport.SetDeliverAt(past, time.Now().Add(-time.Hour))
	e.publish(topic, delayed, past)
	first := e.receive(ch, "message with a deliver-at in the past")
	if idOf(first) != idOf(past) {
		t.Fatalf("received %q at %s, before its deliver-at %s; want the message due already first",
			first.Payload, time.Now().Format(time.RFC3339Nano), deliverAt.Format(time.RFC3339Nano))
	}
	first.Ack()
	second := e.receive(ch, "delayed message")
	now := time.Now()
	if idOf(second) != idOf(delayed) {
		t.Fatalf("received %q, want the delayed message", second.Payload)
	}
	if now.Before(deliverAt) {
		t.Errorf("delayed message received %s before its deliver-at", deliverAt.Sub(now))
	}
	for _, m := range []*message.Message{first, second} {
		if v, ok := m.Metadata[transport.MetadataDeliverAt]; ok {
			t.Errorf("message %q delivered with %s=%q: the transport must not pass it on", m.Payload, transport.MetadataDeliverAt, v)
		}
	}
	second.Ack()
	e.quiet(ch, s.visibility(), "after the delayed messages")
}

// heartbeat holds a message in a handler for three visibility timeouts: a
// competing consumer must get nothing meanwhile. Then the holding consumer
// crashes (stops without settling): the message must come back.
func (s *suite) heartbeat(t *testing.T) {
	e := s.env(t)
	topic := e.name("topic")
	vt := s.visibility()
	q := e.declare(transport.Queue{Name: e.name("queue"), Topics: []string{topic}, VisibilityTimeout: vt})
	crashCtx, crash := context.WithCancel(e.ctx)
	a := e.subscribe(crashCtx, q.Name)
	sent := newMessage("long handler", nil)
	e.publish(topic, sent)
	held := e.receive(a, "first delivery")
	if idOf(held) != idOf(sent) {
		t.Fatalf("got %s, want %s", idOf(held), idOf(sent))
	}
	b := e.subscribe(e.ctx, q.Name)
	e.quiet(b, 3*vt, "competing consumer while the handler holds the message")
	crash() // neither ack nor nack
	again := e.receive(b, "redelivery after the holding consumer crashed")
	if idOf(again) != idOf(sent) {
		t.Fatalf("redelivered %s, want %s", idOf(again), idOf(sent))
	}
	if s.f.ReceiveCount && again.Metadata.Get(transport.MetadataReceiveCount) != "2" {
		t.Errorf("receive count after crash %q, want 2", again.Metadata.Get(transport.MetadataReceiveCount))
	}
	again.Ack()
}
