package middleware_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

func TestRecoverTurnsPanicIntoError(t *testing.T) {
	cause := errors.New("nil map")
	for name, v := range map[string]any{"string": "boom", "error": cause} {
		_, err := middleware.Recover(func(*message.Message) ([]*message.Message, error) { panic(v) })(message.NewMessage("m", nil))
		var pe *middleware.PanicError
		if !errors.As(err, &pe) || !errors.Is(err, middleware.ErrPanic) || pe.Value != v {
			t.Fatalf("%s: err %v", name, err)
		}
		if !strings.Contains(string(pe.Stack), "recover_test.go") || !strings.Contains(err.Error(), "recover_test.go") {
			t.Errorf("%s: stack does not show the panicking function:\n%s", name, pe.Stack)
		}
		if eda.IsPermanent(err) {
			t.Errorf("%s: a panic is transient", name)
		}
		if v == cause && !errors.Is(err, cause) {
			t.Errorf("panic(err) does not unwrap to err")
		}
	}
}

// TestRecoverPanicIsRetriedThenPoisoned: a handler that panics on every
// call goes through Retry and then Poison, with the stack in the reason.
func TestRecoverPanicIsRetriedThenPoisoned(t *testing.T) {
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 3, InitialInterval: time.Millisecond},
		Poison: &middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: 1},
	})
	must(t, err)
	app := newApp(t, tr, nil, stack...)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		_ = c.add(ctx, nil)
		var m map[string]int
		m["x"] = 1 // panics
		return nil
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	msg := receive(t, poisoned)
	drained(t, tr, "q")
	text := msg.Metadata.Get(middleware.MetadataPoisonError)
	if c.n() != 3 || msg.Metadata.Get(middleware.MetadataPoisonAttempts) != "3" ||
		!strings.Contains(text, "panic: assignment to entry in nil map") || !strings.Contains(text, "goroutine") {
		t.Errorf("%d calls; poisoned with %v", c.n(), msg.Metadata)
	}
}
