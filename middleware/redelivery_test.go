package middleware_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
)

// Delay stays within [d*(1-Jitter), d] and spreads over it.
func TestRedeliveryJitterBounds(t *testing.T) {
	cfg := middleware.RedeliveryConfig{Initial: 10 * time.Second, Jitter: 0.5}
	lo, hi := 20*time.Second, time.Duration(0)
	for range 2000 {
		d := cfg.Delay(2)
		if d < 10*time.Second || d > 20*time.Second {
			t.Fatalf("Delay(2) = %s, want in [10s, 20s]", d)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	// 2000 uniform draws: the extremes are within 1% of the bounds but
	// for a chance of about e^-20.
	if lo > 10100*time.Millisecond || hi < 19900*time.Millisecond {
		t.Errorf("delays in [%s, %s]: not spread over [10s, 20s]", lo, hi)
	}
	if d := (middleware.RedeliveryConfig{Initial: -1}).Delay(1); d != 0 {
		t.Errorf("Delay of an invalid config = %s, want 0", d)
	}
}

func TestRedeliveryConfigValidate(t *testing.T) {
	for name, cfg := range map[string]middleware.RedeliveryConfig{
		"negative delay":   {Delays: []time.Duration{time.Second, -time.Second}},
		"negative initial": {Initial: -time.Second},
		"negative max":     {Max: -time.Second},
		"multiplier < 1":   {Multiplier: 0.5},
		"jitter > 1":       {Jitter: 1.5},
		"negative jitter":  {Jitter: -0.1},
	} {
		if _, err := middleware.Retry(middleware.RetryConfig{Redelivery: &cfg}); !errors.Is(err, middleware.ErrInvalidConfig) {
			t.Errorf("%s: Retry = %v, want ErrInvalidConfig", name, err)
		}
	}
	err := middleware.RedeliveryConfig{Initial: -1, Jitter: 2}.Validate()
	if err == nil || len(err.(interface{ Unwrap() []error }).Unwrap()) != 2 {
		t.Errorf("Validate joins every problem: %v", err)
	}
}

// Retry sets the delay its schedule gives for the message's receive count,
// only when it hands back a transient error, and not without a schedule.
func TestRetrySetsRedeliveryDelay(t *testing.T) {
	sched := &middleware.RedeliveryConfig{Delays: []time.Duration{3 * time.Second, 7 * time.Second}, NoJitter: true}
	perm := eda.Permanent(errors.New("bad"))
	for _, tc := range []struct {
		name     string
		sched    *middleware.RedeliveryConfig
		attempts int
		count    string // receive count; "" none
		errs     []error
		ctxDone  bool
		want     time.Duration
	}{
		{"first delivery", sched, 2, "1", []error{errFlaky, errFlaky}, false, 3 * time.Second},
		{"second delivery", sched, 2, "2", []error{errFlaky, errFlaky}, false, 7 * time.Second},
		{"fifth delivery", sched, 2, "5", []error{errFlaky, errFlaky}, false, 7 * time.Second},
		{"no receive count", sched, 2, "", []error{errFlaky, errFlaky}, false, 3 * time.Second},
		{"one attempt", sched, 1, "1", []error{errFlaky}, false, 3 * time.Second},
		{"recovered in process", sched, 2, "1", []error{errFlaky, nil}, false, 0},
		{"permanent", sched, 2, "1", []error{perm}, false, 0},
		{"permanent on retry", sched, 3, "1", []error{errFlaky, perm}, false, 0},
		{"no schedule", nil, 2, "1", []error{errFlaky, errFlaky}, false, 0},
		{"shutdown", sched, 2, "1", []error{errFlaky}, true, 0},
	} {
		retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: tc.attempts, InitialInterval: time.Millisecond, Redelivery: tc.sched}))
		msg := message.NewMessage("m", nil)
		if tc.count != "" {
			msg.Metadata.Set(transport.MetadataReceiveCount, tc.count)
		}
		ctx, cancel := context.WithCancel(context.Background())
		msg.SetContext(ctx)
		i := 0
		_, err := retry(func(msg *message.Message) ([]*message.Message, error) {
			err := tc.errs[min(i, len(tc.errs)-1)]
			i++
			if tc.ctxDone {
				cancel()
			}
			return nil, err
		})(msg)
		cancel()
		if got := transport.RedeliveryDelay(msg); got != tc.want {
			t.Errorf("%s: redelivery delay %s (err %v), want %s", tc.name, got, err, tc.want)
		}
	}
}

// nackProbe wraps a transport's subscriber and records, for each message it
// delivers, the redelivery delay the message carries when the router nacks
// it: the delay must be on the very message the subscriber holds.
type nackProbe struct {
	transport.Transport
	mu     sync.Mutex
	delays map[string][]time.Duration // by receive count
}

func (p *nackProbe) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	in, err := p.Transport.Subscribe(ctx, queue)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for msg := range in {
			go func() {
				select {
				case <-msg.Nacked():
					p.mu.Lock()
					rc := msg.Metadata.Get(transport.MetadataReceiveCount)
					p.delays[rc] = append(p.delays[rc], transport.RedeliveryDelay(msg))
					p.mu.Unlock()
				case <-msg.Acked():
				case <-ctx.Done():
				}
			}()
			select {
			case out <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (p *nackProbe) get(rc string) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.delays[rc]...)
}

// Through the whole stack (Default: Poison outside Retry), the message the
// router nacks carries the delay, and the poisoned copy carries none.
func TestRedeliveryDelayOnNackedMessage(t *testing.T) {
	tr := newTransport(t)
	probe := &nackProbe{Transport: tr, delays: map[string][]time.Duration{}}
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond, Redelivery: &middleware.RedeliveryConfig{Delays: []time.Duration{300 * time.Millisecond, 600 * time.Millisecond}, NoJitter: true}},
		Poison: &middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: 3},
	})
	must(t, err)
	app := newApp(t, probe, tr, stack...)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error { return c.add(ctx, errFlaky) }))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	msg := receive(t, poisoned)
	if d, ok := msg.Metadata[transport.MetadataRedeliveryDelay]; ok {
		t.Errorf("poisoned copy carries %s %q", transport.MetadataRedeliveryDelay, d)
	}
	eventually(t, "two nacks", func() bool { return len(probe.get("1")) == 1 && len(probe.get("2")) == 1 })
	if d1, d2 := probe.get("1")[0], probe.get("2")[0]; d1 != 300*time.Millisecond || d2 != 600*time.Millisecond {
		t.Errorf("nacked with delays %s then %s, want 300ms then 600ms", d1, d2)
	}
	if n := len(probe.get("3")); n != 0 {
		t.Errorf("the last delivery was nacked %d times; want it poisoned and acked", n)
	}
}

// The transport honours the delay: a nacked message comes back only after
// it. Needs the memory transport's DelayedRedelivery (branch tdelay).
func TestRedeliveryDelayedOnMemory(t *testing.T) {
	tr := newTransport(t)
	if !tr.Features().DelayedRedelivery {
		t.Errorf("memory transport does not declare DelayedRedelivery: the assertions below fail until it does")
	}
	const delay = 700 * time.Millisecond
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 1, Redelivery: &middleware.RedeliveryConfig{Delays: []time.Duration{delay}, NoJitter: true}}))
	app := newApp(t, tr, nil, retry)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		if c.n() == 0 {
			return c.add(ctx, errFlaky)
		}
		return c.add(ctx, nil)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	eventually(t, "redelivery", func() bool { return c.n() == 2 })
	got := c.all()
	if gap := got[1].At.Sub(got[0].At); gap < delay {
		t.Errorf("redelivered %s after the failed delivery, want >= %s", gap, delay)
	}
	if got[1].ReceiveCount != "2" {
		t.Errorf("second call on receive count %q, want 2", got[1].ReceiveCount)
	}
}

// outage runs the orders example's stack and queues (Retry 3 attempts of
// 10-100ms, Poison on the 3rd delivery, DLQ after 5 receives) with
// schedule, publishes n events to a handler that fails until the outage
// has lasted for outage, and checks that every event is handled and none
// is poisoned or dead-lettered.
func outage(t *testing.T, tr transport.Transport, depth func(queue string) int, sched *middleware.RedeliveryConfig, outage time.Duration, n int, timeout time.Duration) {
	t.Helper()
	const maxDelivery = 3 // examples/orders main.go and orders_test.go
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Redelivery: sched},
		Poison: &middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: maxDelivery},
	})
	must(t, err)
	app := newApp(t, tr, nil, stack...)
	must(t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "work", VisibilityTimeout: 30 * time.Second, MaxReceiveCount: maxDelivery + 2}, Concurrency: 2}))
	must(t, app.DeclareQueue(middleware.PoisonQueue(poisonQueue, poisonTopic)))
	var mu sync.Mutex
	var upAt time.Time
	done := map[string]bool{}
	var failures int
	maxCount := 0
	must(t, eda.Handle(app, "work", func(ctx context.Context, e placed) error {
		mu.Lock()
		defer mu.Unlock()
		msg, _ := eda.MessageFromContext(ctx)
		rc, _ := strconv.Atoi(msg.Metadata.Get(transport.MetadataReceiveCount))
		maxCount = max(maxCount, rc)
		if time.Now().Before(upAt) {
			failures++
			return errFlaky
		}
		done[e.ID] = true
		return nil
	}))
	start(t, app)
	mu.Lock()
	began := time.Now()
	upAt = began.Add(outage)
	mu.Unlock()
	for i := range n {
		must(t, app.Publish(context.Background(), placed{ID: strconv.Itoa(i)}))
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond) // polling the handler's record and the queues' depth
	defer tick.Stop()
	for ; ; <-tick.C {
		mu.Lock()
		handled := len(done)
		mu.Unlock()
		if handled == n {
			break
		}
		if lost := depth(poisonQueue) + depth("work-dlq"); lost > 0 || time.Now().After(deadline) {
			t.Fatalf("%d of %d events handled, %d poisoned or dead-lettered, after %s (outage %s)", handled, n, lost, time.Since(began).Round(time.Millisecond), outage)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("outage of %s: all %d events handled %s after it began, %d failed calls, at most %d deliveries; poison queue %d, DLQ %d",
		outage, n, time.Since(began).Round(time.Millisecond), failures, maxCount, depth(poisonQueue), depth("work-dlq"))
	if lost := depth(poisonQueue) + depth("work-dlq"); lost > 0 {
		t.Errorf("%d events poisoned or dead-lettered", lost)
	}
}

// A handler that fails for 2s and recovers loses nothing, with the default
// schedule scaled from minutes to seconds. Needs delayed redelivery in the
// memory transport (branch tdelay).
func TestRedeliveryOutageMemory(t *testing.T) {
	tr := newTransport(t)
	depth := func(q string) int { v, f, _ := tr.Depth(q); return v + f }
	outage(t, tr, depth, &middleware.RedeliveryConfig{Initial: time.Second}, 2*time.Second, 20, 20*time.Second)
}

// The same on the Postgres transport.
func TestRedeliveryOutagePostgres(t *testing.T) {
	e := newPGEnv(t)
	depth := func(q string) int { v, f, _ := e.tr.Depth(context.Background(), q); return v + f }
	outage(t, e.tr, depth, &middleware.RedeliveryConfig{Initial: time.Second}, 2*time.Second, 20, 20*time.Second)
}
