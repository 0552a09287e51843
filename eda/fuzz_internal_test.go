package eda

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport/memory"
)

type fuzzPlaced struct {
	OrderID string   `json:"order_id"`
	Qty     int      `json:"qty"`
	Tags    []string `json:"tags"`
}

func (fuzzPlaced) EventName() string  { return "fuzz.Placed" }
func (fuzzPlaced) SchemaVersion() int { return 2 }

// FuzzEnvelope: any metadata reads as an envelope without panicking;
// Validate's error is ErrInvalidConfig; a valid envelope applied to fresh
// metadata reads back equal.
func FuzzEnvelope(f *testing.F) {
	f.Add("id-1", "svc", "fuzz.Placed", "2026-01-02T03:04:05.123456789Z", "application/json", "2", "corr", "cause", "key")
	f.Add("", "", "", "", "", "", "", "", "")
	f.Add("id", "s", "t", "2026-01-02T03:04:05+02:00", "", "1", "", "", "")
	f.Add("id", "s", "t", "yesterday", "", "-1", "", "", "")
	f.Add("id", "s", "t", "10000-01-01T00:00:00Z", "", "99999999999999999999", "", "", "")
	f.Fuzz(func(t *testing.T, id, source, typ, tm, ct, version, corr, cause, key string) {
		msg := message.NewMessage(id, nil)
		for k, v := range map[string]string{MetadataID: id, MetadataSource: source, MetadataType: typ, MetadataTime: tm,
			MetadataContentType: ct, MetadataSchemaVersion: version, MetadataCorrelationID: corr,
			MetadataCausationID: cause, MetadataOrderingKey: key} {
			if v != "" {
				msg.Metadata.Set(k, v)
			}
		}
		env := EnvelopeOf(msg)
		if err := env.Validate(); err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate: %v is not ErrInvalidConfig", err)
			}
			return
		}
		if env.Time.Year() > 9999 || env.Time.Year() < 0 {
			return // RFC 3339 has four-digit years: Apply cannot write it back
		}
		md := message.Metadata{}
		env.Apply(md)
		again := EnvelopeOf(&message.Message{Metadata: md})
		if !again.Time.Equal(env.Time) {
			t.Fatalf("time %v came back as %v", env.Time, again.Time)
		}
		again.Time, env.Time = time.Time{}, time.Time{}
		if again != env {
			t.Fatalf("envelope %+v came back as %+v", env, again)
		}
	})
}

// FuzzDispatch hands a queue's dispatcher a message with arbitrary
// metadata and payload, as a transport delivers what anyone published. It
// calls the handler with a decoded event or fails with a permanent
// *MessageError (ErrUnknownEvent, ErrSchemaVersion, ErrDecode); it never
// panics.
func FuzzDispatch(f *testing.F) {
	f.Add("fuzz.Placed", "2", "application/json", []byte(`{"order_id":"o-1","qty":3,"tags":["a"]}`))
	f.Add("fuzz.Placed", "1", "", []byte(`{}`))
	f.Add("fuzz.Placed", "3", "", []byte(`{}`))
	f.Add("fuzz.Placed", "x", "", []byte(`{}`))
	f.Add("fuzz.Placed", "2", "application/protobuf", []byte(`{}`))
	f.Add("fuzz.Placed", "2", "", []byte(`{"qty":"many"}`))
	f.Add("fuzz.Placed", "2", "", []byte(`{"order_id":`))
	f.Add("fuzz.Nobody", "1", "", []byte(`{}`))
	f.Add("", "", "", []byte{0xff, 0x00})
	tr, err := memory.New(memory.Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { tr.Close() })
	app, err := New(Config{Transport: tr, Source: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	if err := Register[fuzzPlaced](app, "placed"); err != nil {
		f.Fatal(err)
	}
	var got *fuzzPlaced
	if err := Handle(app, "q", func(_ context.Context, e fuzzPlaced) error { got = &e; return nil }); err != nil {
		f.Fatal(err)
	}
	q := app.queues["q"]
	f.Fuzz(func(t *testing.T, typ, version, ct string, payload []byte) {
		msg := message.NewMessage("m-1", payload)
		msg.Metadata.Set(MetadataType, typ)
		msg.Metadata.Set(MetadataSchemaVersion, version)
		msg.Metadata.Set(MetadataContentType, ct)
		msg.SetContext(context.Background())
		got = nil
		err := q.dispatch(msg)
		if err == nil {
			if got == nil {
				t.Fatal("dispatch returned nil without calling the handler")
			}
			if n, aerr := strconv.Atoi(version); typ != "fuzz.Placed" || aerr != nil || n < 1 || n > 2 {
				t.Fatalf("handler called for type %q version %q", typ, version)
			}
			return
		}
		if got != nil {
			t.Fatalf("handler called and dispatch failed: %v", err)
		}
		var me *MessageError
		if !errors.As(err, &me) || !IsPermanent(err) ||
			!errors.Is(err, ErrUnknownEvent) && !errors.Is(err, ErrSchemaVersion) && !errors.Is(err, ErrDecode) {
			t.Fatalf("error %v: want a permanent *MessageError of ErrUnknownEvent, ErrSchemaVersion or ErrDecode", err)
		}
	})
}
