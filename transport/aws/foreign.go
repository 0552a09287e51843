package aws

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/transport"
)

// CloudEvents attributes the subscriber fills in when a message lacks them
// (see defaultEnvelope).
const (
	metadataSpecVersion = "ce_specversion"
	metadataSource      = "ce_source"
	metadataTime        = "ce_time"
	specVersion         = "1.0"
)

// defaultEnvelope fills the CloudEvents attributes a received message lacks,
// as a producer not written with eda sends it (a type attribute and a JSON
// body, say), from what SQS knows of it:
//   - ce_id: the message's UUID: the watermill UUID attribute if any, else
//     the SQS MessageId, which stays the same across redeliveries (so
//     idempotency keyed on the event id works);
//   - ce_specversion: "1.0";
//   - ce_source: the ARN of the queue it was received from (the publisher is
//     not known to the consumer);
//   - ce_time: when SQS received it (SentTimestamp), RFC 3339 in UTC.
//
// Present attributes are never changed. eda itself takes a message without
// ce_schemaversion as schema version 1.
func (s *subscription) defaultEnvelope(msg *message.Message, raw sqstypes.Message) {
	md := msg.Metadata
	if md.Get(transport.MetadataEventID) == "" {
		md[transport.MetadataEventID] = msg.UUID
	}
	if md.Get(metadataSpecVersion) == "" {
		md[metadataSpecVersion] = specVersion
	}
	if md.Get(metadataSource) == "" {
		md[metadataSource] = s.source
	}
	if md.Get(metadataTime) == "" {
		ms, err := strconv.ParseInt(raw.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)], 10, 64)
		if err == nil && ms > 0 {
			md[metadataTime] = time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
		}
	}
}

// queueARN derives a queue's ARN from its URL (.../account/name); the URL
// itself when it has not that shape.
func queueARN(partition, region, queueURL string) string {
	u, err := url.Parse(queueURL)
	if err != nil {
		return queueURL
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		return queueURL
	}
	return "arn:" + partition + ":sqs:" + region + ":" + parts[0] + ":" + parts[1]
}
