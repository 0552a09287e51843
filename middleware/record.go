package middleware

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// record is what the middleware of one stack learn about one delivery of a
// message: Retry writes the attempts and failure times, Poison reads them and
// writes why it poisoned, Metrics and Logging report them. The outermost
// middleware that asks creates it in the message context; the inner ones
// find it there. One delivery is handled by one goroutine, so it needs no
// lock.
type record struct {
	attempts     int       // handler calls in this delivery
	firstFailure time.Time // first failed call in this delivery
	lastFailure  time.Time // last failed call in this delivery
	retries      int       // in-process retries (attempts after the first)
	poisoned     string    // the Reason it was poisoned with, if it was
	retried      bool      // Retry ran (attempts are counted)
	lastErr      error     // of the last failed call
}

type recordKey struct{}

// recordOf returns the delivery record of msg, creating it in msg's context
// when absent.
func recordOf(msg *message.Message) *record {
	if r, ok := msg.Context().Value(recordKey{}).(*record); ok {
		return r
	}
	r := &record{}
	msg.SetContext(context.WithValue(msg.Context(), recordKey{}, r))
	return r
}

// failed records a failed handler call at now.
func (r *record) failed(now time.Time, err error) {
	r.lastErr = err
	if r.firstFailure.IsZero() {
		r.firstFailure = now
	}
	r.lastFailure = now
}
