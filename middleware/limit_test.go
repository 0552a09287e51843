package middleware_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
)

// TestLimitConcurrency runs six consumers over two queues under a limit of
// two: never more than two handlers run, and two do.
func TestLimitConcurrency(t *testing.T) {
	tr := newTransport(t)
	lim, err := middleware.NewLimiter(middleware.LimitConfig{MaxConcurrent: 2})
	must(t, err)
	app := newApp(t, tr, nil, lim.Middleware)
	for _, q := range []string{"a", "b"} {
		must(t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: q}, Concurrency: 3}))
	}
	var active, peak, done atomic.Int32
	release := make(chan struct{})
	h := func(ctx context.Context, e placed) error {
		n := active.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		active.Add(-1)
		done.Add(1)
		return nil
	}
	must(t, eda.Handle(app, "a", h))
	must(t, eda.Handle(app, "b", h))
	start(t, app)
	for i := range 6 {
		must(t, app.Publish(context.Background(), placed{ID: string(rune('0' + i))}))
	}
	eventually(t, "two handlers running", func() bool { return active.Load() == 2 })
	close(release)
	eventually(t, "all handled", func() bool { return done.Load() == 12 })
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrency %d, want 2", p)
	}
}

func TestLimitRate(t *testing.T) {
	lim, err := middleware.NewLimiter(middleware.LimitConfig{Rate: 100})
	must(t, err)
	h := lim.Middleware(func(*message.Message) ([]*message.Message, error) { return nil, nil })
	start := time.Now()
	for range 6 {
		if _, err := h(message.NewMessage("m", nil)); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("6 calls at 100/s took %s, want >= 50ms", el)
	}
}

func TestLimitGivesUpWhenContextEnds(t *testing.T) {
	lim, err := middleware.NewLimiter(middleware.LimitConfig{MaxConcurrent: 1})
	must(t, err)
	hold := make(chan struct{})
	entered := make(chan struct{})
	h := lim.Middleware(func(*message.Message) ([]*message.Message, error) { close(entered); <-hold; return nil, nil })
	go func() { _, _ = h(message.NewMessage("a", nil)) }()
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	msg := message.NewMessage("b", nil)
	msg.SetContext(ctx)
	errc := make(chan error, 1)
	go func() { _, err := h(msg); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	close(hold)
}

func TestLimitConfigValidate(t *testing.T) {
	for _, cfg := range []middleware.LimitConfig{{}, {MaxConcurrent: -1}, {Rate: -1}} {
		if _, err := middleware.NewLimiter(cfg); !errors.Is(err, middleware.ErrInvalidConfig) {
			t.Errorf("%+v: err %v", cfg, err)
		}
	}
}
