package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
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
// which it is delivered again. The consumer reads the queue's settings
// (FIFO, visibility timeout, dead-letter queue) when it starts.
func (t *Transport) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	if t.isClosed() {
		return nil, transport.ErrClosed
	}
	c := &consumer{t: t, name: queue, wake: make(chan struct{}, 1), out: make(chan *message.Message), turn: t.turn(queue)}
	var vt int64
	err := t.pool.QueryRow(ctx, t.q.selectQueue, queue).Scan(&c.fifo, &vt, &c.maxReceive, &c.dlq)
	if errors.Is(err, pgx.ErrNoRows) {
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
	turn       chan struct{} // held while receiving: shared by the queue's consumers in this transport
	out        chan *message.Message
	beat       *time.Ticker // the heartbeat: every third of vt

	buf       []received    // received, not yet handed out
	fetched   time.Time     // when buf was received (before the query: a lower bound of the lease start)
	arrived   time.Time     // when the query receiving buf returned
	took      time.Duration // how long that query took
	size      int           // index into t.q.sizes of the next query's batch size
	full      bool          // buf was a full batch
	delivered int           // messages of this batch handed out
	pending   []verdict     // acks and nacks not yet written
	pendingAt time.Time     // when the oldest pending verdict was given
}

type verdict struct {
	r     received
	ack   bool
	delay time.Duration // of a nack: visible again only after it
}

type received struct {
	id       int64
	uuid     string
	payload  []byte
	metadata []byte
	count    int32
	dlSource string
}

// The handler never waits for the database: Ack and Nack return at once, as
// in every Watermill subscriber. Verdicts are written with the next receive
// query, in one round trip and one transaction, so a consumer costs one
// round trip per batch; an ack also unblocks the next message of a FIFO group
// and a nack makes its message receivable again within that same query.
// Verdicts wait at most flushDelay (a quarter of the visibility timeout, at
// most maxFlushDelay) while a handler runs, so that an acked message's lease
// cannot expire before its ack is written.
const maxFlushDelay = 50 * time.Millisecond

func (c *consumer) flushDelay() time.Duration { return min(c.vt/4, maxFlushDelay) }

func (c *consumer) run(ctx context.Context) {
	t := c.t
	c.beat = time.NewTicker(max(c.vt/3, time.Millisecond))
	defer c.beat.Stop()
	defer func() {
		c.release(ctx, c.buf)
		c.flush(ctx)
	}()
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
		if !c.deliver(ctx, r, msg) {
			return
		}
	}
}

// deliver hands msg to the subscriber and waits for its verdict; false means
// the consumer is stopping. Until then it renews the message's lease every
// third of the visibility timeout (heartbeat), so a handler may run longer
// than the visibility timeout.
func (c *consumer) deliver(ctx context.Context, r received, msg *message.Message) bool {
	t := c.t
	msgCtx, cancel := context.WithCancel(ctx)
	msg.SetContext(msgCtx)
	var flushTimer <-chan time.Time
	if len(c.pending) > 0 {
		timer := time.NewTimer(max(0, c.flushDelay()-time.Since(c.pendingAt)))
		defer timer.Stop()
		flushTimer = timer.C
	}
	leased := c.fetched // the lease runs vt from here (a lower bound)
	for sent := false; !sent; {
		select {
		case c.out <- msg:
			sent = true
		case <-flushTimer:
			c.flush(ctx)
			flushTimer = nil
		case <-c.beat.C:
			if at := time.Now(); c.extend(ctx, r) {
				leased = at
			}
		case <-ctx.Done():
			cancel()
			c.release(ctx, []received{r})
			return false
		case <-t.closing:
			cancel()
			c.release(ctx, []received{r})
			return false
		}
	}
	for {
		select {
		case <-msg.Acked():
			c.record(verdict{r: r, ack: true})
			cancel()
			return true
		case <-msg.Nacked():
			c.record(verdict{r: r, delay: transport.RedeliveryDelay(msg)})
			cancel()
			return true
		case <-flushTimer:
			c.flush(ctx)
			flushTimer = nil
		case <-c.beat.C:
			if at := time.Now(); c.extend(ctx, r) {
				leased = at
			}
		case <-ctx.Done():
			// Stopping with a message in its handler: no more heartbeat;
			// keep listening for its verdict until the lease ends, as SQS
			// honours a late DeleteMessage.
			lease := time.Until(leased.Add(c.vt))
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer cancel()
				timer := time.NewTimer(lease)
				defer timer.Stop()
				select {
				case <-msg.Acked():
					c.settle(ctx, []verdict{{r: r, ack: true}})
				case <-msg.Nacked():
					c.settle(ctx, []verdict{{r: r, delay: transport.RedeliveryDelay(msg)}})
				case <-t.closing:
				case <-timer.C:
				}
			}()
			return false
		case <-t.closing:
			select { // a verdict given just before Close still counts
			case <-msg.Acked():
				c.record(verdict{r: r, ack: true})
			case <-msg.Nacked():
				c.record(verdict{r: r, delay: transport.RedeliveryDelay(msg)})
			default:
			}
			cancel()
			return false
		}
	}
}

// extend renews the lease of r for a visibility timeout from now; false if
// that failed (the lease may run out: at-least-once either way).
func (c *consumer) extend(ctx context.Context, r received) bool {
	ctx, cancel := context.WithTimeout(ctx, c.vt/3)
	defer cancel()
	b := asyncCommit()
	b.Queue(c.t.q.extend, []int64{r.id}, []int32{r.count}, c.name, c.vt.Microseconds())
	if err := c.t.pool.SendBatch(ctx, b).Close(); err != nil {
		if ctx.Err() == nil {
			c.t.log.Warn("postgres transport: renewing a lease failed", "queue", c.name, "id", r.id, "error", classify("heartbeat", err))
		}
		return false
	}
	return true
}

func (c *consumer) record(v verdict) {
	if len(c.pending) == 0 {
		c.pendingAt = time.Now()
	}
	c.pending = append(c.pending, v)
}

// flush writes pending verdicts on their own.
func (c *consumer) flush(ctx context.Context) {
	if len(c.pending) == 0 {
		return
	}
	c.settle(ctx, c.pending)
	c.pending = nil
}

// settle writes verdicts now. A failure leaves the messages to their
// visibility timeout: at-least-once either way.
func (c *consumer) settle(ctx context.Context, vs []verdict) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	b := asyncCommit()
	wake := c.queueVerdicts(b, vs)
	if err := c.t.pool.SendBatch(ctx, b).Close(); err != nil {
		c.t.log.Error("postgres transport: settling messages failed; they are delivered again after their visibility timeout",
			"queue", c.name, "count", len(vs), "error", classify("settle", err))
		return
	}
	if wake {
		c.t.wakeQueue(c.name)
	}
}

// queueVerdicts adds the statements that write vs to b: acks delete, nacks
// make visible again now or after their redelivery delay. The receipt check (receive_count) makes a verdict
// on a message whose lease expired and which was received again a no-op. It
// reports whether the queue's consumers should be woken: a nack, or an ack
// that unblocks a FIFO group, makes a message receivable.
func (c *consumer) queueVerdicts(b *pgx.Batch, vs []verdict) (wake bool) {
	t := c.t
	var ackIDs, nackIDs []int64
	var ackCounts, nackCounts []int32
	var nackDelays []int64 // µs
	nowVisible := false
	for _, v := range vs {
		if v.ack {
			ackIDs, ackCounts = append(ackIDs, v.r.id), append(ackCounts, v.r.count)
		} else {
			nackIDs, nackCounts = append(nackIDs, v.r.id), append(nackCounts, v.r.count)
			nackDelays = append(nackDelays, int64(math.Ceil(float64(v.delay)/float64(time.Microsecond))))
			nowVisible = nowVisible || v.delay <= 0
		}
	}
	if len(ackIDs) > 0 {
		b.Queue(t.q.ack, ackIDs, ackCounts, c.name)
	}
	if len(nackIDs) > 0 {
		b.Queue(t.q.nack, nackIDs, nackCounts, c.name, nackDelays)
	}
	wake = nowVisible || (c.fifo && len(ackIDs) > 0)
	if wake && !t.cfg.DisableNotify {
		b.Queue(`SELECT pg_notify($1, $2)`, t.channel, c.name)
	}
	return wake
}

// fetch writes pending verdicts and receives up to a batch of messages into
// buf, in one round trip, moving those over the queue's MaxReceiveCount to its
// dead-letter queue on the way.
//
// The batch is BatchSize, grown tenfold (up to MaxBatchSize) after each full batch
// whose handlers all finished before a query's time had passed, and back to
// BatchSize after one that took longer: such handlers are waiting for the
// database, and fewer, larger queries serve them better.
func (c *consumer) fetch(ctx context.Context) (int, error) {
	t := c.t
	start := time.Now()
	if !c.arrived.IsZero() {
		switch handled := start.Sub(c.arrived); {
		case handled >= c.took:
			c.size = 0
		case c.full:
			c.size = min(c.size+1, len(t.q.sizes)-1)
		}
	}
	q := t.q.claim[c.size]
	if c.fifo {
		q = t.q.claimFIFO[c.size]
	}
	b := asyncCommit()
	wake := c.queueVerdicts(b, c.pending)
	b.Queue(q, c.name, c.vt.Microseconds())
	// The queue's consumers in this transport receive in turns: two
	// receives at once skip each other's rows and lock rows the other is
	// acking (a row leased between a receive's snapshot and its lock is
	// locked in its new version, then skipped, until the receive commits),
	// so they cost each other time on the server.
	select {
	case c.turn <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	br := t.pool.SendBatch(ctx, b)
	var err error
	for range b.Len() - 1 {
		if _, err = br.Exec(); err != nil {
			break
		}
	}
	var got []received
	if err == nil {
		var rows pgx.Rows
		rows, err = br.Query()
		if err == nil {
			got, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (received, error) {
				var m received
				return m, r.Scan(&m.id, &m.uuid, &m.payload, &m.metadata, &m.count, &m.dlSource)
			})
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	<-c.turn
	if err != nil {
		c.arrived = time.Time{}
		return 0, classify("receive from "+c.name, err) // verdicts stay pending
	}
	c.arrived = time.Now()
	c.took, c.full = c.arrived.Sub(start), len(got) == t.q.sizes[c.size]
	c.pending = nil
	if wake {
		t.wakeQueue(c.name)
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
	b := asyncCommit()
	b.Queue(t.q.deadLetter, ids, counts, c.dlq, c.name)
	if !t.cfg.DisableNotify {
		b.Queue(`SELECT pg_notify($1, $2)`, t.channel, c.dlq)
	}
	return classify("move to dead-letter queue "+c.dlq, t.pool.SendBatch(ctx, b).Close())
}

func (c *consumer) message(r received) (*message.Message, error) {
	md, err := DecodeMetadata(r.metadata)
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

// asyncCommit starts a batch (one implicit transaction) that commits without
// waiting for the WAL flush. Only consumer-side bookkeeping uses it: losing
// its last commits in a database crash means a lease, ack or nack is undone,
// so a message is delivered again, which at-least-once allows. Publishing
// always commits synchronously.
//
// The same statement turns sequential and bitmap scans, hash and merge joins
// off for the transaction, so that the consumer's statements walk the
// (queue, id) index in order and stop at their LIMIT (as the outbox's claim
// does). The planner costs "queue = $1" at the average rows per queue: with
// many small queues in the table it expects a dozen rows, and a receive
// then reads all of the queue's rows (a bitmap scan, for FIFO a hash anti
// join of the queue against its groups) and sorts them by id, its whole
// backlog on every receive: 3-4 ms for a backlog of 3,000 rows in
// BenchmarkConsume, where the index scan reads the 100 it returns. The
// settings hold for every plan built in these transactions, generic or
// custom, and the statements they run are planned nowhere else.
// plan_test.go checks the plans.
func asyncCommit() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(consumerSettings)
	return b
}

const consumerSettings = `SELECT set_config('synchronous_commit', 'off', true),
	set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
	set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)`

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
	b := asyncCommit()
	b.Queue(t.q.release, ids, counts, c.name)
	if err := t.pool.SendBatch(ctx, b).Close(); err != nil {
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
