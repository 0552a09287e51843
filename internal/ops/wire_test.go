package ops

import (
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// Redrive strips the last round's poison keys by their prefix: every key
// the middleware writes must have it; the history keys stay.
func TestPoisonKeysHavePrefix(t *testing.T) {
	for _, k := range []string{
		middleware.MetadataPoisonReason, middleware.MetadataPoisonError, middleware.MetadataPoisonAttempts,
		middleware.MetadataPoisonDeliveries, middleware.MetadataPoisonHandler, middleware.MetadataPoisonQueue,
		middleware.MetadataPoisonTopic, middleware.MetadataPoisonLastFailure,
	} {
		if !strings.HasPrefix(k, poisonPrefix) || !IsRedriveKey(k) {
			t.Errorf("poison key %q does not start with %q", k, poisonPrefix)
		}
	}
	for _, k := range []string{"ce_id", "ce_type", transport.MetadataGroupID, "eda_topic",
		middleware.MetadataPoisonFirstFailure, middleware.MetadataPoisonTotalDeliveries, middleware.MetadataPoisonRedrives} {
		if IsRedriveKey(k) {
			t.Errorf("redrive would strip %q", k)
		}
	}
}

func TestPGMetadataRoundTrip(t *testing.T) {
	md := message.Metadata{"ce_id": "1", "empty": "", "bin": "\x00\xff", "eda_poison_reason": "permanent"}
	got, err := decodePGMetadata(encodePGMetadata(md))
	if err != nil || !reflect.DeepEqual(got, md) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if _, err := decodePGMetadata([]byte{5, 'a'}); err == nil {
		t.Error("truncated metadata decoded without error")
	}
}

func TestReencodeSQS(t *testing.T) {
	msg := message.NewMessage("1", []byte(`{"order_id":"o-1"}`))
	msg.Metadata = message.Metadata{"ce_id": "1", "ce_correlationid": "c", "eda_poison_reason": "permanent",
		"eda_poison_error": "boom", transport.MetadataReceiveCount: "3"}
	for i := range 12 { // more keys than SQS attribute slots: some travel in the overflow attribute
		msg.Metadata[fmt.Sprintf("x-%02d", i)] = "v"
	}
	body, attrs, err := edaaws.EncodeSQS(msg, "")
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(msg.Metadata)
	delete(want, "eda_poison_reason")
	delete(want, "eda_poison_error")
	delete(want, transport.MetadataReceiveCount)
	want[middleware.MetadataPoisonRedrives] = "1"
	body, attrs, err = reencodeSQS(body, attrs, want)
	if err != nil {
		t.Fatal(err)
	}
	md, payload, _, err := decodeSQS(body, attrs)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(md, want) || string(payload) != string(msg.Payload) {
		t.Errorf("re-encoded: %v %q, want %v %q", md, payload, want, msg.Payload)
	}
	if _, _, err := reencodeSQS("x", map[string]string{"eda_md": "{"}, want); err == nil {
		t.Error("corrupt overflow attribute re-encoded without error")
	}
}

// What a redriven message carries: the history, not the last round.
func TestRedriveMetadata(t *testing.T) {
	first := "2024-05-01T10:00:00Z"
	cases := []struct {
		name        string
		md          message.Metadata
		dlqSource   string
		maxReceive  int
		wantTotal   string // "" absent
		wantRedrive string
	}{
		{"poisoned once", message.Metadata{"ce_id": "e", middleware.MetadataPoisonReason: "permanent", middleware.MetadataPoisonDeliveries: "2",
			middleware.MetadataPoisonTotalDeliveries: "2", middleware.MetadataPoisonFirstFailure: first}, "", 0, "2", "1"},
		{"poisoned after a redrive", message.Metadata{"ce_id": "e", middleware.MetadataPoisonReason: "permanent", middleware.MetadataPoisonDeliveries: "1",
			middleware.MetadataPoisonTotalDeliveries: "3", middleware.MetadataPoisonRedrives: "1", middleware.MetadataPoisonFirstFailure: first}, "", 0, "3", "2"},
		{"an old poisoned message, without a total", message.Metadata{"ce_id": "e", middleware.MetadataPoisonReason: "permanent",
			middleware.MetadataPoisonDeliveries: "4", middleware.MetadataPoisonFirstFailure: first}, "", 0, "4", "1"},
		{"moved by the broker", message.Metadata{"ce_id": "e", transport.MetadataDeadLetterSource: "billing"}, "billing", 5, "5", "1"},
		{"moved by the broker after a poison round and a redrive", message.Metadata{"ce_id": "e", middleware.MetadataPoisonTotalDeliveries: "3",
			middleware.MetadataPoisonRedrives: "1", middleware.MetadataPoisonFirstFailure: first}, "billing", 5, "8", "2"},
		{"moved by a broker that does not say how often", message.Metadata{"ce_id": "e"}, "billing", 0, "", "1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := NewDeadMessage("1", c.md, nil, c.dlqSource, c.maxReceive)
			got := redriveMetadata(d, c.dlqSource, c.maxReceive)
			if got[middleware.MetadataPoisonTotalDeliveries] != c.wantTotal || got[middleware.MetadataPoisonRedrives] != c.wantRedrive {
				t.Errorf("total %q redrives %q, want %q %q", got[middleware.MetadataPoisonTotalDeliveries], got[middleware.MetadataPoisonRedrives], c.wantTotal, c.wantRedrive)
			}
			if _, ok := c.md[middleware.MetadataPoisonFirstFailure]; ok && got[middleware.MetadataPoisonFirstFailure] != first {
				t.Errorf("first failure %q, want %q kept", got[middleware.MetadataPoisonFirstFailure], first)
			}
			if got["ce_id"] != "e" {
				t.Errorf("lost the envelope: %v", got)
			}
			for k := range got {
				if IsRedriveKey(k) {
					t.Errorf("kept %s", k)
				}
			}
		})
	}
}

// What -id, -type, -reason, -since and -until select.
func TestRedriveSelects(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	poisoned := DeadMessage{ID: "m-1", EventID: "ev-1", Type: "orders.OrderCreated", Reason: "permanent", LastFailure: "2024-05-01T10:00:00Z"}
	broker := DeadMessage{ID: "m-2", EventID: "ev-2", Type: "billing.Invoice", Reason: ReasonMaxReceive, Enqueued: "2024-05-01T12:00:00Z"}
	unknown := DeadMessage{ID: "m-3", Type: "x"} // no time known
	cases := []struct {
		name string
		o    RedriveOptions
		want []string // ids selected
	}{
		{"everything", RedriveOptions{}, []string{"m-1", "m-2", "m-3"}},
		{"by event id", RedriveOptions{IDs: map[string]bool{"ev-2": true}}, []string{"m-2"}},
		{"by message id", RedriveOptions{IDs: map[string]bool{"m-1": true}}, []string{"m-1"}},
		{"by type", RedriveOptions{Types: map[string]bool{"orders.OrderCreated": true}}, []string{"m-1"}},
		{"by reason", RedriveOptions{Reasons: map[string]bool{ReasonMaxReceive: true}}, []string{"m-2"}},
		{"since: the last failure, else the enqueue time", RedriveOptions{Since: at("2024-05-01T11:00:00Z")}, []string{"m-2"}},
		{"until", RedriveOptions{Until: at("2024-05-01T11:00:00Z")}, []string{"m-1"}},
		{"bounds are inclusive", RedriveOptions{Since: at("2024-05-01T10:00:00Z"), Until: at("2024-05-01T12:00:00Z")}, []string{"m-1", "m-2"}},
		{"type and reason together", RedriveOptions{Types: map[string]bool{"billing.Invoice": true}, Reasons: map[string]bool{"permanent": true}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, m := range []DeadMessage{poisoned, broker, unknown} {
				if c.o.Selects(m) {
					got = append(got, m.ID)
				}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("selected %v, want %v", got, c.want)
			}
		})
	}
	now := at("2024-05-01T12:00:00Z")
	if got, err := ParseWhen("90m", now); err != nil || !got.Equal(at("2024-05-01T10:30:00Z")) {
		t.Errorf("ParseWhen 90m: %v %v", got, err)
	}
	if got, err := ParseWhen("2024-04-30T08:00:00+02:00", now); err != nil || !got.Equal(at("2024-04-30T06:00:00Z")) {
		t.Errorf("ParseWhen RFC 3339: %v %v", got, err)
	}
}
