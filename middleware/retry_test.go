package middleware_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

var errFlaky = errors.New("flaky")

func TestRetryInProcessThenSucceeds(t *testing.T) {
	tr := newTransport(t)
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, InitialInterval: time.Millisecond, NoJitter: true}))
	app := newApp(t, tr, nil, retry)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		if c.n() < 2 {
			return c.add(ctx, errFlaky)
		}
		return c.add(ctx, nil)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	drained(t, tr, "q")
	got := c.all()
	if len(got) != 3 {
		t.Fatalf("%d calls, want 3", len(got))
	}
	for i, cl := range got {
		if cl.ReceiveCount != "1" {
			t.Errorf("call %d: receive count %s, want 1 (retried in process, not redelivered)", i, cl.ReceiveCount)
		}
	}
}

func TestRetryExhaustedHandsBackToBroker(t *testing.T) {
	tr := newTransport(t)
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond, NoJitter: true}))
	app := newApp(t, tr, nil, retry)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		if c.n() < 3 {
			return c.add(ctx, errFlaky)
		}
		return c.add(ctx, nil)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	drained(t, tr, "q")
	var counts []string
	for _, cl := range c.all() {
		counts = append(counts, cl.ReceiveCount)
	}
	// Two attempts on delivery 1, nack, then delivery 2 fails once and succeeds.
	want := []string{"1", "1", "2", "2"}
	if !slices.Equal(counts, want) {
		t.Fatalf("receive counts of calls %v, want %v", counts, want)
	}
}

func TestRetrySkipsPermanentErrors(t *testing.T) {
	tr := newTransport(t)
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 5, InitialInterval: time.Millisecond}))
	inner := &strlog{} // receive counts seen inside Retry, also for messages that never reach the handler
	probe := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			inner.add(msg.Metadata.Get("eda_receivecount") + "/" + msg.Metadata.Get(eda.MetadataType))
			return h(msg)
		}
	}
	app := newApp(t, tr, nil, retry, probe)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		if c.n() == 0 {
			return c.add(ctx, eda.Permanent(errors.New("no such customer")))
		}
		return c.add(ctx, nil)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	drained(t, tr, "q")
	// A permanent error is not retried in process: without Poison it goes
	// back to the broker once per delivery.
	if got := c.all(); len(got) != 2 || got[0].ReceiveCount != "1" || got[1].ReceiveCount != "2" {
		t.Fatalf("calls %+v, want one per delivery", got)
	}
	// A payload that cannot be decoded is an *eda.MessageError: permanent.
	bad := message.NewMessage("bad-1", []byte("{not json"))
	bad.Metadata = message.Metadata{eda.MetadataID: "bad-1", eda.MetadataType: placed{}.EventName(), eda.MetadataSchemaVersion: "1"}
	must(t, tr.Publish(placedTopic, bad))
	eventually(t, "bad message delivered twice", func() bool { return inner.count("2/test.Placed") >= 2 })
	if n := inner.count("1/test.Placed"); n != 2 {
		t.Errorf("first deliveries seen inside Retry: %d, want 2 (one per message, no in-process retry): %v", n, inner.all())
	}
}

func TestRetryBackoffAndMaxElapsed(t *testing.T) {
	tr := newTransport(t)
	// Waits of 30ms then 60ms: with MaxElapsed 70ms the third attempt would
	// start at ~90ms, so it is not made.
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{
		MaxAttempts: 10, InitialInterval: 30 * time.Millisecond, Multiplier: 2, NoJitter: true, MaxElapsed: 70 * time.Millisecond,
	}))
	app := newApp(t, tr, nil, retry)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		if c.n() < 3 {
			return c.add(ctx, errFlaky)
		}
		return c.add(ctx, nil)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	drained(t, tr, "q")
	got := c.all()
	if len(got) != 4 {
		t.Fatalf("%d calls, want 4", len(got))
	}
	if got[0].ReceiveCount != "1" || got[1].ReceiveCount != "1" || got[2].ReceiveCount != "2" {
		t.Errorf("receive counts %s %s %s, want 1 1 2 (two attempts fit in MaxElapsed)", got[0].ReceiveCount, got[1].ReceiveCount, got[2].ReceiveCount)
	}
	if gap := got[1].At.Sub(got[0].At); gap < 30*time.Millisecond {
		t.Errorf("first retry after %s, want >= 30ms", gap)
	}
	if gap := got[3].At.Sub(got[2].At); gap < 30*time.Millisecond {
		t.Errorf("retry on the second delivery after %s, want >= 30ms (backoff restarts per delivery)", gap)
	}
}

func TestRetryJitterSpreadsWaits(t *testing.T) {
	// Called directly: the spread of waits is a property of one delivery.
	// Without jitter every wait is at least 10ms (timers never fire early);
	// with Jitter 0.9 it is uniform in [1ms, 19ms], so among 20 waits one
	// under 8ms is all but certain (a miss has probability 0.61^20 < 1e-4).
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 2, InitialInterval: 10 * time.Millisecond, Jitter: 0.9}))
	var gaps []time.Duration
	for range 20 {
		var first time.Time
		h := retry(func(msg *message.Message) ([]*message.Message, error) {
			if first.IsZero() {
				first = time.Now()
				return nil, errFlaky
			}
			gaps = append(gaps, time.Since(first))
			return nil, nil
		})
		if _, err := h(message.NewMessage("m", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if slices.Min(gaps) >= 8*time.Millisecond {
		t.Errorf("no wait under 8ms among %v: no jitter", gaps)
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 5, InitialInterval: time.Hour, MaxInterval: time.Hour, MaxElapsed: 2 * time.Hour}))
	ctx, cancel := context.WithCancel(context.Background())
	msg := message.NewMessage("m", nil)
	msg.SetContext(ctx)
	n := 0
	h := retry(func(msg *message.Message) ([]*message.Message, error) {
		n++
		cancel()
		return nil, errFlaky
	})
	_, err := h(msg)
	if !errors.Is(err, errFlaky) || !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("err %v after %d calls, want flaky and canceled after 1", err, n)
	}
}

func TestRetryConfigValidate(t *testing.T) {
	for name, cfg := range map[string]middleware.RetryConfig{
		"negative attempts": {MaxAttempts: -1},
		"negative interval": {InitialInterval: -time.Second},
		"max < initial":     {InitialInterval: time.Second, MaxInterval: time.Millisecond},
		"multiplier < 1":    {Multiplier: 0.5},
		"jitter > 1":        {Jitter: 1.5},
	} {
		if _, err := middleware.Retry(cfg); !errors.Is(err, middleware.ErrInvalidConfig) {
			t.Errorf("%s: err %v, want ErrInvalidConfig", name, err)
		}
	}
	err := middleware.RetryConfig{MaxAttempts: -1, Jitter: 2}.Validate()
	if err == nil || len(err.(interface{ Unwrap() []error }).Unwrap()) != 2 {
		t.Errorf("Validate joins every problem: %v", err)
	}
}
