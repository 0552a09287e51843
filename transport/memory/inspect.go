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
// Delayed counts messages published with a delivery delay that are not yet
// due; a message nacked with a redelivery delay counts as in flight until it
// is visible again, as SQS counts it (NotVisible). OldestAge is
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
	d := transport.Depth{InFlight: int64(len(q.inflight)), OldestAgeKnown: true}
	now := time.Now()
	var oldest time.Time
	older := func(e *entry) {
		if oldest.IsZero() || e.at.Before(oldest) {
			oldest = e.at
		}
	}
	waiting := func(e *entry) {
		if e.received == 0 {
			d.Delayed++
		} else {
			d.InFlight++
		}
		older(e)
	}
	for _, e := range q.ready {
		if e.visibleAt.After(now) { // FIFO keeps delayed entries in ready
			waiting(e)
			continue
		}
		d.Visible++
		older(e)
	}
	for e := range q.waiting {
		waiting(e)
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
