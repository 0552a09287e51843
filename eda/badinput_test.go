package eda_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/transport"
)

type placedV2 struct {
	OrderID string `json:"order_id"`
	Qty     int    `json:"qty"`
}

func (placedV2) EventName() string  { return "test.OrderPlaced" }
func (placedV2) SchemaVersion() int { return 2 }

// rawMessage builds a message with an eda envelope around an arbitrary payload.
func rawMessage(typ, version, payload string) *message.Message {
	m := message.NewMessage("raw-"+typ+version+payload, []byte(payload))
	env := eda.Envelope{ID: m.UUID, Source: "test", Type: typ, ContentType: "application/json"}
	env.Apply(m.Metadata)
	m.Metadata.Set(eda.MetadataSchemaVersion, version)
	return m
}

func TestBadMessagesFailWithTypedPermanentErrors(t *testing.T) {
	cases := []struct {
		name string
		msg  *message.Message
		want error
	}{
		{"unknown event", rawMessage("test.Nobody", "1", `{}`), eda.ErrUnknownEvent},
		{"no envelope", message.NewMessage("bare", []byte(`{}`)), eda.ErrUnknownEvent},
		{"malformed payload", rawMessage("test.OrderPlaced", "1", `{"order_id":`), eda.ErrDecode},
		{"wrong field type", rawMessage("test.OrderPlaced", "1", `{"qty":"many"}`), eda.ErrDecode},
		{"newer schema", rawMessage("test.OrderPlaced", "3", `{}`), eda.ErrSchemaVersion},
		{"bad schema version", rawMessage("test.OrderPlaced", "x", `{}`), eda.ErrSchemaVersion},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := edatest.New(t, edatest.Config{})
			must(t, eda.Register[placedV2](h.App, "orders"))
			must(t, h.App.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "q", MaxReceiveCount: 1}}))
			called := make(chan struct{}, 1)
			must(t, eda.Handle(h.App, "q", func(context.Context, placedV2) error { called <- struct{}{}; return nil }))
			h.Start()
			if err := h.Transport.Publish("orders", c.msg); err != nil {
				t.Fatal(err)
			}
			failed := h.WaitFailed("q", 1)[0]
			if !errors.Is(failed.Err, c.want) || !eda.IsPermanent(failed.Err) {
				t.Fatalf("error %v: want %v and permanent", failed.Err, c.want)
			}
			var me *eda.MessageError
			if !errors.As(failed.Err, &me) || me.Queue != "q" {
				t.Fatalf("error %#v is not a *eda.MessageError for queue q", failed.Err)
			}
			// Not dropped: after MaxReceiveCount it reaches the DLQ intact.
			dead := h.WaitDeadLettered("q", 1)[0]
			if string(dead.Message.Payload) != string(c.msg.Payload) {
				t.Fatalf("DLQ payload %q, want %q", dead.Message.Payload, c.msg.Payload)
			}
			select {
			case <-called:
				t.Fatal("handler called with a bad message")
			default:
			}
		})
	}
}

func TestOlderSchemaVersionIsAccepted(t *testing.T) {
	h := edatest.New(t, edatest.Config{})
	must(t, eda.Register[placedV2](h.App, "orders"))
	got := make(chan placedV2, 1)
	must(t, eda.Handle(h.App, "q", func(_ context.Context, e placedV2) error { got <- e; return nil }))
	h.Start()
	if err := h.Transport.Publish("orders", rawMessage("test.OrderPlaced", "1", `{"order_id":"o-9"}`)); err != nil {
		t.Fatal(err)
	}
	if e := <-got; e.OrderID != "o-9" {
		t.Fatalf("got %+v", e)
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("boom")
	p := eda.Permanent(base)
	if !eda.IsPermanent(p) || !errors.Is(p, base) || p.Error() != "boom" {
		t.Fatalf("Permanent(%v) = %v", base, p)
	}
	if eda.IsPermanent(base) || eda.Permanent(nil) != nil {
		t.Fatal("plain errors are not permanent; Permanent(nil) is nil")
	}
}

type badName struct{}

func (badName) EventName() string { return "" }

type clash struct{}

func (clash) EventName() string { return "test.OrderPlaced" }

type panicky struct{ p *struct{ name string } }

func (e panicky) EventName() string { return e.p.name }

func TestRegistrationErrors(t *testing.T) {
	app := newApp(t)
	must(t, eda.Register[orderPlaced](app, "orders"))
	for name, c := range map[string]struct{ err, want error }{
		"empty name":      {eda.Register[badName](app, "t"), eda.ErrInvalidConfig},
		"name clash":      {eda.Register[clash](app, "t"), eda.ErrDuplicateEvent},
		"panics":          {eda.Register[panicky](app, "t"), eda.ErrInvalidConfig},
		"interface type":  {eda.Register[eda.Event](app, "t"), eda.ErrInvalidConfig},
		"negative concur": {app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "x"}, Concurrency: -1}), eda.ErrInvalidConfig},
		"bad queue":       {app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "y", VisibilityTimeout: -1}}), eda.ErrInvalidConfig},
		"nil middleware": {func() error {
			_, err := eda.New(eda.Config{Transport: nil, Middleware: []message.HandlerMiddleware{nil}})
			return err
		}(), eda.ErrInvalidConfig},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", name, c.err, c.want)
		}
	}
	must(t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "z"}}))
	if err := app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "z"}}); !errors.Is(err, eda.ErrInvalidConfig) {
		t.Errorf("declaring a queue twice: %v", err)
	}
	must(t, eda.Handle(app, "z", func(context.Context, orderPlaced) error { return nil }))
	if err := eda.Handle(app, "z", func(context.Context, orderPlaced) error { return nil }); !errors.Is(err, eda.ErrInvalidConfig) {
		t.Errorf("second handler for one event on one queue: %v", err)
	}
}

type shipped struct {
	OrderID string `json:"order_id"`
}

func (shipped) EventName() string { return "test.OrderShipped" }

// A producer not written with eda sends a type and a JSON body: no schema
// version, id, content type or time. Such a message is schema version 1.
func TestMessageWithoutSchemaVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  string
		reg  func(*eda.App) error
		fn   func(got chan<- string) func(*eda.App) error
	}{
		{"version 1 handler", "test.OrderShipped", func(a *eda.App) error { return eda.Register[shipped](a, "orders") },
			func(got chan<- string) func(*eda.App) error {
				return func(a *eda.App) error {
					return eda.Handle(a, "q", func(ctx context.Context, e shipped) error {
						env, _ := eda.EnvelopeFromContext(ctx)
						got <- fmt.Sprintf("%s v%d", e.OrderID, env.SchemaVersion)
						return nil
					})
				}
			}},
		{"version 2 handler", "test.OrderPlaced", func(a *eda.App) error { return eda.Register[placedV2](a, "orders") },
			func(got chan<- string) func(*eda.App) error {
				return func(a *eda.App) error {
					return eda.Handle(a, "q", func(ctx context.Context, e placedV2) error {
						env, _ := eda.EnvelopeFromContext(ctx)
						got <- fmt.Sprintf("%s v%d", e.OrderID, env.SchemaVersion)
						return nil
					})
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := edatest.New(t, edatest.Config{})
			must(t, tc.reg(h.App))
			got := make(chan string, 1)
			must(t, tc.fn(got)(h.App))
			h.Start()
			m := message.NewMessage("foreign-1", []byte(`{"order_id":"o-7"}`))
			m.Metadata.Set(eda.MetadataType, tc.typ)
			if err := h.Transport.Publish("orders", m); err != nil {
				t.Fatal(err)
			}
			select {
			case g := <-got:
				if g != "o-7 v1" {
					t.Fatalf("handled %q, want o-7 v1", g)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("a message without %s was not handled; failed: %+v", eda.MetadataSchemaVersion, h.Failed("q"))
			}
		})
	}
}

func TestEnvelopeOfSchemaVersion(t *testing.T) {
	for _, tc := range []struct {
		version string // "-": absent
		want    int
	}{{"-", eda.DefaultSchemaVersion}, {"3", 3}, {"x", 0}, {"0", 0}} {
		m := message.NewMessage("m", nil)
		if tc.version != "-" {
			m.Metadata.Set(eda.MetadataSchemaVersion, tc.version)
		}
		if got := eda.EnvelopeOf(m).SchemaVersion; got != tc.want {
			t.Errorf("%s %q: EnvelopeOf says %d, want %d", eda.MetadataSchemaVersion, tc.version, got, tc.want)
		}
	}
}
