package memory

import (
	"context"
	"fmt"
	"time"

	"github.com/edaproject/eda/transport"
)

var (
	_ transport.Inspector = (*Transport)(nil)
	_ transport.Pinger    = (*Transport)(nil)
)

// QueueDepth reads the queue's depth from the transport's own state, exactly.
// The memory transport has no delayed delivery, so Delayed is 0. OldestAge is
// the age of the oldest message visible or in flight: a message moved to a
// dead-letter queue is as old as its time there.
func (t *Transport) QueueDepth(_ context.Context, queueName string) (transport.Depth, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.Depth{}, transport.ErrClosed
	}
	q, ok := t.queues[queueName]
	if !ok {
		return transport.Depth{}, fmt.Errorf("%w: memory: %q", transport.ErrUnknownQueue, queueName)
	}
	d := transport.Depth{Visible: int64(len(q.ready)), InFlight: int64(len(q.inflight)), OldestAgeKnown: true}
	var oldest time.Time
	older := func(e *entry) {
		if oldest.IsZero() || e.at.Before(oldest) {
			oldest = e.at
		}
	}
	for _, e := range q.ready {
		older(e)
	}
	for e := range q.inflight {
		older(e)
	}
	if !oldest.IsZero() {
		d.OldestAge = max(time.Since(oldest), 0)
	}
	return d, nil
}

// Ping succeeds until the transport is closed: there is no broker to reach.
func (t *Transport) Ping(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	return nil
}
