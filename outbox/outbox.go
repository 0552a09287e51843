package outbox

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

// Encoder turns a typed event into its topic and a message carrying the eda
// envelope. *eda.App implements it. Each call returns a new message, which
// the outbox then owns (it keeps the metadata map without copying it).
type Encoder interface {
	NewMessage(ctx context.Context, e eda.Event) (topic string, msg *message.Message, err error)
}

var _ Encoder = (*eda.App)(nil)

// State of a stored event.
type State int

// States of a stored event. Only Pending rows are published; Failed rows
// wait for Retry or Discard; Published and Discarded rows wait for the
// retention cleanup.
const (
	Pending   State = 0
	Published State = 1
	Failed    State = 2
	Discarded State = 3
)

func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Published:
		return "published"
	case Failed:
		return "failed"
	case Discarded:
		return "discarded"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Record is one event as stored in the outbox.
type Record struct {
	// Seq is the store's sequence number; within an ordering key, events are
	// published in Seq order. Set by the store.
	Seq int64
	// EventID is the eda event id (transport.MetadataEventID), also the
	// Watermill message UUID.
	EventID string
	// Topic the event is published to.
	Topic string
	// Payload is the encoded event.
	Payload []byte
	// Metadata is the message metadata: the eda envelope (ce_*) and any
	// other keys.
	Metadata message.Metadata
	// OrderingKey groups events that must be published in order
	// (transport.MetadataGroupID). Empty: no ordering constraint.
	OrderingKey string
	// DedupID is the deduplication id (transport.MetadataDedupID), if any.
	DedupID string
	// CreatedAt is when the event was written.
	CreatedAt time.Time
	// DeliverAt, when set, is when the event is due (eda.At, eda.After:
	// transport.MetadataDeliverAt, which the record keeps here rather than
	// in Metadata). The relay publishes it no earlier: at that time, or
	// before with the remaining delay when its publisher delays delivery
	// (transport.Features.DelayedDelivery). A record with a due time is
	// outside its ordering key's order: it neither waits for older records
	// of its key nor holds back newer ones, since it is explicitly
	// scheduled.
	DeliverAt time.Time
	// State, Attempts and LastError describe the publishing progress. Set by
	// the store.
	State     State
	Attempts  int
	LastError string
}

// NewRecord builds the record of msg published to topic.
func NewRecord(topic string, msg *message.Message) (Record, error) {
	return toRecord(topic, msg, true)
}

// toRecord is NewRecord, sharing msg's metadata unless clone.
func toRecord(topic string, msg *message.Message, clone bool) (Record, error) {
	if msg == nil {
		return Record{}, fmt.Errorf("%w: nil message", ErrInvalidEvent)
	}
	if topic == "" {
		return Record{}, fmt.Errorf("%w: message %s has no topic", ErrInvalidEvent, msg.UUID)
	}
	md := msg.Metadata
	if clone || md == nil {
		md = make(message.Metadata, len(md))
		maps.Copy(md, msg.Metadata)
	}
	var deliverAt time.Time
	if v, ok := md[transport.MetadataDeliverAt]; ok {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return Record{}, fmt.Errorf("%w: message %s: metadata %s %q: %v", ErrInvalidEvent, msg.UUID, transport.MetadataDeliverAt, v, err)
		}
		deliverAt = t.UTC()
		delete(md, transport.MetadataDeliverAt)
	}
	id := md.Get(transport.MetadataEventID)
	if id == "" {
		id = msg.UUID
	}
	if id == "" {
		return Record{}, fmt.Errorf("%w: message to %q has neither %s nor UUID", ErrInvalidEvent, topic, transport.MetadataEventID)
	}
	return Record{
		EventID:     id,
		Topic:       topic,
		Payload:     msg.Payload,
		Metadata:    md,
		OrderingKey: md.Get(transport.MetadataGroupID),
		DedupID:     md.Get(transport.MetadataDedupID),
		CreatedAt:   time.Now().UTC(),
		DeliverAt:   deliverAt,
	}, nil
}

// Encode encodes events with enc into records, in order.
func Encode(ctx context.Context, enc Encoder, events ...eda.Event) ([]Record, error) {
	if enc == nil {
		return nil, fmt.Errorf("%w: nil Encoder", ErrInvalidConfig)
	}
	recs := make([]Record, 0, len(events))
	for i, e := range events {
		topic, msg, err := enc.NewMessage(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("%w: event %d (%T): %w", ErrInvalidEvent, i, e, err)
		}
		r, err := toRecord(topic, msg, false) // the message is new and ours
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// Message rebuilds the Watermill message of r, without its due time (the
// relay sets transport.MetadataDeliverAt when it publishes early).
func (r Record) Message() *message.Message {
	msg := message.NewMessage(r.EventID, r.Payload)
	for k, v := range r.Metadata {
		msg.Metadata[k] = v
	}
	return msg
}

// Errors of the outbox; each is wrapped with context, match with errors.Is.
var (
	// ErrInvalidConfig: a config is invalid.
	ErrInvalidConfig = errors.New("outbox: invalid config")
	// ErrInvalidEvent: an event cannot be written (not registered, cannot
	// be encoded, no topic).
	ErrInvalidEvent = errors.New("outbox: invalid event")
	// ErrNotMigrated: the outbox schema is missing or older than this code
	// needs; run Migrate.
	ErrNotMigrated = errors.New("outbox: schema not migrated")
	// ErrCorruptRecord: a stored row cannot be decoded.
	ErrCorruptRecord = errors.New("outbox: corrupt record")
	// ErrNotFailed: Retry or Discard named a row that is not in the failed
	// state.
	ErrNotFailed = errors.New("outbox: record is not failed")
)
