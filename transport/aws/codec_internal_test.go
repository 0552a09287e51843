package aws

import (
	"bytes"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

func TestCodecRoundTrip(t *testing.T) {
	many := message.Metadata{}
	for i := range 15 {
		many[fmt.Sprintf("k%02d", i)] = fmt.Sprintf("v%d", i)
	}
	many[transport.MetadataEventID] = "id-1"
	many["ce_type"] = "orders.Placed"
	tests := []struct {
		name        string
		uuid        string
		payload     []byte
		md          message.Metadata
		wantAttrs   []string // attributes that must be there
		wantNoAttrs []string // metadata that must not be an attribute
		attrs       []string // Config.Attributes; nil: DefaultAttributes
	}{
		{"plain", "id-1", []byte(`{"a":1}`), message.Metadata{transport.MetadataEventID: "id-1", "ce_type": "t", "ce_source": "s", "ce_time": "now", "ce_specversion": "1.0", "ce_schemaversion": "2"}, []string{"ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion", attrOverflow}, []string{attrUUID, "ce_schemaversion"}, nil},
		{"envelope only", "id-1", []byte(`{"a":1}`), message.Metadata{transport.MetadataEventID: "id-1", "ce_type": "t", "ce_source": "s", "ce_time": "now", "ce_specversion": "1.0"}, []string{"ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion"}, []string{attrUUID, attrOverflow}, nil},
		{"plain, all attributes", "id-1", []byte(`{"a":1}`), message.Metadata{transport.MetadataEventID: "id-1", "ce_type": "t"}, []string{"ce_type", "ce_id"}, []string{attrUUID, attrOverflow}, AllAttributes},
		{"no attributes of their own", "id-1", []byte(`{"a":1}`), message.Metadata{transport.MetadataEventID: "id-1", "ce_type": "t"}, []string{attrOverflow}, []string{"ce_type", "ce_id"}, []string{}},
		{"named attributes", "id-1", []byte(`{"a":1}`), message.Metadata{transport.MetadataEventID: "id-1", "ce_type": "t", "tenant": "acme"}, []string{"tenant", attrOverflow}, []string{"ce_type", "ce_id"}, []string{"tenant", "absent"}},
		{"uuid differs from event id", "u-1", []byte("x"), message.Metadata{transport.MetadataEventID: "id-1"}, []string{attrUUID}, nil, nil},
		{"empty payload", "id-1", []byte{}, message.Metadata{transport.MetadataEventID: "id-1"}, []string{attrEncoding}, nil, nil},
		{"binary payload", "id-1", []byte{0, 1, 2, 0xff, 0xfe}, message.Metadata{transport.MetadataEventID: "id-1"}, []string{attrEncoding}, nil, nil},
		{"control character", "id-1", []byte("a\x01b"), message.Metadata{transport.MetadataEventID: "id-1"}, []string{attrEncoding}, nil, nil},
		{"empty value and bad names", "id-1", []byte("x"), message.Metadata{transport.MetadataEventID: "id-1", "empty": "", "with space": "v", "AWS.x": "v", "ctl": "a\x02"}, []string{attrOverflow}, []string{"empty", "with space", "AWS.x", "ctl"}, AllAttributes},
		{"over ten attributes", "id-1", []byte("x"), many, []string{"ce_type", "ce_id", attrOverflow}, []string{"k14"}, AllAttributes},
		{"reserved names", "id-1", []byte("x"), message.Metadata{transport.MetadataEventID: "id-1", attrOverflow: "mine", attrUUID: "theirs"}, []string{attrOverflow}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := message.NewMessage(tc.uuid, tc.payload)
			msg.Metadata = tc.md
			attrs := tc.attrs
			if attrs == nil {
				attrs = DefaultAttributes
			}
			w, err := encode(msg, "", attrs)
			if err != nil {
				t.Fatal(err)
			}
			if len(w.attrs) > MaxAttributes {
				t.Errorf("%d attributes, SQS takes %d", len(w.attrs), MaxAttributes)
			}
			if w.body == "" || !validBody([]byte(w.body)) {
				t.Errorf("body %q is not valid for SQS", w.body)
			}
			for _, a := range tc.wantAttrs {
				if _, ok := w.attrs[a]; !ok {
					t.Errorf("attribute %q missing: %v", a, w.attrs)
				}
			}
			for _, a := range tc.wantNoAttrs {
				if _, ok := w.attrs[a]; ok && a != attrOverflow {
					t.Errorf("%q is an attribute, want it in %s", a, attrOverflow)
				}
			}
			for k, v := range w.attrs {
				if v == "" || !validText(v) {
					t.Errorf("attribute %q has a value SQS rejects: %q", k, v)
				}
			}
			d, err := decode(w.body, w.attrs, "sqs-id")
			if err != nil {
				t.Fatal(err)
			}
			if d.msg.UUID != tc.uuid || !bytes.Equal(d.msg.Payload, tc.payload) {
				t.Errorf("decoded %s %q, want %s %q", d.msg.UUID, d.msg.Payload, tc.uuid, tc.payload)
			}
			if !maps.Equal(d.msg.Metadata, tc.md) {
				t.Errorf("metadata %v, want %v", d.msg.Metadata, tc.md)
			}
		})
	}
}

func TestDecodeForeignMessage(t *testing.T) {
	d, err := decode("hello", map[string]string{"x": "1"}, "sqs-id")
	if err != nil {
		t.Fatal(err)
	}
	if d.msg.UUID != "sqs-id" || string(d.msg.Payload) != "hello" || d.msg.Metadata.Get("x") != "1" {
		t.Fatalf("got %s %q %v", d.msg.UUID, d.msg.Payload, d.msg.Metadata)
	}
	if _, err := decode("x", map[string]string{attrOverflow: "{"}, "id"); err == nil {
		t.Error("bad overflow JSON: no error")
	}
	if _, err := decode("!!", map[string]string{attrEncoding: encodingBase64}, "id"); err == nil {
		t.Error("bad base64: no error")
	}
}

func TestChunk(t *testing.T) {
	mk := func(sizes ...int) []outgoing {
		out := make([]outgoing, len(sizes))
		for i, s := range sizes {
			out[i] = outgoing{wire: wireMessage{body: strings.Repeat("x", s), attrs: map[string]string{}}}
		}
		return out
	}
	sizesOf := func(chunks [][]outgoing) []int {
		var n []int
		for _, c := range chunks {
			n = append(n, len(c))
		}
		return n
	}
	tests := []struct {
		name  string
		in    []outgoing
		wantN []int
	}{
		{"one", mk(10), []int{1}},
		{"ten", mk(1, 1, 1, 1, 1, 1, 1, 1, 1, 1), []int{10}},
		{"twenty-five", mk(make([]int, 25)...), []int{10, 10, 5}},
		{"size bound", mk(100*1024, 100*1024, 100*1024, 10), []int{2, 2}},
		{"each at the limit", mk(MaxWireSize, MaxWireSize, 1), []int{1, 1, 1}},
	}
	if got := sizesOf(chunk(mk(make([]int, 20)...), 9)); fmt.Sprint(got) != "[9 9 2]" {
		t.Errorf("FIFO chunks %v, want [9 9 2]", got)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := sizesOf(chunk(tc.in, maxBatch))
			if fmt.Sprint(got) != fmt.Sprint(tc.wantN) {
				t.Fatalf("chunks %v, want %v", got, tc.wantN)
			}
		})
	}
}

func TestFifoID(t *testing.T) {
	if got := fifoID("order-42"); got != "order-42" {
		t.Errorf("valid id changed to %q", got)
	}
	long := strings.Repeat("a", 129)
	for _, id := range []string{long, "has space", "zürich"} {
		got := fifoID(id)
		if got == id || len(got) != 64 || fifoID(id) != got {
			t.Errorf("fifoID(%q) = %q, want a stable 64-char hash", id, got)
		}
	}
}

func TestQueueARN(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"https://sqs.eu-west-1.amazonaws.com/123456789012/orders", "arn:aws:sqs:eu-west-1:123456789012:orders"},
		{"http://127.0.0.1:4566/000000000000/q.fifo", "arn:aws:sqs:eu-west-1:000000000000:q.fifo"},
		{"http://127.0.0.1:4566/odd", "http://127.0.0.1:4566/odd"},
	} {
		if got := queueARN("aws", "eu-west-1", tc.url); got != tc.want {
			t.Errorf("queueARN(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}
