package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
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
	attrs := map[string]string{
		"ce_id": "1", "eda_poison_reason": "permanent",
		awsAttrOverflow: `{"eda_poison_error":"boom","ce_correlationid":"c"}`,
	}
	got, err := stripSQS(attrs)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ce_id": "1", awsAttrOverflow: `{"ce_correlationid":"c"}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stripSQS: %v, want %v", got, want)
	}
	if _, err := stripSQS(map[string]string{awsAttrOverflow: "{"}); err == nil {
		t.Error("corrupt overflow attribute stripped without error")
	}
}
