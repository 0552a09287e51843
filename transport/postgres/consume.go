package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/transport"
)

// settleTimeout bounds the queries that settle or give back messages after
// the consumer's context is done.
const settleTimeout = 10 * time.Second

// Subscribe starts one consumer of queue. The channel closes when ctx is
// cancelled or the transport is closed. Messages the consumer received but
// did not hand out are given back at once; a message in a handler at that
// moment can still be acked or nacked until its visibility timeout, after
// which it is delivered again.
func (t *Transport) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	if t.isClosed() {
		return nil, transport.ErrClosed
	}
	c := &consumer{t: t, name: queue, wake: make(chan struct{}, 1), out: make(chan *message.Message)}
	var vt int64
	err := t.pool.QueryRow(ctx, t.q.selectQueue, queue).Scan(&c.fifo, &vt, &c.maxReceive, &c.dlq)
	if err == pgx.ErrNoRows {
		return nil, fmt.Errorf("%w: postgres: %q (declare it first)", transport.ErrUnknownQueue, queue)
	}
	if err != nil {
		return nil, classify("subscribe to "+queue, err)
	}
	c.vt = time.Duration(vt) * time.Microsecond

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, transport.ErrClosed
	}
	if !t.cfg.DisableNotify {
		t.startListenerLocked()
	}
	if t.waiters[queue] == nil {
		t.waiters[queue] = map[chan struct{}]struct{}{}
	}
	t.waiters[queue][c.wake] = struct{}{}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(c.out)
		defer t.unregister(queue, c.wake)
		c.run(ctx)
	}()
	return c.out, nil
}

type consumer struct {
	t          *Transport
	name       string
	fifo       bool
	vt         time.Duration
	maxReceive int
	dlq        string
	wake       chan struct{}
	out        chan *message.Message

	buf       []received // received, not yet handed out
	fetched   time.Time  // when buf was received (before the query: a lower bound of the lease start)
	delivered int        // messages of this batch handed out
}

type received struct {
	id       int64
	uuid     string
	payload  []byte
	metadata []byte
	count    int32
	dlSource string
}

func (c *consumer) run(ctx context.Context) {
	t := c.t
	defer func() { c.release(ctx, c.buf) }()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.closing:
			return
		default:
		}
		if len(c.buf) == 0 {
			n, err := c.fetch(ctx)
			if err != nil && ctx.Err() == nil {
				failures++
				t.log.Error("postgres transport: receive failed", "queue", c.name, "error", err, "failures", failures)
				c.sleep(ctx, min(t.cfg.PollInterval, time.Duration(failures)*100*time.Millisecond))
				continue
			}
			failures = 0
			if n == 0 {
				c.idle(ctx)
			}
			continue
		}
		r := c.buf[0]
		// A message that waited in buf for half its lease is given back with
		// the rest: its lease could expire in the handler, and another
		// consumer would get it too. The first of a batch always goes.
		if c.delivered > 0 && time.Since(c.fetched) > c.vt/2 {
			c.release(ctx, c.buf)
			c.buf = nil
			continue
		}
		c.buf = c.buf[1:]
		c.delivered++
		msg, err := c.message(r)
		if err != nil {
			// Undecodable row: never hand out garbage. It stays leased, comes
			// back after the visibility timeout and, with a DLQ, ends there.
			t.log.Error("postgres transport: bad message row", "queue", c.name, "id", r.id, "error", err)
			continue
		}
		msgCtx, cancel := context.WithCancel(ctx)
		msg.SetContext(msgCtx)
		select {
		case c.out <- msg:
		case <-ctx.Done():
			cancel()
			c.release(ctx, []received{r})
			return
		case <-t.closing:
			cancel()
			c.release(ctx, []received{r})
			return
		}
		select {
		case <-msg.Acked():
			c.settle(ctx, r, true)
			cancel()
		case <-msg.Nacked():
			c.settle(ctx, r, false)
			cancel()
		case <-ctx.Done():
			// Stopping with a message in its handler: keep listening for its
			// verdict until the lease ends, as SQS honours a late DeleteMessage.
			lease := time.Until(c.fetched.Add(c.vt))
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer cancel()
				timer := time.NewTimer(lease)
				defer timer.Stop()
				select {
				case <-msg.Acked():
					c.settle(ctx, r, true)
				case <-msg.Nacked():
					c.settle(ctx, r, false)
				case <-t.closing:
				case <-timer.C:
				}
			}()
			return
		case <-t.closing:
			cancel()
			return
		}
	}
}

// fetch receives up to BatchSize messages into buf, moving those over the
// queue's MaxReceiveCount to its dead-letter queue on the way.
func (c *consumer) fetch(ctx context.Context) (int, error) {
	t := c.t
	q := t.q.claim
	if c.fifo {
		q = t.q.claimFIFO
	}
	start := time.Now()
	rows, err := t.pool.Query(ctx, q, c.name, t.cfg.BatchSize, c.vt.Microseconds())
	if err != nil {
		return 0, classify("receive from "+c.name, err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (received, error) {
		var m received
		return m, r.Scan(&m.id, &m.uuid, &m.payload, &m.metadata, &m.count, &m.dlSource)
	})
	if err != nil {
		return 0, classify("receive from "+c.name, err)
	}
	slices.SortFunc(got, func(a, b received) int { return cmp.Compare(a.id, b.id) })
	if c.maxReceive > 0 && c.dlq != "" {
		var deadIDs []int64
		var deadCounts []int32
		keep := got[:0]
		for _, m := range got {
			if int(m.count) > c.maxReceive {
				deadIDs = append(deadIDs, m.id)
				deadCounts = append(deadCounts, m.count)
			} else {
				keep = append(keep, m)
			}
		}
		got = keep
		if len(deadIDs) > 0 {
			if err := c.deadLetter(ctx, deadIDs, deadCounts); err != nil {
				// They stay leased and are moved on their next receive.
				t.log.Error("postgres transport: moving to dead-letter queue failed", "queue", c.name, "dlq", c.dlq, "error", err)
			}
			if len(got) == 0 {
				return len(deadIDs), nil // look again at once
			}
		}
	}
	c.buf, c.fetched, c.delivered = got, start, 0
	return len(got), nil
}

func (c *consumer) deadLetter(ctx context.Context, ids []int64, counts []int32) error {
	t := c.t
	b := &pgx.Batch{}
	b.Queue(t.q.deadLetter, ids, counts, c.dlq, c.name)
	if !t.cfg.DisableNotify {
		b.Queue(`SELECT pg_notify($1, $2)`, t.channel, c.dlq)
	}
	return classify("move to dead-letter queue "+c.dlq, t.pool.SendBatch(ctx, b).Close())
}

func (c *consumer) message(r received) (*message.Message, error) {
	md, err := decodeMetadata(r.metadata)
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(r.uuid, r.payload)
	msg.Metadata = md
	msg.Metadata.Set(transport.MetadataReceiveCount, strconv.Itoa(int(r.count)))
	if r.dlSource != "" {
		msg.Metadata.Set(transport.MetadataDeadLetterSource, r.dlSource)
	}
	return msg, nil
}

// settle acks (delete) or nacks (visible again now) r. A failure leaves the
// message to its visibility timeout: at-least-once either way.
func (c *consumer) settle(ctx context.Context, r received, ack bool) {
	t := c.t
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	var err error
	switch {
	case ack && c.fifo && !t.cfg.DisableNotify:
		_, err = t.pool.Exec(ctx, t.q.ackNotify, r.id, r.count, t.channel, c.name)
	case ack:
		_, err = t.pool.Exec(ctx, t.q.ack, r.id, r.count)
	default:
		_, err = t.pool.Exec(ctx, t.q.nack, r.id, r.count)
	}
	if err != nil {
		t.log.Error("postgres transport: settling a message failed; it is delivered again after its visibility timeout",
			"queue", c.name, "id", r.id, "ack", ack, "error", classify("settle", err))
	}
}

// release gives back received messages that were never handed out.
func (c *consumer) release(ctx context.Context, rs []received) {
	if len(rs) == 0 {
		return
	}
	t := c.t
	ids := make([]int64, len(rs))
	counts := make([]int32, len(rs))
	for i, r := range rs {
		ids[i], counts[i] = r.id, r.count
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if _, err := t.pool.Exec(ctx, t.q.release, ids, counts); err != nil {
		t.log.Error("postgres transport: giving back messages failed; they are delivered again after their visibility timeout",
			"queue", c.name, "count", len(rs), "error", classify("release", err))
	}
}

// idle waits for a notification, the next lease expiry of the queue or the
// poll interval, whichever comes first.
func (c *consumer) idle(ctx context.Context) {
	t := c.t
	wait := t.cfg.PollInterval
	var secs *float64
	if err := t.pool.QueryRow(ctx, t.q.nextVisible, c.name).Scan(&secs); err == nil && secs != nil {
		wait = min(wait, time.Duration(*secs*float64(time.Second))+time.Millisecond)
	}
	t.cleanDedup(ctx)
	c.sleep(ctx, wait)
}

func (c *consumer) sleep(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-c.wake:
	case <-ctx.Done():
	case <-c.t.closing:
	}
}

// cleanDedup deletes expired deduplication ids, at most once a minute per
// transport. Expired ids left behind are harmless: a publish takes them over.
func (t *Transport) cleanDedup(ctx context.Context) {
	t.mu.Lock()
	due := time.Since(t.lastCleanup) > time.Minute
	if due {
		t.lastCleanup = time.Now()
	}
	t.mu.Unlock()
	if !due {
		return
	}
	if _, err := t.pool.Exec(ctx, t.q.cleanDedup); err != nil && ctx.Err() == nil {
		t.log.Warn("postgres transport: deleting expired deduplication ids failed", "error", err)
	}
}
