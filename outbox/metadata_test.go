package outbox_test

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/transport"
)

// MarshalMetadata writes what encoding/json writes, byte for byte where
// encoding/json does not escape HTML, and always something that decodes to
// the same metadata.
func TestMarshalMetadata(t *testing.T) {
	for _, md := range []message.Metadata{
		nil,
		{},
		{"ce_id": "01a21350-7a88-78e4-9d8d-d3fc5aa8037b", "ce_type": "orders.created", "ce_time": "2026-11-25T15:26:11.080583211Z"},
		{"quote": `say "hi"`, "backslash": `C:\dir`, "controls": "a\nb\rc\td\x00e\x1f\x7f", "": "empty key"},
		{"unicode": "héllo wörld – ✓ 𝄞", "bad utf-8": "a\xffb\xc3", "trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	} {
		got, err := outbox.MarshalMetadata(md)
		if err != nil {
			t.Fatal(err)
		}
		same(t, md, got)
		back, err := outbox.UnmarshalMetadata(got)
		if err != nil {
			t.Fatalf("decode %s: %v", got, err)
		}
		if !maps.Equal(back, sanitized(md)) {
			t.Errorf("round trip of %q gave %q", md, back)
		}
	}
}

func FuzzMarshalMetadata(f *testing.F) {
	f.Add("ce_id", "x", "k\"\\", "v\n\x00\xff")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		md := message.Metadata{k1: v1, k2: v2}
		got, err := outbox.MarshalMetadata(md)
		if err != nil {
			t.Fatal(err)
		}
		same(t, md, got)
	})
}

// same checks that got is encoding/json's encoding of md: byte for byte
// (without its HTML escaping) unless md holds characters the two escape
// differently (\b, \f, U+2028, U+2029), and as decoded values always.
func same(t *testing.T, md message.Metadata, got []byte) {
	t.Helper()
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]string(md)); err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSuffix(sb.String(), "\n")
	if len(md) == 0 {
		want = "{}"
	}
	var a, b map[string]string
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("MarshalMetadata(%q) = %s, not JSON: %v", md, got, err)
	}
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatal(err)
	}
	if len(md) > 0 && !maps.Equal(a, b) {
		t.Fatalf("MarshalMetadata(%q) decodes to %q, encoding/json's to %q", md, a, b)
	}
	differ := func(s string) bool { return strings.ContainsAny(s, "\b\f\u2028\u2029") }
	for k, v := range md {
		if differ(k) || differ(v) {
			return
		}
	}
	if string(got) != want {
		t.Fatalf("MarshalMetadata(%q)\n got %s\nwant %s", md, got, want)
	}
}

// sanitized is md as JSON can carry it: invalid UTF-8 replaced.
func sanitized(md message.Metadata) message.Metadata {
	out := message.Metadata{}
	for k, v := range md {
		out[strings.ToValidUTF8(k, "\uFFFD")] = strings.ToValidUTF8(v, "\uFFFD")
	}
	return out
}

// A record keeps a message's due time in DeliverAt, not in its metadata;
// a malformed one is an invalid event.
func TestNewRecordDeliverAt(t *testing.T) {
	due := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	msg := message.NewMessage("id-1", []byte("{}"))
	transport.SetDeliverAt(msg, due)
	r, err := outbox.NewRecord("t", msg)
	if err != nil || !r.DeliverAt.Equal(due) {
		t.Fatalf("NewRecord = %v (due %v), want due %v", err, r.DeliverAt, due)
	}
	if _, ok := r.Metadata[transport.MetadataDeliverAt]; ok {
		t.Errorf("record metadata keeps %s", transport.MetadataDeliverAt)
	}
	if _, ok := r.Message().Metadata[transport.MetadataDeliverAt]; ok {
		t.Errorf("record message carries %s", transport.MetadataDeliverAt)
	}
	msg.Metadata.Set(transport.MetadataDeliverAt, "tomorrow")
	if _, err := outbox.NewRecord("t", msg); !errors.Is(err, outbox.ErrInvalidEvent) {
		t.Errorf("NewRecord with a malformed due time = %v, want ErrInvalidEvent", err)
	}
}
