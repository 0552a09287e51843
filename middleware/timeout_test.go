package middleware_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

// TestTimeoutPerAttempt: inside Retry each attempt gets a fresh deadline,
// so the attempt after a timeout is not born cancelled.
func TestTimeoutPerAttempt(t *testing.T) {
	tr := newTransport(t)
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond}))
	timeout := mustMW(t)(middleware.Timeout(middleware.TimeoutConfig{Default: 20 * time.Millisecond}))
	var errs strlog
	see := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err != nil {
				errs.add(err.Error())
				if !errors.Is(err, middleware.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error %v, want ErrTimeout wrapping DeadlineExceeded", err)
				}
			}
			return out, err
		}
	}
	app := newApp(t, tr, nil, retry, see, timeout)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		if ctx.Err() != nil {
			return c.add(ctx, errors.New("attempt started with a dead context"))
		}
		if c.n() == 0 {
			<-ctx.Done()
			return c.add(ctx, ctx.Err())
		}
		return c.add(ctx, nil)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	drained(t, tr, "q")
	got := c.all()
	if len(got) != 2 || got[1].Err != nil || got[1].ReceiveCount != "1" {
		t.Errorf("calls %+v, want a timeout then a success on one delivery", got)
	}
	if len(errs.all()) != 1 {
		t.Errorf("errors %v", errs.all())
	}
}

func TestTimeoutPerQueue(t *testing.T) {
	tr := newTransport(t)
	timeout := mustMW(t)(middleware.Timeout(middleware.TimeoutConfig{
		Default:  time.Hour,
		PerQueue: map[string]time.Duration{"fast": 10 * time.Millisecond, "exempt": 0},
	}))
	app := newApp(t, tr, nil, timeout)
	deadlines := make(chan string, 3)
	report := func(q string) func(ctx context.Context, e placed) error {
		return func(ctx context.Context, e placed) error {
			d, ok := ctx.Deadline()
			switch {
			case !ok:
				deadlines <- q + ":none"
			case time.Until(d) < time.Second:
				deadlines <- q + ":short"
			default:
				deadlines <- q + ":long"
			}
			return nil
		}
	}
	must(t, eda.Handle(app, "fast", report("fast")))
	must(t, eda.Handle(app, "exempt", report("exempt")))
	must(t, eda.Handle(app, "other", report("other")))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	got := map[string]bool{}
	for range 3 {
		select {
		case d := <-deadlines:
			got[d] = true
		case <-time.After(waitTimeout):
			t.Fatal("not every queue handled")
		}
	}
	for _, want := range []string{"fast:short", "exempt:none", "other:long"} {
		if !got[want] {
			t.Errorf("deadlines %v, missing %s", got, want)
		}
	}
}

func TestTimeoutConfigValidate(t *testing.T) {
	_, err := middleware.Timeout(middleware.TimeoutConfig{Default: -1, PerQueue: map[string]time.Duration{"q": -1}})
	if !errors.Is(err, middleware.ErrInvalidConfig) {
		t.Errorf("err %v", err)
	}
}
