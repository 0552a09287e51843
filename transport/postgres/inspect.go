package postgres

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

// depthsSQL counts the rows of each queue $1 names by state, in one scan of
// each queue's primary-key range: visible (visible_at reached), in flight
// (leased by a receive, or nacked with a redelivery delay: received before,
// not visible now) and delayed (never received, not visible yet: a delivery
// time to come). The oldest age is over the visible and in-flight rows, from
// published_at, which a dead-lettered row resets (its age in the DLQ).
const depthsSQL = `
SELECT q.name,
	count(m.id) FILTER (WHERE m.visible_at <= now()),
	count(m.id) FILTER (WHERE m.visible_at > now() AND m.receive_count > 0),
	count(m.id) FILTER (WHERE m.visible_at > now() AND m.receive_count = 0),
	coalesce(extract(epoch FROM now() - min(m.published_at) FILTER (WHERE m.visible_at <= now() OR m.receive_count > 0)), 0)::float8
FROM {{schema}}.queues q
LEFT JOIN {{schema}}.messages m ON m.queue = q.name
WHERE q.name = ANY($1::text[])
GROUP BY q.name`

// QueueDepth reads the depth of queue with one query; OldestAgeKnown is
// true. See QueueDepths.
func (t *Transport) QueueDepth(ctx context.Context, queue string) (transport.Depth, error) {
	ds, err := t.QueueDepths(ctx, []string{queue})
	if err != nil {
		return transport.Depth{}, err
	}
	return ds[queue], nil
}

// QueueDepths reads the depths of several queues with one query, which
// counts each queue's rows: its cost grows with the backlog, so call it at an
// interval, not per message. A name that is not a declared queue is an
// ErrUnknownQueue error (and nothing is returned).
func (t *Transport) QueueDepths(ctx context.Context, queues []string) (map[string]transport.Depth, error) {
	if t.isClosed() {
		return nil, transport.ErrClosed
	}
	rows, err := t.pool.Query(ctx, expand(depthsSQL, t.cfg.Schema), queues)
	if err != nil {
		return nil, classify("queue depths", err)
	}
	defer rows.Close()
	out := make(map[string]transport.Depth, len(queues))
	for rows.Next() {
		var (
			name string
			d    transport.Depth
			age  float64
		)
		if err := rows.Scan(&name, &d.Visible, &d.InFlight, &d.Delayed, &age); err != nil {
			return nil, classify("queue depths", err)
		}
		d.OldestAge, d.OldestAgeKnown = max(time.Duration(age*float64(time.Second)), 0), true
		out[name] = d
	}
	if err := rows.Err(); err != nil {
		return nil, classify("queue depths", err)
	}
	for _, q := range queues {
		if _, ok := out[q]; !ok {
			return nil, fmt.Errorf("%w: postgres: %q in schema %s", transport.ErrUnknownQueue, q, t.cfg.Schema)
		}
	}
	return out, nil
}

// Ping checks that the database answers (pgxpool's Ping: acquire a
// connection and run an empty statement).
func (t *Transport) Ping(ctx context.Context) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	return classify("ping", t.pool.Ping(ctx))
}
