package middleware_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

// TestDefaultOrderMatters runs two failures that the default stack
// recovers from in process — an error on the first call, and a panic on
// the first call — under Default's order and under the same middleware
// reversed. Poison is set to poison on the first delivery, so a failure
// Retry does not absorb is poisoned at once.
func TestDefaultOrderMatters(t *testing.T) {
	type outcome struct {
		calls    []call
		poisoned bool
	}
	run := func(t *testing.T, reverse bool, fail func(n int) error) outcome {
		tr := newTransport(t)
		poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
		stack, err := middleware.Default(middleware.Config{
			Retry:  middleware.RetryConfig{MaxAttempts: 3, InitialInterval: time.Millisecond},
			Poison: &middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: 1},
		})
		must(t, err)
		if reverse {
			stack = slices.Clone(stack)
			slices.Reverse(stack)
		}
		app := newApp(t, tr, nil, stack...)
		c := newCalls()
		var n atomic.Int32
		must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
			err := fail(int(n.Add(1)) - 1) // calls that panic are not recorded
			return c.add(ctx, err)
		}))
		start(t, app)
		must(t, app.Publish(context.Background(), placed{ID: "1"}))
		drained(t, tr, "q")
		var out outcome
		select {
		case msg := <-poisoned:
			msg.Ack()
			out.poisoned = true
		default:
		}
		out.calls = c.all()
		return out
	}
	errOnce := func(n int) error {
		if n == 0 {
			return errFlaky
		}
		return nil
	}
	panicOnce := func(n int) error {
		if n == 0 {
			panic("first call panics")
		}
		return nil
	}

	t.Run("error, default order", func(t *testing.T) {
		o := run(t, false, errOnce)
		if o.poisoned || len(o.calls) != 2 || o.calls[1].Err != nil {
			t.Errorf("poisoned %v, calls %+v: want retried in process and handled", o.poisoned, o.calls)
		}
	})
	t.Run("error, reversed", func(t *testing.T) {
		o := run(t, true, errOnce)
		if !o.poisoned || len(o.calls) != 1 {
			t.Errorf("poisoned %v, calls %+v: Poison inside Retry poisons before any retry", o.poisoned, o.calls)
		}
	})
	t.Run("panic, default order", func(t *testing.T) {
		o := run(t, false, panicOnce)
		if o.poisoned || len(o.calls) != 1 || o.calls[0].ReceiveCount != "1" {
			t.Errorf("poisoned %v, calls %+v: want the panic retried in process and handled", o.poisoned, o.calls)
		}
	})
	t.Run("panic, reversed", func(t *testing.T) {
		o := run(t, true, panicOnce)
		if o.poisoned || len(o.calls) != 1 || o.calls[0].ReceiveCount != "2" {
			t.Errorf("poisoned %v, calls %+v: with Recover outermost the panic skips Retry and Poison and the broker redelivers", o.poisoned, o.calls)
		}
	})
}

func TestDefaultConfigErrorsJoined(t *testing.T) {
	_, err := middleware.Default(middleware.Config{
		Retry:   middleware.RetryConfig{MaxAttempts: -1},
		Poison:  &middleware.PoisonConfig{},
		Limit:   &middleware.LimitConfig{},
		Timeout: middleware.TimeoutConfig{Default: -time.Second},
	})
	if !errors.Is(err, middleware.ErrInvalidConfig) || len(err.(interface{ Unwrap() []error }).Unwrap()) < 4 {
		t.Errorf("err %v", err)
	}
}

func TestDefaultMinimal(t *testing.T) {
	stack, err := middleware.Default(middleware.Config{})
	must(t, err)
	// Logging, Breaker, Retry, Recover.
	if len(stack) != 4 {
		t.Errorf("%d middleware, want 4", len(stack))
	}
	stack, err = middleware.Default(middleware.Config{Breaker: middleware.BreakerConfig{Off: true}})
	must(t, err)
	if len(stack) != 3 {
		t.Errorf("breaker off: %d middleware, want 3", len(stack))
	}
	var _ []message.HandlerMiddleware = stack
}
