package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// The wire formats edactl reads without a consumer: the AWS transport's SQS
// message attributes (transport/aws codec.go) and the Postgres transport's
// metadata column (transport/postgres metadata.go). Neither package exports
// its decoder (a consumer never needs one), so these mirror them; the tests
// check them against messages the transports themselves wrote.

// Attribute names of the AWS transport's codec.
const (
	awsAttrUUID       = "_watermill_message_uuid"
	awsAttrOverflow   = "eda_md"
	awsAttrEncoding   = "eda_enc"
	awsAttrClaimCheck = "eda_claimcheck"
)

// decodeSQS returns the metadata and payload of an SQS message the AWS
// transport sent. A claim-checked message has no payload here: its key is
// returned instead.
func decodeSQS(body string, attrs map[string]string) (md message.Metadata, payload []byte, claimKey string, err error) {
	md = message.Metadata{}
	for k, v := range attrs {
		switch k {
		case awsAttrUUID, awsAttrEncoding, awsAttrOverflow:
		case awsAttrClaimCheck:
			claimKey = v
		default:
			md[k] = v
		}
	}
	if o, ok := attrs[awsAttrOverflow]; ok {
		var overflow map[string]string
		if err := json.Unmarshal([]byte(o), &overflow); err != nil {
			return nil, nil, "", fmt.Errorf("attribute %s: %w", awsAttrOverflow, err)
		}
		for k, v := range overflow {
			md[k] = v
		}
	}
	payload = []byte(body)
	switch attrs[awsAttrEncoding] {
	case "empty":
		payload = []byte{}
	case "base64":
		if payload, err = base64.StdEncoding.DecodeString(body); err != nil {
			return nil, nil, "", fmt.Errorf("base64 body: %w", err)
		}
	}
	if claimKey != "" {
		payload = nil
	}
	return md, payload, claimKey, nil
}

// isRedriveKey tells the metadata keys a redriven message loses: the poison
// middleware's (middleware.MetadataPoison*) and the transport's delivery
// bookkeeping, so the next failure records fresh ones.
func isRedriveKey(k string) bool {
	return strings.HasPrefix(k, poisonPrefix) || k == transport.MetadataReceiveCount || k == transport.MetadataDeadLetterSource
}

// stripSQS removes the redrive keys from SQS message attributes, inside the
// overflow attribute too.
func stripSQS(attrs map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(attrs))
	for k, v := range attrs {
		if !isRedriveKey(k) {
			out[k] = v
		}
	}
	if o, ok := out[awsAttrOverflow]; ok {
		var overflow map[string]string
		if err := json.Unmarshal([]byte(o), &overflow); err != nil {
			return nil, fmt.Errorf("attribute %s: %w", awsAttrOverflow, err)
		}
		for k := range overflow {
			if isRedriveKey(k) {
				delete(overflow, k)
			}
		}
		if len(overflow) == 0 {
			delete(out, awsAttrOverflow)
		} else {
			b, _ := json.Marshal(overflow)
			out[awsAttrOverflow] = string(b)
		}
	}
	return out, nil
}

var errCorruptMetadata = errors.New("corrupt metadata column")

// decodePGMetadata decodes the Postgres transport's metadata column: a
// sequence of (uvarint length, key, uvarint length, value).
func decodePGMetadata(b []byte) (message.Metadata, error) {
	md := message.Metadata{}
	next := func() (string, error) {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > uint64(len(b)-w) {
			return "", errCorruptMetadata
		}
		s := string(b[w : w+int(n)])
		b = b[w+int(n):]
		return s, nil
	}
	for len(b) > 0 {
		k, err := next()
		if err != nil {
			return nil, err
		}
		v, err := next()
		if err != nil {
			return nil, err
		}
		md[k] = v
	}
	return md, nil
}

// encodePGMetadata is the inverse of decodePGMetadata.
func encodePGMetadata(md message.Metadata) []byte {
	var b []byte
	for _, k := range sortedKeys(md) {
		v := md[k]
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}
