package outboxtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

// Writer stores events in one new transaction of the store's database and
// commits it, or rolls it back when commit is false.
type Writer func(ctx context.Context, commit bool, enc outbox.Encoder, events ...eda.Event) error

// Harness tells the suite how to get a store under test.
type Harness struct {
	// New returns a fresh, migrated, empty store and a Writer for its
	// database. Required.
	New func(t *testing.T) (outbox.Store, Writer)
	// Timeout bounds every wait. Default 60s.
	Timeout time.Duration
}

// Run runs the shared outbox suite against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("outboxtest: Harness.New is nil")
	}
	if h.Timeout == 0 {
		h.Timeout = 60 * time.Second
	}
	s := &suite{h: h}
	tests := []struct {
		name string
		run  func(*testing.T)
	}{
		{"RollbackPublishesNothing", s.rollback},
		{"EnvelopeRoundTrip", s.envelope},
		{"ClaimIsExclusive", s.claimExclusive},
		{"UnsettledClaimStaysPending", s.unsettled},
		{"InFlightDoesNotHoldBackItsKeys", s.inFlight},
		{"PipelinedClaimKeepsKeyOrder", s.pipelined},
		{"TwoRelays", func(t *testing.T) { s.relays(t, 2, 1) }},
		{"FourRelays", func(t *testing.T) { s.relays(t, 4, 1) }},
		{"TwoRelaysOfThreeWorkers", func(t *testing.T) { s.relays(t, 2, 3) }},
		{"KeyOrderAcrossTopics", s.keyAcrossTopics},
		{"BrokerDownThenUp", s.brokerDown},
		{"PoisonRecordFails", s.poison},
		{"PartialPublish", s.partialPublish},
		{"RetentionCleanup", s.retention},
		{"WakeupIsPrompt", s.wakeup},
		{"CleanExit", s.cleanExit},
		{"BadInput", s.badInput},
		{"DelayedHeldUntilDue", s.delayedHeld},
		{"DelayedAheadThroughDelayingPublisher", s.delayedAhead},
		{"DelayRefusedHeldUntilDue", s.delayRefused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t)
		})
	}
}

type suite struct{ h Harness }

// Event is the suite's event: Key orders it, N numbers it within its key.
type Event struct {
	Key    string `json:"key"`
	N      int    `json:"n"`
	Poison bool   `json:"poison,omitempty"`
}

// EventName implements eda.Event.
func (Event) EventName() string { return "outboxtest.event" }

// OrderingKey implements eda.Ordered.
func (e Event) OrderingKey() string { return e.Key }

// OtherEvent is Event on another topic.
type OtherEvent Event

// EventName implements eda.Event.
func (OtherEvent) EventName() string { return "outboxtest.other" }

// OrderingKey implements eda.Ordered.
func (e OtherEvent) OrderingKey() string { return e.Key }

// Topics of Event and OtherEvent.
const (
	TopicA = "outboxtest-a"
	TopicB = "outboxtest-b"
)

// NewApp returns an App with Event and OtherEvent registered, on a memory
// transport (only its NewMessage is used).
func NewApp(t testing.TB) *eda.App {
	t.Helper()
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	app, err := eda.New(eda.Config{Transport: tr, Source: "outboxtest"})
	if err != nil {
		t.Fatal(err)
	}
	if err := eda.Register[Event](app, TopicA); err != nil {
		t.Fatal(err)
	}
	if err := eda.Register[OtherEvent](app, TopicB); err != nil {
		t.Fatal(err)
	}
	return app
}

// Delivery is one message a Sink received.
type Delivery struct {
	Topic string
	Msg   *message.Message
	At    time.Time // when Publish was called
}

// Sink is a message.Publisher that records what it is given. While Down is
// set it fails with transport.ErrUnavailable; messages whose payload
// contains "poison" fail with transport.ErrMessageTooLarge while Reject is
// set.
type Sink struct {
	mu       sync.Mutex
	got      []Delivery
	calls    int
	maxBatch int
	down     bool
	reject   bool
	partial  bool
	attempts int
	changed  chan struct{}
}

var _ message.Publisher = (*Sink)(nil)

// NewSink returns an empty, healthy sink.
func NewSink() *Sink { return &Sink{changed: make(chan struct{})} }

// Publish implements message.Publisher.
func (s *Sink) Publish(topic string, msgs ...*message.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if s.down {
		return fmt.Errorf("sink: %w", transport.ErrUnavailable)
	}
	if s.reject {
		for _, m := range msgs {
			if strings.Contains(string(m.Payload), `"poison":true`) {
				return transport.TooLargeError(topic, m, len(m.Payload), 10)
			}
		}
	}
	if s.partial && len(msgs) > 1 {
		// Send every other message, report the rest as not sent.
		s.partial = false
		pe := &PartialError{}
		for i, m := range msgs {
			if i%2 == 0 {
				s.got = append(s.got, Delivery{Topic: topic, Msg: m, At: time.Now()})
			} else {
				pe.IDs = append(pe.IDs, m.UUID)
			}
		}
		close(s.changed)
		s.changed = make(chan struct{})
		return pe
	}
	s.calls++
	s.maxBatch = max(s.maxBatch, len(msgs))
	now := time.Now()
	for _, m := range msgs {
		s.got = append(s.got, Delivery{Topic: topic, Msg: m, At: now})
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// Close implements message.Publisher.
func (s *Sink) Close() error { return nil }

// SetDown makes Publish fail (true) or succeed (false).
func (s *Sink) SetDown(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

// SetPartial makes the next Publish of several messages send only every
// other one and fail with a *PartialError listing the others.
func (s *Sink) SetPartial() { s.mu.Lock(); s.partial = true; s.mu.Unlock() }

// PartialError is the Sink's partly failed Publish; it implements
// outbox.PartialError.
type PartialError struct{ IDs []string }

func (e *PartialError) Error() string {
	return fmt.Sprintf("sink: %d messages not sent: %v", len(e.IDs), transport.ErrUnavailable)
}

// NotSent implements outbox.PartialError.
func (e *PartialError) NotSent() []string { return e.IDs }

// Unwrap returns transport.ErrUnavailable.
func (e *PartialError) Unwrap() error { return transport.ErrUnavailable }

var _ outbox.PartialError = (*PartialError)(nil)

// SetReject makes Publish reject poison events.
func (s *Sink) SetReject(r bool) { s.mu.Lock(); s.reject = r; s.mu.Unlock() }

// Deliveries returns a copy of what was received, in order.
func (s *Sink) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.got...)
}

// Attempts counts Publish calls, failed ones included.
func (s *Sink) Attempts() int { s.mu.Lock(); defer s.mu.Unlock(); return s.attempts }

// MaxBatch is the largest number of messages one successful Publish carried.
func (s *Sink) MaxBatch() int { s.mu.Lock(); defer s.mu.Unlock(); return s.maxBatch }

// WaitFor waits until cond holds for the deliveries, or fails t.
func (s *Sink) WaitFor(t testing.TB, timeout time.Duration, what string, cond func([]Delivery) bool) []Delivery {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got := append([]Delivery(nil), s.got...)
		ch := s.changed
		s.mu.Unlock()
		if cond(got) {
			return got
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s; have %d deliveries", timeout, what, len(got))
		}
	}
}

// Decode returns the Event in d.
func (d Delivery) Decode(t testing.TB) Event {
	t.Helper()
	var e Event
	if err := (eda.JSON{}).Unmarshal(d.Msg.Payload, &e); err != nil {
		t.Fatalf("decode %s: %v", d.Msg.UUID, err)
	}
	return e
}

// CheckOnceInOrder fails t unless deliveries hold every one of want event
// ids exactly once and, per key, N increases.
func CheckOnceInOrder(t testing.TB, ds []Delivery, want int) {
	t.Helper()
	seen := map[string]int{}
	last := map[string]int{}
	for _, d := range ds {
		id := d.Msg.Metadata.Get(eda.MetadataID)
		seen[id]++
		if seen[id] > 1 {
			t.Errorf("event %s delivered %d times", id, seen[id])
		}
		e := d.Decode(t)
		if e.Key == "" {
			continue
		}
		if n, ok := last[e.Key]; ok && e.N <= n {
			t.Errorf("key %q: N %d after %d (out of order)", e.Key, e.N, n)
		}
		last[e.Key] = e.N
	}
	if len(seen) != want {
		t.Errorf("got %d distinct events, want %d", len(seen), want)
	}
}

func (s *suite) relay(t *testing.T, st outbox.Store, pub message.Publisher, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	cfg.Store, cfg.Publisher = st, pub
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 10 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 100 * time.Millisecond
	}
	r, err := outbox.NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay Run: %v", err)
			}
		case <-time.After(s.h.Timeout):
			t.Errorf("relay did not stop within %s of cancel", s.h.Timeout)
		}
	})
	return r
}

func (s *suite) waitStats(t *testing.T, st outbox.Store, what string, cond func(outbox.Stats) bool) outbox.Stats {
	t.Helper()
	deadline := time.Now().Add(s.h.Timeout)
	for {
		got, err := st.Stats(context.Background())
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for stats %s; have %+v", what, got)
		}
		time.Sleep(10 * time.Millisecond) // polling a database, not waiting for an effect blindly
	}
}

func (s *suite) rollback(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	if err := write(ctx, false, app, Event{Key: "k", N: 1}, Event{Key: "k", N: 2}); err != nil {
		t.Fatal(err)
	}
	if err := write(ctx, true, app, Event{Key: "k", N: 3}); err != nil {
		t.Fatal(err)
	}
	sink := NewSink()
	s.relay(t, st, sink, outbox.RelayConfig{})
	got := sink.WaitFor(t, s.h.Timeout, "the committed event", func(ds []Delivery) bool { return len(ds) >= 1 })
	s.waitStats(t, st, "nothing pending", func(x outbox.Stats) bool { return x.Pending == 0 })
	got = sink.Deliveries()
	if len(got) != 1 || got[0].Decode(t).N != 3 {
		t.Fatalf("deliveries = %d (first %+v), want only the committed N=3", len(got), got[0].Decode(t))
	}
}

func (s *suite) envelope(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	topic, want, err := app.NewMessage(ctx, Event{Key: "env", N: 7})
	if err != nil {
		t.Fatal(err)
	}
	want.Metadata.Set(transport.MetadataDedupID, "dedup-7")
	want.Metadata.Set("custom_key", "ünïcode \"quoted\" value")
	enc := fixedEncoder{topic: topic, msg: want}
	if err := write(ctx, true, enc, Event{}); err != nil {
		t.Fatal(err)
	}
	sink := NewSink()
	s.relay(t, st, sink, outbox.RelayConfig{})
	got := sink.WaitFor(t, s.h.Timeout, "the event", func(ds []Delivery) bool { return len(ds) >= 1 })[0]
	if got.Topic != topic {
		t.Errorf("topic = %q, want %q", got.Topic, topic)
	}
	if got.Msg.UUID != want.UUID || string(got.Msg.Payload) != string(want.Payload) {
		t.Errorf("message = %s %q, want %s %q", got.Msg.UUID, got.Msg.Payload, want.UUID, want.Payload)
	}
	if len(got.Msg.Metadata) != len(want.Metadata) {
		t.Errorf("metadata = %v, want %v", got.Msg.Metadata, want.Metadata)
	}
	for k, v := range want.Metadata {
		if got.Msg.Metadata.Get(k) != v {
			t.Errorf("metadata %s = %q, want %q", k, got.Msg.Metadata.Get(k), v)
		}
	}
	env := eda.EnvelopeOf(got.Msg)
	if err := env.Validate(); err != nil || env.OrderingKey != "env" || env.Type != "outboxtest.event" {
		t.Errorf("envelope %+v: %v", env, err)
	}
}

type fixedEncoder struct {
	topic string
	msg   *message.Message
}

func (f fixedEncoder) NewMessage(context.Context, eda.Event) (string, *message.Message, error) {
	return f.topic, f.msg, nil
}

// claimExclusive: while one claim holds records, another claim gets none
// of them and nothing of their keys.
func (s *suite) claimExclusive(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	var evs []eda.Event
	for i := range 10 {
		evs = append(evs, Event{Key: fmt.Sprintf("k%d", i%2), N: i})
	}
	for i := range 4 {
		evs = append(evs, Event{N: 100 + i}) // no key
	}
	if err := write(ctx, true, app, evs...); err != nil {
		t.Fatal(err)
	}
	var inner []outbox.Record
	var innerErr error
	n, err := st.Claim(ctx, 3, func(ctx context.Context, outer []outbox.Record) []outbox.Result {
		// The first claim holds k0#0, k1#1, k0#2. A second claim must skip
		// them and every later k0/k1 record.
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, innerErr = st.Claim(ctx, 100, func(_ context.Context, b []outbox.Record) []outbox.Result {
				inner = b
				return nil
			})
		}()
		<-done
		return nil
	})
	if err != nil || innerErr != nil {
		t.Fatalf("Claim: %v, inner: %v", err, innerErr)
	}
	if n != 3 {
		t.Fatalf("outer claim took %d records, want 3", n)
	}
	if len(inner) != 4 {
		t.Errorf("inner claim took %d records, want the 4 unkeyed ones", len(inner))
	}
	for _, r := range inner {
		if r.OrderingKey != "" {
			t.Errorf("inner claim took %q seq %d while an older record of its key was claimed", r.OrderingKey, r.Seq)
		}
	}
}

func (s *suite) unsettled(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	if err := write(ctx, true, app, Event{Key: "a", N: 1}, Event{Key: "a", N: 2}); err != nil {
		t.Fatal(err)
	}
	var first []outbox.Record
	if _, err := st.Claim(ctx, 10, func(_ context.Context, b []outbox.Record) []outbox.Result {
		first = b
		return []outbox.Result{{Seq: b[0].Seq, Outcome: outbox.OutcomePublished}}
	}); err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || first[0].Seq >= first[1].Seq {
		t.Fatalf("claim = %+v, want both records in seq order", first)
	}
	stats, err := st.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Pending != 1 {
		t.Fatalf("pending = %d after settling one of two, want 1", stats.Pending)
	}
	var second []outbox.Record
	if _, err := st.Claim(ctx, 10, func(_ context.Context, b []outbox.Record) []outbox.Result {
		second = b
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(second) != 1 || second[0].Seq != first[1].Seq {
		t.Fatalf("second claim = %+v, want only the unsettled record %d", second, first[1].Seq)
	}
}

// inFlight: records the caller holds in its own earlier claim
// (ClaimRequest.InFlight) do not hold back later records of their keys;
// records it does not list do.
func (s *suite) inFlight(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	ds, ok := st.(outbox.DueStore)
	if !ok {
		t.Skip("the store is not an outbox.DueStore")
	}
	app := NewApp(t)
	if err := write(ctx, true, app, Event{Key: "k", N: 0}, Event{Key: "k", N: 1}, Event{Key: "k", N: 2}, Event{Key: "k", N: 3}, Event{Key: "j", N: 0}); err != nil {
		t.Fatal(err)
	}
	inner := func(inflight []int64) (got []Event, n int) {
		t.Helper()
		done := make(chan struct{})
		var err error
		go func() { // another goroutine, as a relay's next claim is
			defer close(done)
			n, err = ds.ClaimDue(ctx, outbox.ClaimRequest{Limit: 10, InFlight: inflight}, func(_ context.Context, b []outbox.Record) []outbox.Result {
				for _, r := range b {
					got = append(got, Delivery{Msg: r.Message()}.Decode(t))
				}
				return nil
			})
		}()
		<-done
		if err != nil {
			t.Fatal(err)
		}
		return got, n
	}
	var mine, others, part []Event
	if _, err := ds.ClaimDue(ctx, outbox.ClaimRequest{Limit: 2}, func(_ context.Context, outer []outbox.Record) []outbox.Result {
		if len(outer) != 2 {
			t.Fatalf("outer claim took %d records, want k#0 and k#1", len(outer))
		}
		mine, _ = inner([]int64{outer[0].Seq, outer[1].Seq})
		others, _ = inner(nil)
		part, _ = inner([]int64{outer[0].Seq}) // k#1 is held but not listed
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := func(what string, got []Event, keys ...string) {
		t.Helper()
		var have []string
		for _, e := range got {
			have = append(have, fmt.Sprintf("%s#%d", e.Key, e.N))
		}
		if strings.Join(have, " ") != strings.Join(keys, " ") {
			t.Errorf("%s: claimed %v, want %v", what, have, keys)
		}
	}
	want("with the outer claim's records in flight", mine, "k#2", "k#3", "j#0")
	want("without in-flight records", others, "j#0")
	want("with only k#0 in flight (k#1 claimed but not listed)", part, "j#0")
}

// pipelined: a relay claims its next batch while it publishes the current
// one; when a record of the current batch is not published (a partial
// failure), the next batch's records of its key are not published before
// it.
func (s *suite) pipelined(t *testing.T) {
	ctx := context.Background()
	inner, write := s.h.New(t)
	ds, ok := inner.(outbox.DueStore)
	if !ok {
		t.Skip("the store is not an outbox.DueStore")
	}
	app := NewApp(t)
	var evs []eda.Event
	for i := range 3 {
		evs = append(evs, Event{Key: "k", N: i}, Event{Key: "j", N: i})
	}
	if err := write(ctx, true, app, evs...); err != nil {
		t.Fatal(err)
	}
	st := &watchedStore{DueStore: ds, second: make(chan struct{})}
	sink := &gateSink{Sink: NewSink(), gate: st.second, timeout: s.h.Timeout}
	s.relay(t, st, sink, outbox.RelayConfig{BatchSize: 2})
	got := sink.WaitFor(t, s.h.Timeout, "6 events", func(ds []Delivery) bool { return len(ds) >= 6 })
	s.waitStats(t, inner, "nothing pending", func(x outbox.Stats) bool { return x.Pending == 0 })
	if sink.timedOut.Load() {
		t.Errorf("the relay did not claim its second batch while publishing the first")
	}
	st.mu.Lock()
	second := st.batches[1]
	st.mu.Unlock()
	var keys []string
	for _, r := range second {
		keys = append(keys, r.OrderingKey)
	}
	if strings.Join(keys, " ") != "k j" {
		t.Errorf("the second claim took keys %v, want k (its older record in flight in the first claim) and j", keys)
	}
	CheckOnceInOrder(t, sink.Deliveries(), 6)
	_ = got
}

// watchedStore records the batches its claims pass to the relay and closes
// second when the second claim's batch is there.
type watchedStore struct {
	outbox.DueStore
	mu      sync.Mutex
	batches [][]outbox.Record
	second  chan struct{}
}

func (w *watchedStore) ClaimDue(ctx context.Context, req outbox.ClaimRequest, publish func(context.Context, []outbox.Record) []outbox.Result) (int, error) {
	return w.DueStore.ClaimDue(ctx, req, func(ctx context.Context, b []outbox.Record) []outbox.Result {
		w.mu.Lock()
		w.batches = append(w.batches, b)
		if len(w.batches) == 2 {
			close(w.second)
		}
		w.mu.Unlock()
		return publish(ctx, b)
	})
}

// gateSink holds its first Publish until gate is closed (or timeout), then
// sends only its messages without key "k" and reports those as not sent.
type gateSink struct {
	*Sink
	gate     <-chan struct{}
	timeout  time.Duration
	first    atomic.Bool
	timedOut atomic.Bool
}

func (g *gateSink) Publish(topic string, msgs ...*message.Message) error {
	if g.first.Swap(true) {
		return g.Sink.Publish(topic, msgs...)
	}
	select {
	case <-g.gate:
	case <-time.After(g.timeout / 4):
		g.timedOut.Store(true)
	}
	pe := &PartialError{}
	var sent []*message.Message
	for _, m := range msgs {
		if strings.Contains(string(m.Payload), `"key":"k"`) {
			pe.IDs = append(pe.IDs, m.UUID)
		} else {
			sent = append(sent, m)
		}
	}
	if err := g.Sink.Publish(topic, sent...); err != nil {
		return err
	}
	return pe
}

// relays: n relays drain events written concurrently with them; every event
// arrives once and each key in order.
// relays runs n relays of the given workers each on one store.
func (s *suite) relays(t *testing.T, n, workers int) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	sink := NewSink()
	for range n {
		s.relay(t, st, sink, outbox.RelayConfig{BatchSize: 7, Workers: workers})
	}
	const keys, perKey, unkeyed = 12, 25, 30
	var wg sync.WaitGroup
	errs := make(chan error, keys+1)
	for k := range keys {
		wg.Go(func() {
			for i := 0; i < perKey; {
				// 1 to 3 events per transaction
				var evs []eda.Event
				for j := 0; j < 1+i%3 && i < perKey; j++ {
					evs = append(evs, Event{Key: fmt.Sprintf("key-%d", k), N: i})
					i++
				}
				if err := write(ctx, true, app, evs...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range unkeyed {
			if err := write(ctx, true, app, Event{N: i}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := keys*perKey + unkeyed
	got := sink.WaitFor(t, s.h.Timeout, fmt.Sprintf("%d events", total), func(ds []Delivery) bool { return len(ds) >= total })
	s.waitStats(t, st, "nothing pending", func(x outbox.Stats) bool { return x.Pending == 0 })
	got = sink.Deliveries()
	CheckOnceInOrder(t, got, total)
	if sink.MaxBatch() < 2 {
		t.Errorf("largest Publish call carried %d messages; the relay should batch", sink.MaxBatch())
	}
}

func (s *suite) keyAcrossTopics(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	var evs []eda.Event
	for i := range 20 {
		if i%3 == 0 {
			evs = append(evs, OtherEvent{Key: "x", N: i})
		} else {
			evs = append(evs, Event{Key: "x", N: i})
		}
	}
	if err := write(ctx, true, app, evs...); err != nil {
		t.Fatal(err)
	}
	sink := NewSink()
	s.relay(t, st, sink, outbox.RelayConfig{})
	s.relay(t, st, sink, outbox.RelayConfig{})
	got := sink.WaitFor(t, s.h.Timeout, "20 events", func(ds []Delivery) bool { return len(ds) >= 20 })
	CheckOnceInOrder(t, got, 20)
	for _, d := range got {
		e := d.Decode(t)
		if want := map[bool]string{true: TopicB, false: TopicA}[e.N%3 == 0]; d.Topic != want {
			t.Errorf("N=%d on %q, want %q", e.N, d.Topic, want)
		}
	}
}

func (s *suite) brokerDown(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	sink := NewSink()
	sink.SetDown(true)
	r := s.relay(t, st, sink, outbox.RelayConfig{BatchSize: 10, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	const total = 40
	for i := range total {
		if err := write(ctx, true, app, Event{Key: fmt.Sprintf("k%d", i%4), N: i}); err != nil {
			t.Fatal(err)
		}
	}
	// The lag rises while the broker is down.
	before := s.waitStats(t, st, "lag >= 300ms with everything pending", func(x outbox.Stats) bool {
		return x.Pending == total && x.Lag(time.Now()) >= 300*time.Millisecond
	})
	if rs := r.Stats(); rs.Retried == 0 || rs.Published != 0 {
		t.Fatalf("relay stats while down = %+v, want retries and nothing published", rs)
	}
	if len(sink.Deliveries()) != 0 {
		t.Fatal("delivered while down")
	}
	sink.SetDown(false)
	got := sink.WaitFor(t, s.h.Timeout, "every event after the broker is back", func(ds []Delivery) bool { return len(ds) >= total })
	after := s.waitStats(t, st, "lag back to 0", func(x outbox.Stats) bool { return x.Pending == 0 && x.Lag(time.Now()) == 0 })
	t.Logf("lag while down %s (pending %d), after recovery %s (pending %d)", before.Lag(time.Now()), before.Pending, after.Lag(time.Now()), after.Pending)
	CheckOnceInOrder(t, sink.Deliveries(), total)
	_ = got
	if rs := r.Stats(); rs.Published != total {
		t.Errorf("relay published %d, want %d", rs.Published, total)
	}
}

func (s *suite) poison(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	sink := NewSink()
	sink.SetReject(true)
	r := s.relay(t, st, sink, outbox.RelayConfig{})
	if err := write(ctx, true, app,
		Event{Key: "p", N: 1}, Event{Key: "p", N: 2, Poison: true}, Event{Key: "p", N: 3},
		Event{Key: "q", N: 1}, Event{Key: "q", N: 2},
		Event{Key: "d", N: 1, Poison: true}, Event{Key: "d", N: 2},
	); err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, s.h.Timeout, "the healthy events", func(ds []Delivery) bool { return len(ds) >= 3 })
	s.waitStats(t, st, "two failed, two blocked behind them", func(x outbox.Stats) bool { return x.Failed == 2 && x.Pending == 2 })
	failed, err := st.Failed(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 2 {
		t.Fatalf("Failed() = %d records, want 2", len(failed))
	}
	for _, f := range failed {
		if f.State != outbox.Failed || !strings.Contains(f.LastError, transport.ErrMessageTooLarge.Error()) || f.Attempts != 1 {
			t.Errorf("failed record %+v: want state failed, 1 attempt and the broker's reason", f)
		}
	}
	if rs := r.Stats(); rs.Failed != 2 {
		t.Errorf("relay stats %+v, want 2 failed", rs)
	}
	got := sink.Deliveries()
	for _, d := range got {
		e := d.Decode(t)
		if e.Poison || (e.Key == "p" && e.N == 3) || e.Key == "d" {
			t.Errorf("published %+v: a poison record or one behind it", e)
		}
	}
	// Discard d#1: d#2 goes. Fix the broker and retry p#2: p#2 then p#3.
	var pSeq, dSeq int64
	for _, f := range failed {
		if f.OrderingKey == "p" {
			pSeq = f.Seq
		} else {
			dSeq = f.Seq
		}
	}
	if n, err := st.Discard(ctx, dSeq); err != nil || n != 1 {
		t.Fatalf("Discard = %d, %v", n, err)
	}
	sink.WaitFor(t, s.h.Timeout, "d#2 after discarding d#1", func(ds []Delivery) bool { return len(ds) >= 4 })
	sink.SetReject(false)
	if n, err := st.Retry(ctx, pSeq, dSeq); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v; want 1 (the discarded record is not failed)", n, err)
	}
	got = sink.WaitFor(t, s.h.Timeout, "p#2 and p#3 after Retry", func(ds []Delivery) bool { return len(ds) >= 6 })
	s.waitStats(t, st, "nothing pending or failed", func(x outbox.Stats) bool { return x.Pending == 0 && x.Failed == 0 })
	CheckOnceInOrder(t, got, 6)
	for _, d := range sink.Deliveries() {
		if e := d.Decode(t); e.Key == "d" && e.N == 1 {
			t.Error("the discarded record was published")
		}
	}
}

// partialPublish: when a Publish call sends some messages and reports the
// others as not sent, only those are sent again: no duplicates.
func (s *suite) partialPublish(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	var evs []eda.Event
	for i := range 10 {
		evs = append(evs, Event{N: i})
	}
	if err := write(ctx, true, app, evs...); err != nil {
		t.Fatal(err)
	}
	sink := NewSink()
	sink.SetPartial()
	r := s.relay(t, st, sink, outbox.RelayConfig{})
	got := sink.WaitFor(t, s.h.Timeout, "10 events", func(ds []Delivery) bool { return len(ds) >= 10 })
	s.waitStats(t, st, "nothing pending", func(x outbox.Stats) bool { return x.Pending == 0 })
	CheckOnceInOrder(t, sink.Deliveries(), 10)
	_ = got
	if rs := r.Stats(); rs.Published != 10 || rs.Retried != 5 {
		t.Errorf("relay stats %+v, want 10 published after 5 retried", rs)
	}
}

func (s *suite) retention(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	for i := range 5 {
		if err := write(ctx, true, app, Event{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Claim(ctx, 3, func(_ context.Context, b []outbox.Record) []outbox.Result {
		res := []outbox.Result{}
		for _, r := range b {
			res = append(res, outbox.Result{Seq: r.Seq, Outcome: outbox.OutcomePublished})
		}
		return res
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Cleanup(ctx, time.Now().Add(-time.Hour), 100); err != nil || n != 0 {
		t.Fatalf("Cleanup(an hour ago) = %d, %v; want 0 (nothing that old)", n, err)
	}
	if n, err := st.Cleanup(ctx, time.Now().Add(time.Hour), 2); err != nil || n != 2 {
		t.Fatalf("Cleanup(limit 2) = %d, %v; want 2", n, err)
	}
	if n, err := st.Cleanup(ctx, time.Now().Add(time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("Cleanup = %d, %v; want the last published 1", n, err)
	}
	stats, err := st.Stats(ctx)
	if err != nil || stats.Pending != 2 {
		t.Fatalf("stats = %+v, %v; pending records must survive cleanup", stats, err)
	}
}

// wakeup: with a poll interval far longer than the timeout, a committed
// event is still published promptly.
func (s *suite) wakeup(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	sink := NewSink()
	s.relay(t, st, sink, outbox.RelayConfig{PollInterval: time.Hour})
	// Let the relay's first (empty) claim pass, then write.
	if err := write(ctx, true, app, Event{N: 1}); err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, 5*time.Second, "the event without polling", func(ds []Delivery) bool { return len(ds) == 1 })
	// Once the relay is idle, only a wake-up can make it publish.
	for i := 2; i <= 3; i++ {
		s.waitStats(t, st, "the relay idle", func(x outbox.Stats) bool { return x.Pending == 0 })
		if err := write(ctx, true, app, Event{N: i}); err != nil {
			t.Fatal(err)
		}
		sink.WaitFor(t, 5*time.Second, fmt.Sprintf("event %d without polling", i), func(ds []Delivery) bool { return len(ds) == i })
	}
}

func (s *suite) cleanExit(t *testing.T) {
	st, write := s.h.New(t)
	app := NewApp(t)
	sink := NewSink()
	r, err := outbox.NewRelay(outbox.RelayConfig{Store: st, Publisher: sink, Workers: 3, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if err := write(ctx, true, app, Event{N: 1}); err != nil {
		t.Fatal(err)
	}
	sink.WaitFor(t, s.h.Timeout, "the event", func(ds []Delivery) bool { return len(ds) == 1 })
	// Run is running: a second Run is refused at once.
	if err := r.Run(ctx); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("second concurrent Run = %v, want ErrInvalidConfig", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancel")
	}
}

func (s *suite) badInput(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	type unregistered struct{ Event }
	if err := write(ctx, true, app, unregistered{}); !errors.Is(err, outbox.ErrInvalidEvent) || !errors.Is(err, eda.ErrUnregisteredEvent) {
		t.Errorf("write unregistered event: %v, want ErrInvalidEvent and eda.ErrUnregisteredEvent", err)
	}
	if err := write(ctx, true, nil, Event{}); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("write with nil encoder: %v, want ErrInvalidConfig", err)
	}
	if _, err := st.Claim(ctx, 0, nil); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("Claim(0): %v, want ErrInvalidConfig", err)
	}
	if _, err := st.Cleanup(ctx, time.Now(), 0); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("Cleanup(limit 0): %v, want ErrInvalidConfig", err)
	}
	_, err := outbox.NewRelay(outbox.RelayConfig{BatchSize: -1, MinBackoff: time.Second, MaxBackoff: time.Millisecond})
	for _, want := range []string{"Store is nil", "Publisher is nil", "BatchSize", "MinBackoff"} {
		if !errors.Is(err, outbox.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("NewRelay(bad config) = %v, want ErrInvalidConfig mentioning %q", err, want)
		}
	}
	stats, err := st.Stats(ctx)
	if err != nil || stats.Pending != 0 {
		t.Errorf("stats after rejected writes = %+v, %v; want nothing stored", stats, err)
	}
}

// DelaySink is a Sink whose publisher delays delivery (Features), as SQS
// does up to 15 minutes; with Refuse it rejects every message that asks for
// a delay with transport.ErrDelayUnsupported, as an SNS FIFO topic does.
type DelaySink struct {
	*Sink
	Max    time.Duration
	Refuse bool
}

// Features implements the relay's feature probe.
func (d *DelaySink) Features() transport.Features {
	return transport.Features{DelayedDelivery: true, MaxDeliveryDelay: d.Max}
}

// Publish implements message.Publisher.
func (d *DelaySink) Publish(topic string, msgs ...*message.Message) error {
	if d.Refuse {
		for _, m := range msgs {
			if _, ok := m.Metadata[transport.MetadataDeliverAt]; ok {
				d.mu.Lock()
				d.attempts++
				d.mu.Unlock()
				return fmt.Errorf("delay sink: %s: %w", m.UUID, transport.ErrDelayUnsupported)
			}
		}
	}
	return d.Sink.Publish(topic, msgs...)
}

// dueOf returns the due time the record of d's event was written with.
func dueOf(t *testing.T, ds []Delivery, n int) Delivery {
	t.Helper()
	for _, d := range ds {
		if d.Decode(t).N == n {
			return d
		}
	}
	t.Fatalf("no delivery of N=%d", n)
	return Delivery{}
}

// delayedHeld: with a publisher that cannot delay, a delayed record is
// held until due, then published without the delay key; it does not hold
// back the later records of its key, and counts as pending but not as lag
// until due.
func (s *suite) delayedHeld(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	const delay = 2 * time.Second // the relay starts well within it, even on a loaded machine (600 ms was not)
	due := time.Now().Add(delay)
	if err := write(ctx, true, app, eda.At(due, Event{Key: "k", N: 1}), Event{Key: "k", N: 2}); err != nil {
		t.Fatal(err)
	}
	st0, err := st.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st0.Pending != 2 {
		t.Errorf("stats before relaying %+v, want 2 pending", st0)
	}
	sink := NewSink()
	s.relay(t, st, sink, outbox.RelayConfig{PollInterval: 20 * time.Millisecond})
	first := sink.WaitFor(t, s.h.Timeout, "the undelayed record", func(ds []Delivery) bool { return len(ds) >= 1 })
	if e := first[0].Decode(t); e.N != 2 || first[0].At.After(due) {
		t.Errorf("first delivery N=%d at %s before due, want N=2 before the delayed one is due", e.N, due.Sub(first[0].At))
	}
	x := s.waitStats(t, st, "the undelayed record settled", func(x outbox.Stats) bool { return x.Pending <= 1 })
	if asOf := time.Now(); asOf.Before(due) && (x.Pending != 1 || !x.OldestPending.IsZero()) {
		t.Errorf("stats with only a record not yet due %+v, want 1 pending, no lag", x)
	}
	got := sink.WaitFor(t, s.h.Timeout, "the delayed record", func(ds []Delivery) bool { return len(ds) >= 2 })
	d := dueOf(t, got, 1)
	if d.At.Before(due) {
		t.Errorf("delayed record published %s before it was due", due.Sub(d.At))
	}
	if v, ok := d.Msg.Metadata[transport.MetadataDeliverAt]; ok {
		t.Errorf("published with %s %q by a relay whose publisher cannot delay", transport.MetadataDeliverAt, v)
	}
	if env := eda.EnvelopeOf(d.Msg); env.OrderingKey != "k" || env.Type != "outboxtest.event" {
		t.Errorf("delayed record's envelope %+v", env)
	}
	if len(got) != 2 {
		t.Errorf("%d deliveries, want 2", len(got))
	}
	s.waitStats(t, st, "nothing pending", func(x outbox.Stats) bool { return x.Pending == 0 && x.Failed == 0 })
}

// delayedAhead: through a publisher that delays up to Max, a record due
// within Max is published at once with its due time; one due later is not
// claimed yet.
func (s *suite) delayedAhead(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	soon, later := time.Now().Add(time.Minute), time.Now().Add(2*time.Hour)
	if err := write(ctx, true, app, eda.At(later, Event{Key: "k", N: 1}), eda.At(soon, Event{Key: "k", N: 2})); err != nil {
		t.Fatal(err)
	}
	sink := &DelaySink{Sink: NewSink(), Max: time.Hour}
	s.relay(t, st, sink, outbox.RelayConfig{})
	got := sink.WaitFor(t, s.h.Timeout, "the record due within the lead", func(ds []Delivery) bool { return len(ds) >= 1 })
	at, ok, err := transport.DeliverAt(got[0].Msg)
	if e := got[0].Decode(t); e.N != 2 || !ok || err != nil || !at.Equal(soon.UTC()) && at.Sub(soon).Abs() > time.Microsecond {
		t.Errorf("first delivery N=%d deliver at %v (%v, %v), want N=2 at %v", e.N, at, ok, err, soon)
	}
	// A record written after it goes through a later claim, which must
	// leave the one due in 2 hours alone.
	if err := write(ctx, true, app, Event{Key: "k", N: 3}); err != nil {
		t.Fatal(err)
	}
	got = sink.WaitFor(t, s.h.Timeout, "the undelayed record", func(ds []Delivery) bool { return len(ds) >= 2 })
	for _, d := range got {
		if d.Decode(t).N == 1 {
			t.Errorf("the record due in 2h was published %s early, beyond the publisher's 1h", time.Until(later))
		}
	}
	if _, ok := got[1].Msg.Metadata[transport.MetadataDeliverAt]; ok {
		t.Errorf("an undelayed record published with %s", transport.MetadataDeliverAt)
	}
	s.waitStats(t, st, "only the record due in 2h pending, no lag", func(x outbox.Stats) bool { return x.Pending == 1 && x.OldestPending.IsZero() })
}

// delayRefused: a publisher that refuses the delay (an SNS FIFO topic)
// leaves the record pending until due; it is then published without the
// delay, never failed for it, never early.
func (s *suite) delayRefused(t *testing.T) {
	ctx := context.Background()
	st, write := s.h.New(t)
	app := NewApp(t)
	due := time.Now().Add(500 * time.Millisecond)
	if err := write(ctx, true, app, eda.At(due, Event{Key: "k", N: 1})); err != nil {
		t.Fatal(err)
	}
	sink := &DelaySink{Sink: NewSink(), Max: time.Hour, Refuse: true}
	r := s.relay(t, st, sink, outbox.RelayConfig{PollInterval: 20 * time.Millisecond})
	got := sink.WaitFor(t, s.h.Timeout, "the delayed record", func(ds []Delivery) bool { return len(ds) >= 1 })
	if got[0].At.Before(due) {
		t.Errorf("published %s before due", due.Sub(got[0].At))
	}
	if _, ok := got[0].Msg.Metadata[transport.MetadataDeliverAt]; ok {
		t.Errorf("published with %s after the publisher refused it", transport.MetadataDeliverAt)
	}
	if n := sink.Attempts(); n != 2 {
		t.Errorf("%d publish attempts, want 2: the refused one and the one when due", n)
	}
	if rs := r.Stats(); rs.Failed != 0 {
		t.Errorf("relay stats %+v: a refused delay must not fail the record", rs)
	}
	if f, err := st.Failed(ctx, 10); err != nil || len(f) != 0 {
		t.Errorf("failed records %v, %v; want none", f, err)
	}
	s.waitStats(t, st, "nothing pending", func(x outbox.Stats) bool { return x.Pending == 0 && x.Failed == 0 })
}
