package inboxtest

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware/inbox"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

// Charged is the event of the middleware suite.
type Charged struct {
	Order string `json:"order"`
}

// EventName implements eda.Event.
func (Charged) EventName() string { return "inboxtest.Charged" }

// RunMiddleware runs the standalone inbox middleware (inbox.New) on a store
// from newStore, through an eda.App on the memory transport: duplicates are
// skipped, a failed handler's redelivery is applied, concurrent duplicate
// deliveries apply the effect once, and a handler stopped mid-effect runs
// again after a restart.
func RunMiddleware(t *testing.T, newStore func(t *testing.T) inbox.Store) {
	t.Run("DuplicateSkipped", func(t *testing.T) {
		f := newFixture(t, newStore(t), 1)
		f.handle(func(ctx context.Context, e Charged) error { f.effects.Add(1); return nil })
		f.start()
		msg := f.message("o-1")
		f.publish(msg, msg) // two deliveries of one event
		f.drained()
		if f.effects.Load() != 1 {
			t.Errorf("effect applied %d times, want 1", f.effects.Load())
		}
	})

	t.Run("FailedHandlerRedeliveryApplied", func(t *testing.T) {
		// Watermill's Deduplicator records the key before the handler runs,
		// so this redelivery would be dropped; eda's inbox marks after
		// success and releases the claim on failure.
		f := newFixture(t, newStore(t), 1)
		var calls atomic.Int32
		f.handle(func(ctx context.Context, e Charged) error {
			if calls.Add(1) == 1 {
				return errors.New("payment provider down")
			}
			f.effects.Add(1)
			return nil
		})
		f.start()
		f.publish(f.message("o-1"))
		f.drained()
		if f.effects.Load() != 1 || calls.Load() != 2 {
			t.Errorf("effect applied %d times in %d calls, want 1 in 2", f.effects.Load(), calls.Load())
		}
	})

	t.Run("ConcurrentDuplicatesAppliedOnce", func(t *testing.T) {
		const copies = 4
		f := newFixture(t, newStore(t), copies)
		f.handle(func(ctx context.Context, e Charged) error {
			// Hold the effect (and the inbox's claim) until another
			// delivery of the event has found it busy, so the duplicates
			// are truly concurrent. Waiting only for a second delivery to
			// arrive let this one finish before the other claimed, which
			// then found the event done, not busy.
			if !waitUntil(ctx, func() bool { return f.busy.Load() >= 1 }) {
				return errors.New("no concurrent delivery arrived")
			}
			f.effects.Add(1)
			return nil
		})
		f.start()
		msg := f.message("o-1")
		f.publish(msg, msg, msg, msg)
		f.drained()
		if f.effects.Load() != 1 {
			t.Errorf("effect applied %d times, want 1", f.effects.Load())
		}
		if f.busy.Load() == 0 {
			t.Error("no delivery found the event busy: the duplicates did not overlap")
		}
	})

	t.Run("StoppedMidEffectRunsAgainAfterRestart", func(t *testing.T) {
		f := newFixture(t, newStore(t), 1)
		inHandler := make(chan struct{})
		f.handle(func(ctx context.Context, e Charged) error {
			close(inHandler)
			<-ctx.Done() // the process is stopping
			return ctx.Err()
		})
		stop := f.start()
		f.publish(f.message("o-1"))
		<-inHandler
		stop()
		// Restart: a new app on the same broker and store.
		f2 := f.restart(t)
		f2.handle(func(ctx context.Context, e Charged) error { f2.effects.Add(1); return nil })
		f2.start()
		f2.drained()
		if f2.effects.Load() != 1 {
			t.Errorf("effect applied %d times after restart, want 1", f2.effects.Load())
		}
	})
}

type fixture struct {
	t           *testing.T
	tr          *memory.Transport
	store       inbox.Store
	app         *eda.App
	concurrency int
	effects     atomic.Int32
	entered     atomic.Int32 // deliveries that reached the inbox
	busy        atomic.Int32 // deliveries the inbox found busy
}

const queue = "billing"

func newFixture(t *testing.T, store inbox.Store, concurrency int) *fixture {
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	f := &fixture{t: t, tr: tr, store: store, concurrency: concurrency}
	f.newApp()
	return f
}

// restart returns a fixture with a new app on the same transport and store.
func (f *fixture) restart(t *testing.T) *fixture {
	g := &fixture{t: t, tr: f.tr, store: f.store, concurrency: f.concurrency}
	g.newApp()
	return g
}

func (f *fixture) newApp() {
	idem, err := inbox.New(inbox.Config{Store: f.store, Lease: time.Minute})
	if err != nil {
		f.t.Fatal(err)
	}
	probe := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			f.entered.Add(1)
			out, err := h(msg)
			if errors.Is(err, inbox.ErrBusy) {
				f.busy.Add(1)
			}
			return out, err
		}
	}
	app, err := eda.New(eda.Config{Transport: f.tr, Middleware: []message.HandlerMiddleware{probe, idem}, CloseTimeout: 5 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := eda.Register[Charged](app, "charges"); err != nil {
		f.t.Fatal(err)
	}
	if err := app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: queue}, Concurrency: f.concurrency}); err != nil {
		f.t.Fatal(err)
	}
	f.app = app
}

func (f *fixture) handle(fn func(context.Context, Charged) error) {
	if err := eda.Handle(f.app, queue, fn); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.app.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				f.t.Errorf("app.Run: %v", err)
			}
		})
	}
	f.t.Cleanup(stop)
	select {
	case <-f.app.Running():
	case err := <-done:
		f.t.Fatalf("app.Run: %v", err)
	}
	return stop
}

// message returns a message of a new Charged event.
func (f *fixture) message(order string) *message.Message {
	_, msg, err := f.app.NewMessage(context.Background(), Charged{Order: order})
	if err != nil {
		f.t.Fatal(err)
	}
	return msg
}

// publish publishes copies of msgs to the topic, as a broker delivering
// duplicates would.
func (f *fixture) publish(msgs ...*message.Message) {
	for _, m := range msgs {
		c := message.NewMessage(m.UUID, m.Payload)
		c.Metadata = maps.Clone(m.Metadata)
		if err := f.tr.Publish("charges", c); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) drained() {
	f.t.Helper()
	eventually(f.t, "queue drained", func() bool {
		v, fl, err := f.tr.Depth(queue)
		return err == nil && v == 0 && fl == 0
	})
}

// waitUntil polls cond until it holds (true) or ctx ends or 10s pass.
func waitUntil(ctx context.Context, cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}
