package eda

import (
	"errors"
	"fmt"
)

// Sentinel errors; every error eda returns wraps one of them. Match with
// errors.Is.
var (
	// ErrInvalidConfig: a config, registration or handler is invalid. Returned
	// at construction time, never at the first message.
	ErrInvalidConfig = errors.New("eda: invalid config")
	// ErrDuplicateEvent: two event types register the same name, or a type
	// registers twice.
	ErrDuplicateEvent = errors.New("eda: duplicate event registration")
	// ErrUnregisteredEvent: an event type is published or handled before it
	// is registered.
	ErrUnregisteredEvent = errors.New("eda: event type not registered")
	// ErrUnknownEvent: a received message names an event type that no
	// handler on its queue accepts.
	ErrUnknownEvent = errors.New("eda: unknown event type")
	// ErrDecode: a received payload cannot be decoded into its event type.
	ErrDecode = errors.New("eda: cannot decode payload")
	// ErrEncode: an event cannot be encoded.
	ErrEncode = errors.New("eda: cannot encode event")
	// ErrSchemaVersion: a received message has a schema version the handler
	// does not accept.
	ErrSchemaVersion = errors.New("eda: unsupported schema version")
	// ErrPermanent marks an error that retrying cannot fix; see Permanent.
	ErrPermanent = errors.New("eda: permanent failure")
)

// permanentError marks its cause as permanent while keeping it visible to
// errors.Is and errors.As.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }

// Unwrap exposes both the cause and ErrPermanent.
func (e permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// Permanent marks err as permanent: retry middleware sends it straight to the
// poison queue. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil || IsPermanent(err) {
		return err
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or any error it wraps, was marked
// Permanent. Decode, unknown-event and schema-version errors are permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// MessageError describes why a received message could not be handled.
type MessageError struct {
	EventID   string // ce_id of the message, if any
	EventType string // ce_type of the message, if any
	Queue     string // the queue it was received from
	Err       error  // one of ErrUnknownEvent, ErrDecode, ErrSchemaVersion, wrapped
}

func (e *MessageError) Error() string {
	return fmt.Sprintf("queue %q, event %q (id %s): %v", e.Queue, e.EventType, e.EventID, e.Err)
}

// Unwrap returns the cause and ErrPermanent: a message error never heals by retrying.
func (e *MessageError) Unwrap() []error { return []error{e.Err, ErrPermanent} }
