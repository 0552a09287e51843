package ops

import (
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/postgres"
)

// The wire formats edactl reads without a consumer come from the
// transports themselves: aws.DecodeSQS/EncodeSQS for SQS messages and
// postgres.DecodeMetadata/EncodeMetadata for the Postgres transport's
// metadata column.

// decodeSQS returns the metadata and payload of an SQS message the AWS
// transport sent. A claim-checked message has no payload here: its key is
// returned instead.
func decodeSQS(body string, attrs map[string]string) (md message.Metadata, payload []byte, claimKey string, err error) {
	msg, claimKey, err := edaaws.DecodeSQS(body, attrs)
	if err != nil {
		return nil, nil, "", err
	}
	return msg.Metadata, msg.Payload, claimKey, nil
}

// IsRedriveKey tells the metadata keys a redriven message loses: the poison
// middleware's (middleware.MetadataPoison*) of the last round, and the
// transport's delivery bookkeeping, so the next failure records fresh ones.
// The history middleware.Poison carries into the next round stays (first
// failure, total deliveries, redrives): redriveMetadata sets it.
func IsRedriveKey(k string) bool {
	switch k {
	case middleware.MetadataPoisonFirstFailure, middleware.MetadataPoisonTotalDeliveries, middleware.MetadataPoisonRedrives:
		return false
	}
	return strings.HasPrefix(k, poisonPrefix) || k == transport.MetadataReceiveCount || k == transport.MetadataDeadLetterSource
}

// reencodeSQS returns the body and attributes of an SQS message with its
// metadata replaced by md (the payload, or its claim check, unchanged).
func reencodeSQS(body string, attrs map[string]string, md message.Metadata) (string, map[string]string, error) {
	msg, claimKey, err := edaaws.DecodeSQS(body, attrs)
	if err != nil {
		return "", nil, err
	}
	msg.Metadata = md
	return edaaws.EncodeSQS(msg, claimKey)
}

// decodePGMetadata and encodePGMetadata are the Postgres transport's
// metadata column codec.
var (
	decodePGMetadata = postgres.DecodeMetadata
	encodePGMetadata = postgres.EncodeMetadata
)
