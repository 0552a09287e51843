package outbox

import (
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

func TestBackoffBounds(t *testing.T) {
	r := &Relay{cfg: RelayConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 10: time.Second, 1000: time.Second} {
		for range 50 {
			d := r.backoff(attempt)
			if d < want*8/10 || d > min(want*12/10, time.Second) {
				t.Fatalf("backoff(%d) = %s, want %s ±20%% capped at 1s", attempt, d, want)
			}
		}
	}
}

func TestRateMeter(t *testing.T) {
	var m rateMeter
	now := time.Unix(1000, 0)
	for i := range 10 {
		m.Add(now.Add(time.Duration(i)*time.Second), 50)
	}
	if got := m.Rate(now.Add(9 * time.Second)); got != 50 {
		t.Errorf("rate over 10 full seconds = %v, want 50", got)
	}
	if got := m.Rate(now.Add(30 * time.Second)); got != 0 {
		t.Errorf("rate after 20 idle seconds = %v, want 0", got)
	}
}

func TestDefaultPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{transport.TooLargeError("t", message.NewMessage("1", nil), 10, 5), true},
		{transport.ErrUnknownTopic, true},
		{transport.ErrMissingGroupID, true},
		{eda.Permanent(errors.New("x")), true},
		{transport.ErrUnavailable, false},
		{transport.ErrTopicNotReady, false}, // heals once the topology is declared again
		{errors.New("timeout"), false},
	} {
		if got := DefaultPermanent(tc.err); got != tc.want {
			t.Errorf("DefaultPermanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestNewRecord(t *testing.T) {
	msg := message.NewMessage("uuid-1", []byte("p"))
	msg.Metadata.Set(transport.MetadataEventID, "ev-1")
	msg.Metadata.Set(transport.MetadataGroupID, "k")
	msg.Metadata.Set(transport.MetadataDedupID, "d")
	r, err := NewRecord("topic", msg)
	if err != nil {
		t.Fatal(err)
	}
	if r.EventID != "ev-1" || r.OrderingKey != "k" || r.DedupID != "d" || r.Topic != "topic" {
		t.Errorf("record = %+v", r)
	}
	msg.Metadata.Set("later", "x")
	if r.Metadata.Get("later") != "" {
		t.Error("record shares the message's metadata map")
	}
	back := r.Message()
	if back.UUID != "ev-1" || string(back.Payload) != "p" || back.Metadata.Get(transport.MetadataGroupID) != "k" {
		t.Errorf("Message() = %+v", back)
	}
	for _, bad := range []struct {
		topic string
		msg   *message.Message
	}{{"", msg}, {"t", nil}, {"t", message.NewMessage("", nil)}} {
		if _, err := NewRecord(bad.topic, bad.msg); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("NewRecord(%q, %v) = %v, want ErrInvalidEvent", bad.topic, bad.msg, err)
		}
	}
	if _, err := UnmarshalMetadata([]byte("{bad")); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("UnmarshalMetadata(bad) = %v, want ErrCorruptRecord", err)
	}
}
