package eda_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

// featurePub is a publisher that declares features and records what it is
// given.
type featurePub struct {
	f    transport.Features
	mu   sync.Mutex
	msgs []*message.Message
}

func (p *featurePub) Features() transport.Features { return p.f }
func (p *featurePub) Close() error                 { return nil }
func (p *featurePub) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, msgs...)
	return nil
}

func (p *featurePub) published() []*message.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*message.Message(nil), p.msgs...)
}

func delayApp(t *testing.T, pub message.Publisher) *eda.App {
	t.Helper()
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	app, err := eda.New(eda.Config{Transport: tr, Publisher: pub, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	must(t, eda.Register[orderPlaced](app, "orders"))
	return app
}

func TestNewMessageDelayed(t *testing.T) {
	app := delayApp(t, nil)
	ctx := context.Background()
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	before := time.Now()
	for name, tc := range map[string]struct {
		e        eda.Event
		min, max time.Time
	}{
		"At":          {eda.At(at, orderPlaced{"o"}), at, at},
		"After":       {eda.After(time.Hour, orderPlaced{"o"}), before.Add(time.Hour), time.Now().Add(time.Hour + time.Minute)},
		"pointer":     {&eda.Delayed{Event: orderPlaced{"o"}, At: at}, at, at},
		"nested":      {eda.At(at.Add(-time.Hour), eda.At(at, orderPlaced{"o"})), at, at},
		"At the past": {eda.At(before.Add(-time.Hour), orderPlaced{"o"}), before.Add(-time.Hour), before.Add(-time.Hour)},
	} {
		topic, msg, err := app.NewMessage(ctx, tc.e)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		got, ok, err := transport.DeliverAt(msg)
		if err != nil || !ok || got.Before(tc.min) || got.After(tc.max) {
			t.Errorf("%s: deliver at %v (%v, %v), want in [%v, %v]", name, got, ok, err, tc.min, tc.max)
		}
		if topic != "orders" || msg.Metadata.Get(eda.MetadataType) != "test.OrderPlaced" || string(msg.Payload) != `{"order_id":"o"}` {
			t.Errorf("%s: topic %q type %q payload %s: not the wrapped event's", name, topic, msg.Metadata.Get(eda.MetadataType), msg.Payload)
		}
	}
	_, msg, err := app.NewMessage(ctx, orderPlaced{"o"})
	if err != nil || msg.Metadata.Get(transport.MetadataDeliverAt) != "" {
		t.Errorf("an undelayed event has %s %q (%v)", transport.MetadataDeliverAt, msg.Metadata.Get(transport.MetadataDeliverAt), err)
	}
}

func TestDelayedBadInput(t *testing.T) {
	pub := &featurePub{f: transport.Features{DelayedDelivery: true}}
	app := delayApp(t, pub)
	ctx := context.Background()
	for name, e := range map[string]eda.Event{
		"negative After": eda.After(-time.Second, orderPlaced{"o"}),
		"zero-time At":   eda.Delayed{Event: orderPlaced{"o"}, At: time.Time{}, After: -1},
		"both":           eda.Delayed{Event: orderPlaced{"o"}, At: time.Now(), After: time.Second},
		"nil event":      eda.After(time.Second, nil),
	} {
		if _, _, err := app.NewMessage(ctx, e); !errors.Is(err, eda.ErrInvalidConfig) {
			t.Errorf("%s: NewMessage = %v, want ErrInvalidConfig", name, err)
		}
		if err := app.Publish(ctx, orderPlaced{"first"}, e); !errors.Is(err, eda.ErrInvalidConfig) {
			t.Errorf("%s: Publish = %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, _, err := app.NewMessage(ctx, eda.After(time.Second, unregistered{})); !errors.Is(err, eda.ErrUnregisteredEvent) {
		t.Errorf("delayed unregistered event: %v, want ErrUnregisteredEvent", err)
	}
	if n := len(pub.published()); n != 0 {
		t.Errorf("%d messages published from bad input", n)
	}
}

// Publish honours the publisher's features: a delay it cannot honour fails
// with ErrDelayUnsupported and nothing of the call is published.
func TestPublishDelayedFeatures(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		f       transport.Features
		delay   time.Duration
		wantErr bool
	}{
		"no delayed delivery":       {transport.Features{}, time.Minute, true},
		"over the maximum":          {transport.Features{DelayedDelivery: true, MaxDeliveryDelay: 15 * time.Minute}, 16 * time.Minute, true},
		"within the maximum":        {transport.Features{DelayedDelivery: true, MaxDeliveryDelay: 15 * time.Minute}, 14 * time.Minute, false},
		"no maximum":                {transport.Features{DelayedDelivery: true}, 30 * 24 * time.Hour, false},
		"zero delay, no support":    {transport.Features{}, 0, false},
		"due already, over maximum": {transport.Features{DelayedDelivery: true, MaxDeliveryDelay: time.Second}, -time.Hour, false},
	} {
		pub := &featurePub{f: tc.f}
		app := delayApp(t, pub)
		var e eda.Event = eda.After(tc.delay, orderPlaced{"o"})
		if tc.delay < 0 {
			e = eda.At(time.Now().Add(tc.delay), orderPlaced{"o"})
		}
		err := app.Publish(ctx, orderPlaced{"first"}, e)
		switch {
		case tc.wantErr && !errors.Is(err, transport.ErrDelayUnsupported):
			t.Errorf("%s: Publish = %v, want ErrDelayUnsupported", name, err)
		case tc.wantErr && len(pub.published()) != 0:
			t.Errorf("%s: %d messages published despite the error", name, len(pub.published()))
		case !tc.wantErr && (err != nil || len(pub.published()) != 2):
			t.Errorf("%s: Publish = %v, %d published; want both", name, err, len(pub.published()))
		case !tc.wantErr:
			if _, ok, _ := transport.DeliverAt(pub.published()[1]); !ok {
				t.Errorf("%s: the delayed message has no %s", name, transport.MetadataDeliverAt)
			}
		}
		if err := app.Publish(ctx, e); tc.wantErr != (err != nil) {
			t.Errorf("%s: single Publish = %v, want error %v", name, err, tc.wantErr)
		}
	}
}

// Without a Publisher of its own, the app checks the transport's features.
func TestPublishDelayedTransportFeatures(t *testing.T) {
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	app, err := eda.New(eda.Config{Transport: tr, Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	must(t, eda.Register[orderPlaced](app, "orders"))
	f := tr.Features()
	const d = time.Hour
	err = app.Publish(context.Background(), eda.After(d, orderPlaced{"o"}))
	if ok := f.DelayedDelivery && (f.MaxDeliveryDelay == 0 || f.MaxDeliveryDelay >= d); ok != (err == nil) || (err != nil && !errors.Is(err, transport.ErrDelayUnsupported)) {
		t.Errorf("Publish(After(%s)) on a transport with %+v = %v", d, f, err)
	}
}
