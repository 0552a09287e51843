package eda

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// Delayed is an event to be delivered no earlier than a given time; At and
// After build it. App.Publish and App.NewMessage encode the event it wraps
// and set transport.MetadataDeliverAt on its message; an outbox stores the
// due time and relays the event then.
//
// App.Publish refuses a delay the transport cannot honour (no
// Features.DelayedDelivery, or longer than Features.MaxDeliveryDelay) with
// an error wrapping transport.ErrDelayUnsupported, before anything is
// published: a delayed event is never delivered early. Publish through an
// outbox for delays the transport does not support.
type Delayed struct {
	// Event is the event to deliver.
	Event Event
	// At is when to deliver it; a time in the past delivers at once.
	At time.Time
	// After, when At is zero, is how long after encoding (App.Publish,
	// App.NewMessage, an outbox Write) to deliver it. Not negative.
	After time.Duration
}

// At returns e to be delivered no earlier than t. A time in the past
// delivers at once.
func At(t time.Time, e Event) Delayed { return Delayed{Event: e, At: t} }

// After returns e to be delivered no earlier than d after it is published
// (or written to an outbox). d must not be negative; 0 delivers at once.
func After(d time.Duration, e Event) Delayed { return Delayed{Event: e, After: d} }

// EventName returns the wrapped event's name.
func (d Delayed) EventName() string {
	if d.Event == nil {
		return ""
	}
	return d.Event.EventName()
}

// deliverAt returns the due time of d at now.
func (d Delayed) deliverAt(now time.Time) (time.Time, error) {
	switch {
	case d.Event == nil:
		return time.Time{}, fmt.Errorf("%w: delayed nil event", ErrInvalidConfig)
	case d.After < 0:
		return time.Time{}, fmt.Errorf("%w: %s: negative delay %s", ErrInvalidConfig, d.Event.EventName(), d.After)
	case !d.At.IsZero() && d.After != 0:
		return time.Time{}, fmt.Errorf("%w: %s: both At and After are set", ErrInvalidConfig, d.Event.EventName())
	case !d.At.IsZero():
		return d.At, nil
	}
	return now.Add(d.After), nil
}

// unwrapDelayed returns the event e wraps (or e) and its due time, zero
// when e is not delayed. Nested wrappers: the innermost event, the latest
// time.
func unwrapDelayed(e Event, now time.Time) (Event, time.Time, error) {
	var at time.Time
	for {
		d, ok := e.(Delayed)
		if !ok {
			if p, isPtr := e.(*Delayed); isPtr && p != nil {
				d, ok = *p, true
			}
		}
		if !ok {
			return e, at, nil
		}
		t, err := d.deliverAt(now)
		if err != nil {
			return nil, time.Time{}, err
		}
		if t.After(at) {
			at = t
		}
		e = d.Event
	}
}

// checkDelay reports whether the app's publisher can deliver msg at its
// MetadataDeliverAt: the features are the publisher's when it has a
// Features method, else the transport's.
func (a *App) checkDelay(topic string, msg *message.Message, now time.Time) error {
	at, ok, err := transport.DeliverAt(msg)
	if err != nil || !ok {
		return err
	}
	d := at.Sub(now)
	if d <= 0 {
		return nil
	}
	f := a.cfg.Transport.Features()
	if fp, ok := a.cfg.Publisher.(interface{ Features() transport.Features }); ok {
		f = fp.Features()
	}
	switch {
	case !f.DelayedDelivery:
		return fmt.Errorf("%w: %s to %q: delay %s: the publisher has no delayed delivery (publish it through an outbox)",
			transport.ErrDelayUnsupported, msg.Metadata.Get(MetadataType), topic, d.Round(time.Millisecond))
	case f.MaxDeliveryDelay > 0 && d > f.MaxDeliveryDelay:
		return fmt.Errorf("%w: %s to %q: delay %s is over the publisher's maximum %s (publish it through an outbox)",
			transport.ErrDelayUnsupported, msg.Metadata.Get(MetadataType), topic, d.Round(time.Millisecond), f.MaxDeliveryDelay)
	}
	return nil
}
