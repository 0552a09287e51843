package main

import (
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// Redrive strips the poison middleware's keys by their prefix: every key
// the middleware writes must have it.
func TestPoisonKeysHavePrefix(t *testing.T) {
	for _, k := range []string{
		middleware.MetadataPoisonReason, middleware.MetadataPoisonError, middleware.MetadataPoisonAttempts,
		middleware.MetadataPoisonDeliveries, middleware.MetadataPoisonHandler, middleware.MetadataPoisonQueue,
		middleware.MetadataPoisonTopic, middleware.MetadataPoisonFirstFailure, middleware.MetadataPoisonLastFailure,
	} {
		if !strings.HasPrefix(k, poisonPrefix) || !isRedriveKey(k) {
			t.Errorf("poison key %q does not start with %q", k, poisonPrefix)
		}
	}
	for _, k := range []string{"ce_id", "ce_type", transport.MetadataGroupID, "eda_topic"} {
		if isRedriveKey(k) {
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

func TestStripSQS(t *testing.T) {
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
	body, attrs, err = stripSQS(body, attrs)
	if err != nil {
		t.Fatal(err)
	}
	md, payload, _, err := decodeSQS(body, attrs)
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(msg.Metadata)
	delete(want, "eda_poison_reason")
	delete(want, "eda_poison_error")
	delete(want, transport.MetadataReceiveCount)
	if !reflect.DeepEqual(md, want) || string(payload) != string(msg.Payload) {
		t.Errorf("after stripping: %v %q, want %v %q", md, payload, want, msg.Payload)
	}
	if _, _, err := stripSQS("x", map[string]string{"eda_md": "{"}); err == nil {
		t.Error("corrupt overflow attribute stripped without error")
	}
}
