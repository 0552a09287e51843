package inbox_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware/inbox"
	"github.com/edaproject/eda/middleware/inbox/inboxtest"
	"github.com/edaproject/eda/transport/memory"
)

// TestFailedRedeliveryVersusWatermillDeduplicator runs one scenario — the
// handler fails on the first delivery, succeeds on the second — under
// Watermill's Deduplicator and under eda's inbox. The Deduplicator records
// the message before the handler runs and drops the redelivery: the effect
// is lost. The inbox applies it.
func TestFailedRedeliveryVersusWatermillDeduplicator(t *testing.T) {
	run := func(t *testing.T, idem message.HandlerMiddleware) (effects, calls int32) {
		tr, err := memory.New(memory.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		app, err := eda.New(eda.Config{Transport: tr, Middleware: []message.HandlerMiddleware{idem}})
		if err != nil {
			t.Fatal(err)
		}
		must(t, eda.Register[inboxtest.Charged](app, "charges"))
		var nEffects, nCalls atomic.Int32
		must(t, eda.Handle(app, "billing", func(ctx context.Context, e inboxtest.Charged) error {
			if nCalls.Add(1) == 1 {
				return errors.New("payment provider down")
			}
			nEffects.Add(1)
			return nil
		}))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- app.Run(ctx) }()
		<-app.Running()
		must(t, app.Publish(context.Background(), inboxtest.Charged{Order: "o-1"}))
		eventually(t, "queue drained", func() bool {
			v, f, _ := tr.Depth("billing")
			return v == 0 && f == 0 && nCalls.Load() > 0
		})
		cancel()
		must(t, <-done)
		return nEffects.Load(), nCalls.Load()
	}

	dedup := &wmw.Deduplicator{KeyFactory: wmw.NewMessageHasherFromMetadataField(eda.MetadataID)}
	if effects, calls := run(t, dedup.Middleware); effects != 0 || calls != 1 {
		t.Errorf("Watermill Deduplicator: %d effects in %d calls; expected the redelivery dropped (0 in 1)", effects, calls)
	}
	idem, err := inbox.New(inbox.Config{Store: inbox.NewMemory()})
	must(t, err)
	if effects, calls := run(t, idem); effects != 1 || calls != 2 {
		t.Errorf("eda inbox: %d effects in %d calls, want 1 in 2", effects, calls)
	}
}

func TestMessageWithoutEventIDIsPermanent(t *testing.T) {
	idem, err := inbox.New(inbox.Config{Store: inbox.NewMemory()})
	must(t, err)
	called := false
	_, err = idem(func(*message.Message) ([]*message.Message, error) { called = true; return nil, nil })(message.NewMessage("m", nil))
	if !errors.Is(err, inbox.ErrNoEventID) || !eda.IsPermanent(err) || called {
		t.Errorf("err %v, handler called %v", err, called)
	}
}

func TestConfigValidate(t *testing.T) {
	if _, err := inbox.New(inbox.Config{Lease: -time.Second}); !errors.Is(err, inbox.ErrInvalidConfig) {
		t.Errorf("New: %v", err)
	}
	err := inbox.RunExpiry(context.Background(), nil, inbox.ExpiryConfig{})
	if !errors.Is(err, inbox.ErrInvalidConfig) {
		t.Errorf("RunExpiry: %v", err)
	}
}

func TestRunExpiry(t *testing.T) {
	s := inbox.NewMemory()
	ctx := context.Background()
	k := inbox.Key{Consumer: "c", EventID: "e"}
	c, err := s.Claim(ctx, k, time.Hour)
	must(t, err)
	must(t, s.Complete(ctx, k, c.Token))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- inbox.RunExpiry(rctx, s, inbox.ExpiryConfig{Retention: time.Millisecond, Interval: time.Millisecond})
	}()
	eventually(t, "the mark expired", func() bool {
		c, err := s.Claim(ctx, k, time.Hour)
		must(t, err)
		return c.State == inbox.Acquired
	})
	cancel()
	must(t, <-done)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestBusyIsDeferred(t *testing.T) {
	s := inbox.NewMemory()
	idem, err := inbox.New(inbox.Config{Store: s, Consumer: "c"})
	must(t, err)
	_, err = s.Claim(context.Background(), inbox.Key{Consumer: "c", EventID: "e"}, time.Hour)
	must(t, err)
	msg := message.NewMessage("m", nil)
	msg.Metadata.Set(eda.MetadataID, "e")
	_, err = idem(func(*message.Message) ([]*message.Message, error) { return nil, nil })(msg)
	d, ok := errors.AsType[interface {
		error
		Deferred() bool
	}](err)
	if !errors.Is(err, inbox.ErrBusy) || !ok || !d.Deferred() || eda.IsPermanent(err) {
		t.Errorf("busy error %v", err)
	}
}
