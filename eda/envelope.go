package eda

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// Metadata keys of the eda envelope. Each maps one to one onto a CloudEvents
// 1.0 attribute in binary content mode with the "ce_" prefix (as in the
// CloudEvents Kafka binding; SQS/SNS attribute names allow it): a consumer in
// another language reads ce_id, ce_type, ce_time... from the message
// attributes and the payload as the event data.
const (
	MetadataSpecVersion   = "ce_specversion"          // CloudEvents specversion, always "1.0"
	MetadataID            = transport.MetadataEventID // CloudEvents id: unique event id (UUIDv7)
	MetadataSource        = "ce_source"               // CloudEvents source: the publishing service (Config.Source)
	MetadataType          = "ce_type"                 // CloudEvents type: the event name
	MetadataTime          = "ce_time"                 // CloudEvents time: when the event occurred, RFC 3339
	MetadataContentType   = "ce_datacontenttype"      // CloudEvents datacontenttype: the codec's MIME type
	MetadataSchemaVersion = "ce_schemaversion"        // extension: the event's schema version, a positive integer
	MetadataCorrelationID = "ce_correlationid"        // extension: id shared by every event of one business flow
	MetadataCausationID   = "ce_causationid"          // extension: id of the event whose handling published this one
	MetadataOrderingKey   = transport.MetadataGroupID // extension "partitionkey": ordering key / FIFO group
)

// SpecVersion is the CloudEvents version the envelope follows.
const SpecVersion = "1.0"

// DefaultSchemaVersion is the schema version of a message that has no
// MetadataSchemaVersion (a producer not written with eda), and of an event
// type that does not implement Versioned.
const DefaultSchemaVersion = 1

// Envelope is the metadata every eda message carries.
type Envelope struct {
	ID            string
	Source        string
	Type          string
	Time          time.Time
	ContentType   string
	SchemaVersion int
	CorrelationID string
	CausationID   string
	OrderingKey   string
}

// EnvelopeOf reads the envelope from a message's metadata. Fields that are
// missing or malformed stay zero, but for a missing schema version, which is
// 1 (DefaultSchemaVersion: what a handler takes a message without one for).
func EnvelopeOf(msg *message.Message) Envelope {
	md := msg.Metadata
	env := Envelope{
		ID:            md.Get(MetadataID),
		Source:        md.Get(MetadataSource),
		Type:          md.Get(MetadataType),
		ContentType:   md.Get(MetadataContentType),
		CorrelationID: md.Get(MetadataCorrelationID),
		CausationID:   md.Get(MetadataCausationID),
		OrderingKey:   md.Get(MetadataOrderingKey),
	}
	env.Time, _ = time.Parse(time.RFC3339Nano, md.Get(MetadataTime))
	if v := md.Get(MetadataSchemaVersion); v == "" {
		env.SchemaVersion = DefaultSchemaVersion
	} else {
		env.SchemaVersion, _ = strconv.Atoi(v)
	}
	return env
}

// Apply writes the envelope into md. Empty optional fields are left out.
func (e Envelope) Apply(md message.Metadata) {
	md[MetadataSpecVersion] = SpecVersion
	md[MetadataID] = e.ID
	md[MetadataSource] = e.Source
	md[MetadataType] = e.Type
	md[MetadataTime] = e.Time.UTC().Format(time.RFC3339Nano)
	md[MetadataContentType] = e.ContentType
	md[MetadataSchemaVersion] = strconv.Itoa(e.SchemaVersion)
	md[MetadataCorrelationID] = e.CorrelationID
	if e.CausationID != "" {
		md[MetadataCausationID] = e.CausationID
	}
	if e.OrderingKey != "" {
		md[MetadataOrderingKey] = e.OrderingKey
	}
}

// Validate reports whether the envelope has every required attribute.
func (e Envelope) Validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: envelope has no %s", ErrInvalidConfig, MetadataID)
	case e.Type == "":
		return fmt.Errorf("%w: envelope has no %s", ErrInvalidConfig, MetadataType)
	case e.SchemaVersion < 1:
		return fmt.Errorf("%w: envelope schema version %d", ErrInvalidConfig, e.SchemaVersion)
	}
	return nil
}

type ctxKey struct{}

// msgContext is a handler's context: it carries the handled message, from
// which EnvelopeFromContext reads lazily. It is context.WithValue's job
// done without a separate allocation.
type msgContext struct {
	context.Context
	msg *message.Message
}

func (c *msgContext) Value(key any) any {
	if key == (ctxKey{}) {
		return c.msg
	}
	return c.Context.Value(key)
}

// MessageFromContext returns the message being handled, if ctx is a handler's.
func MessageFromContext(ctx context.Context) (*message.Message, bool) {
	msg, ok := ctx.Value(ctxKey{}).(*message.Message)
	return msg, ok
}

// EnvelopeFromContext returns the envelope of the message being handled, if
// ctx is a handler's context.
func EnvelopeFromContext(ctx context.Context) (Envelope, bool) {
	msg, ok := MessageFromContext(ctx)
	if !ok {
		return Envelope{}, false
	}
	return EnvelopeOf(msg), true
}
