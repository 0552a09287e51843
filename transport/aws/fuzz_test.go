package aws

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"testing"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// FuzzDecodeSQS feeds decode what an SQS queue can deliver: any body and
// String attributes, the codec's own among them (eda_md, eda_enc,
// eda_claimcheck, the watermill UUID). It must not panic; an error is a
// typed JSON or base64 error; a decoded message encodes and decodes back to
// itself (under both attribute policies).
func FuzzDecodeSQS(f *testing.F) {
	f.Add(`{"a":1}`, "", "", `{"ce_id":"id-1","ce_time":"now"}`, "", "ce_type", "orders.Placed")
	f.Add(" ", "", encodingEmpty, "", "", "ce_source", "svc")
	f.Add("AAEC/w==", "u-1", encodingBase64, "", "", "", "")
	f.Add("not base64!", "", encodingBase64, "", "", "", "")
	f.Add(claimCheckBody+"key-1", "", "", `{"k":"v"}`, "key-1", "ce_type", "t")
	f.Add("x", "", "", `{"k":`, "", "", "")
	f.Add("x", "", "", `{"k":1}`, "", "", "")
	f.Add("x", "", "", `{"k":"\u0000\ud800"}`, "", "", "")
	f.Add("x", "", "other-encoding", `null`, "", transport.MetadataEventID, "id-9")
	f.Fuzz(func(t *testing.T, body, uuid, enc, overflow, claim, k, v string) {
		attrs := map[string]string{}
		for name, val := range map[string]string{attrUUID: uuid, attrEncoding: enc, attrOverflow: overflow, attrClaimCheck: claim} {
			if val != "" {
				attrs[name] = val
			}
		}
		if k != "" {
			attrs[k] = v
		}
		d, err := decode(body, attrs, "sqs-message-id")
		if err != nil {
			var syntax *json.SyntaxError
			var typ *json.UnmarshalTypeError
			var b64 base64.CorruptInputError
			if !errors.As(err, &syntax) && !errors.As(err, &typ) && !errors.As(err, &b64) {
				t.Fatalf("decode error %T %v is neither a JSON nor a base64 error", err, err)
			}
			return
		}
		if d.msg.UUID == "" {
			t.Fatal("decoded message has no UUID")
		}
		for _, policy := range [][]string{DefaultAttributes, AllAttributes, {}} {
			roundTrip(t, d.msg, d.claimKey, policy)
		}
	})
}

// FuzzEncodeSQS: whatever a publisher sends either encodes into something
// SQS accepts that decodes back to the same message, or fails with
// ErrInvalidMetadata; nothing is rewritten on the way.
func FuzzEncodeSQS(f *testing.F) {
	f.Add("id-1", []byte(`{"a":1}`), transport.MetadataEventID, "id-1", "ce_type", "t", "")
	f.Add("u-1", []byte{}, "with space", "v", "", "", "")
	f.Add("id-1", []byte{0, 1, 0xff}, "AWS.x", "a\x02", attrOverflow, "mine", "claim")
	f.Add("id-1", []byte("x"), "k", "\xff", "", "", "")
	f.Add("", []byte("\ufffd"), "", "", "k", "\u2028", "")
	f.Fuzz(func(t *testing.T, uuid string, payload []byte, k1, v1, k2, v2, claim string) {
		msg := message.NewMessage(uuid, payload)
		msg.Metadata[k1] = v1
		msg.Metadata[k2] = v2
		roundTrip(t, msg, claim, AllAttributes)
		roundTrip(t, msg, claim, DefaultAttributes)
	})
}

func roundTrip(t *testing.T, msg *message.Message, claimKey string, policy []string) {
	t.Helper()
	w, err := encode(msg, claimKey, policy)
	if err != nil {
		if !errors.Is(err, ErrInvalidMetadata) {
			t.Fatalf("encode error %v is not ErrInvalidMetadata", err)
		}
		for k, v := range msg.Metadata {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return
			}
		}
		if !validText(claimKey) || msg.UUID != msg.Metadata.Get(transport.MetadataEventID) && (msg.UUID == "" || !validText(msg.UUID)) {
			return // a UUID of its own travels as an attribute: SQS text
		}
		t.Fatalf("encode refused metadata %q, UUID %q: %v", msg.Metadata, msg.UUID, err)
	}
	if len(w.attrs) > MaxAttributes {
		t.Fatalf("%d attributes, SQS takes %d", len(w.attrs), MaxAttributes)
	}
	if w.body == "" || !validBody([]byte(w.body)) {
		t.Fatalf("body %q is not valid for SQS", w.body)
	}
	for name, v := range w.attrs {
		if !validText(name) || v == "" || !validText(v) {
			t.Fatalf("attribute %q=%q is not valid for SQS", name, v)
		}
	}
	d, err := decode(w.body, w.attrs, "other-id")
	if err != nil {
		t.Fatalf("decode(encode(msg)): %v", err)
	}
	wantUUID := msg.UUID
	if wantUUID == "" && msg.Metadata.Get(transport.MetadataEventID) == "" {
		wantUUID = "other-id" // nothing to carry: the SQS message id stands in
	} else if wantUUID == "" {
		wantUUID = msg.Metadata.Get(transport.MetadataEventID)
	}
	if d.msg.UUID != wantUUID {
		t.Fatalf("UUID %q came back as %q", msg.UUID, d.msg.UUID)
	}
	if d.claimKey != claimKey {
		t.Fatalf("claim key %q came back as %q", claimKey, d.claimKey)
	}
	if claimKey == "" && !bytes.Equal(d.msg.Payload, msg.Payload) {
		t.Fatalf("payload %q came back as %q", msg.Payload, d.msg.Payload)
	}
	if !maps.Equal(d.msg.Metadata, msg.Metadata) {
		t.Fatalf("metadata %q came back as %q (policy %q)", msg.Metadata, d.msg.Metadata, policy)
	}
}
