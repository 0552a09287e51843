package transport_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/transport"
)

type ping struct {
	N int `json:"n"`
}

func (ping) EventName() string { return "test.Ping" }

// Regression: with Concurrency 2 each consumer was a topic subscription of
// its own, so every message was handled twice.
func TestAdaptConcurrencyHandlesEachMessageOnce(t *testing.T) {
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	tr := transport.Adapt(ps, ps)
	t.Cleanup(func() { _ = tr.Close() })
	app, err := eda.New(eda.Config{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	must(t, eda.Register[ping](app, "pings"))
	must(t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "pinged"}, Concurrency: 2}))
	var mu sync.Mutex
	seen := map[int]int{}
	changed := make(chan struct{}, 100)
	must(t, eda.Handle(app, "pinged", func(ctx context.Context, p ping) error {
		mu.Lock()
		seen[p.N]++
		mu.Unlock()
		changed <- struct{}{}
		return nil
	}))
	edatest.Run(t, app)
	const n = 10
	for i := range n {
		must(t, app.Publish(context.Background(), ping{N: i}))
	}
	// The last message, published after the others were handled, comes
	// after any duplicate of them.
	deadline := time.After(5 * time.Second)
	handled := func() int {
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for _, c := range seen {
			total += c
		}
		return total
	}
	for handled() < n {
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("handled %d of %d", handled(), n)
		}
	}
	must(t, app.Publish(context.Background(), ping{N: n}))
	for {
		mu.Lock()
		last := seen[n]
		mu.Unlock()
		if last > 0 {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("the last message was not handled")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range n + 1 {
		if seen[i] != 1 {
			t.Errorf("message %d handled %d times, want once", i, seen[i])
		}
	}
}

// What Adapt cannot do is refused at Declare (so at app.Run), not ignored.
func TestAdaptRefusesWhatItLacks(t *testing.T) {
	for _, q := range []transport.Queue{
		{Name: "dlq", Topics: []string{"t"}, MaxReceiveCount: 3},
		{Name: "fifo", Topics: []string{"t"}, FIFO: true},
		{Name: "two", Topics: []string{"t", "u"}},
	} {
		t.Run(q.Name, func(t *testing.T) {
			ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
			tr := transport.Adapt(ps, ps)
			defer tr.Close()
			if err := tr.Declare(context.Background(), q); !errors.Is(err, transport.ErrInvalidConfig) {
				t.Fatalf("Declare %+v: got %v, want ErrInvalidConfig", q, err)
			}
		})
	}
	ps := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	tr := transport.Adapt(ps, ps)
	defer tr.Close()
	app, err := eda.New(eda.Config{Transport: tr})
	must(t, err)
	must(t, eda.Register[ping](app, "pings"))
	must(t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "pinged", MaxReceiveCount: 3}}))
	must(t, eda.Handle(app, "pinged", func(context.Context, ping) error { return nil }))
	if err := app.Run(context.Background()); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Fatalf("Run with a dead-letter queue on Adapt: got %v, want ErrInvalidConfig", err)
	} else {
		t.Log(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
