package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/transport"
)

// settleTimeout bounds the queries that settle or give back messages after
// the consumer's context is done.

const settleTimeout = 10 * time.Second

// Subscribe starts one consumer of queue. The channel closes when ctx is
// cancelled or the transport is closed. The consumers of a queue in one
// transport share their receiving: one receive at a time, into one batch that
// each consumer takes its next message from, with the verdicts of all of them
// written by the next receive. Messages received but not handed out are given
// back at once when the last of them stops; a message in a handler at that
// moment can still be acked or nacked until its visibility timeout, after
// which it is delivered again. The consumers read the queue's settings (FIFO,
// visibility timeout, dead-letter queue) when the first of them starts.
func (t *Transport) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	if t.isClosed() {
		return nil, transport.ErrClosed
	}
	key := receiverKey{name: queue}
	var vt int64
	err := t.pool.QueryRow(ctx, t.q.selectQueue, queue).Scan(&key.fifo, &vt, &key.maxReceive, &key.dlq)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: postgres: %q (declare it first)", transport.ErrUnknownQueue, queue)
	}
	if err != nil {
		return nil, classify("subscribe to "+queue, err)
	}
	key.vt = time.Duration(vt) * time.Microsecond

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, transport.ErrClosed
	}
	if !t.cfg.DisableNotify {
		t.startListenerLocked()
	}
	rc := t.receivers[key]
	if rc == nil {
		rc = &receiver{t: t, receiverKey: key, turn: make(chan struct{}, 1), idlers: map[chan struct{}]struct{}{}}
		t.receivers[key] = rc
	}
	rc.users++
	c := &consumer{rc: rc, wake: make(chan struct{}, 1), out: make(chan *message.Message)}
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
		t.leave(ctx, rc)
	}()
	return c.out, nil
}

// leave is called by each consumer of rc that stops: it writes the pending
// verdicts and, for the last one, gives back the messages not handed out.
func (t *Transport) leave(ctx context.Context, rc *receiver) {
	t.mu.Lock()
	rc.users--
	last := rc.users == 0
	if last {
		delete(t.receivers, rc.receiverKey)
	}
	t.mu.Unlock()
	if last {
		rc.mu.Lock()
		buf := rc.buf
		rc.buf = nil
		rc.mu.Unlock()
		rc.release(ctx, buf)
	}
	rc.flush(ctx)
}

// receiverKey: the queue and the settings its consumers read when they start.
type receiverKey struct {
	name       string
	fifo       bool
	vt         time.Duration
	maxReceive int
	dlq        string
}

// receiver is what the consumers of one queue in one transport share.
type receiver struct {
	t *Transport
	receiverKey
	turn  chan struct{} // held while receiving
	users int           // consumers; guarded by t.mu

	mu        sync.Mutex
	buf       []received                 // received, not yet handed out
	fetched   time.Time                  // when buf was received (before the query: a lower bound of the lease start)
	arrived   time.Time                  // when the query receiving buf returned
	took      time.Duration              // how long that query took
	size      int                        // index into t.q.sizes of the next query's batch size
	full      bool                       // buf was a full batch
	delivered int                        // messages of this batch handed out
	pending   []verdict                  // acks and nacks not yet written
	pendingAt time.Time                  // when the oldest pending verdict was given
	idlers    map[chan struct{}]struct{} // wake-ups of the consumers waiting for messages
}

// consumer is one Subscribe: it hands rc's messages to its channel, one at
// a time, each after the previous one's verdict.
type consumer struct {
	rc   *receiver
	wake chan struct{}
	out  chan *message.Message
	beat *time.Ticker // the heartbeat: every third of vt
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

func (rc *receiver) flushDelay() time.Duration { return min(rc.vt/4, maxFlushDelay) }

func (c *consumer) run(ctx context.Context) {
	rc := c.rc
	t := rc.t
	c.beat = time.NewTicker(max(rc.vt/3, time.Millisecond))
	defer c.beat.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.closing:
			return
		default:
		}
		r, fetched, stale, ok := rc.next()
		if len(stale) > 0 {
			rc.release(ctx, stale)
			continue
		}
		if !ok {
			n, err := rc.fetch(ctx)
			if err != nil && ctx.Err() == nil {
				failures++
				t.log.Error("postgres transport: receive failed", "queue", rc.name, "error", err, "failures", failures)
				c.sleep(ctx, min(t.cfg.PollInterval, time.Duration(failures)*100*time.Millisecond))
				continue
			}
			failures = 0
			if n == 0 {
				c.idle(ctx)
			}
			continue
		}
		msg, err := rc.message(r)
		if err != nil {
			// Undecodable row: never hand out garbage. It stays leased, comes
			// back after the visibility timeout and, with a DLQ, ends there.
			t.log.Error("postgres transport: bad message row", "queue", rc.name, "id", r.id, "error", err)
			continue
		}
		if !c.deliver(ctx, r, fetched, msg) {
			return
		}
	}
}

// next takes the next message of the batch, and when it was received. A
// batch whose messages waited for half their lease is returned as stale, to
// be given back: their leases could expire in handlers, and other consumers
// would get them too. The first of a batch always goes.
func (rc *receiver) next() (r received, fetched time.Time, stale []received, ok bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.buf) == 0 {
		return r, fetched, nil, false
	}
	if rc.delivered > 0 && time.Since(rc.fetched) > rc.vt/2 {
		stale, rc.buf = rc.buf, nil
		return r, fetched, stale, false
	}
	r, rc.buf = rc.buf[0], rc.buf[1:]
	rc.delivered++
	return r, rc.fetched, nil, true
}

// deliver hands msg to the subscriber and waits for its verdict; false means
// the consumer is stopping. Until then it renews the message's lease every
// third of the visibility timeout (heartbeat), so a handler may run longer
// than the visibility timeout. leased is when its lease started (at the
// latest).
func (c *consumer) deliver(ctx context.Context, r received, leased time.Time, msg *message.Message) bool {
	rc := c.rc
	t := rc.t
	msgCtx, cancel := context.WithCancel(ctx)
	msg.SetContext(msgCtx)
	var flushTimer <-chan time.Time
	if at, ok := rc.pendingSince(); ok {
		timer := time.NewTimer(max(0, rc.flushDelay()-time.Since(at)))
		defer timer.Stop()
		flushTimer = timer.C
	}
	for sent := false; !sent; {
		select {
		case c.out <- msg:
			sent = true
		case <-flushTimer:
			rc.flush(ctx)
			flushTimer = nil
		case <-c.beat.C:
			if at := time.Now(); rc.extend(ctx, r) {
				leased = at
			}
		case <-ctx.Done():
			cancel()
			rc.release(ctx, []received{r})
			return false
		case <-t.closing:
			cancel()
			rc.release(ctx, []received{r})
			return false
		}
	}
	for {
		select {
		case <-msg.Acked():
			rc.record(verdict{r: r, ack: true})
			cancel()
			return true
		case <-msg.Nacked():
			rc.record(verdict{r: r, delay: transport.RedeliveryDelay(msg)})
			cancel()
			return true
		case <-flushTimer:
			rc.flush(ctx)
			flushTimer = nil
		case <-c.beat.C:
			if at := time.Now(); rc.extend(ctx, r) {
				leased = at
			}
		case <-ctx.Done():
			// Stopping with a message in its handler: no more heartbeat;
			// keep listening for its verdict until the lease ends, as SQS
			// honours a late DeleteMessage.
			lease := time.Until(leased.Add(rc.vt))
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer cancel()
				timer := time.NewTimer(lease)
				defer timer.Stop()
				select {
				case <-msg.Acked():
					rc.settle(ctx, []verdict{{r: r, ack: true}})
				case <-msg.Nacked():
					rc.settle(ctx, []verdict{{r: r, delay: transport.RedeliveryDelay(msg)}})
				case <-t.closing:
				case <-timer.C:
				}
			}()
			return false
		case <-t.closing:
			select { // a verdict given just before Close still counts
			case <-msg.Acked():
				rc.record(verdict{r: r, ack: true})
			case <-msg.Nacked():
				rc.record(verdict{r: r, delay: transport.RedeliveryDelay(msg)})
			default:
			}
			cancel()
			return false
		}
	}
}

// extend renews the lease of r for a visibility timeout from now; false if
// that failed (the lease may run out: at-least-once either way).
func (rc *receiver) extend(ctx context.Context, r received) bool {
	ctx, cancel := context.WithTimeout(ctx, rc.vt/3)
	defer cancel()
	b := asyncCommit()
	b.Queue(rc.t.q.extend, []int64{r.id}, []int32{r.count}, rc.name, rc.vt.Microseconds())
	if err := rc.t.pool.SendBatch(ctx, b).Close(); err != nil {
		if ctx.Err() == nil {
			rc.t.log.Warn("postgres transport: renewing a lease failed", "queue", rc.name, "id", r.id, "error", classify("heartbeat", err))
		}
		return false
	}
	return true
}

func (rc *receiver) record(v verdict) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.pending) == 0 {
		rc.pendingAt = time.Now()
	}
	rc.pending = append(rc.pending, v)
}

// pendingSince returns when the oldest pending verdict was given, if any.
func (rc *receiver) pendingSince() (time.Time, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.pendingAt, len(rc.pending) > 0
}

// takePending returns the pending verdicts and when the oldest was given,
// and forgets them: the caller writes them, or puts them back.
func (rc *receiver) takePending() ([]verdict, time.Time) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	vs, at := rc.pending, rc.pendingAt
	rc.pending = nil
	return vs, at
}

// putBack returns verdicts that could not be written to the pending ones.
func (rc *receiver) putBack(vs []verdict, at time.Time) {
	if len(vs) == 0 {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.pending = append(vs, rc.pending...)
	rc.pendingAt = at
}

// flush writes pending verdicts on their own.
func (rc *receiver) flush(ctx context.Context) {
	if vs, _ := rc.takePending(); len(vs) > 0 {
		rc.settle(ctx, vs)
	}
}

// settle writes verdicts now. A failure leaves the messages to their
// visibility timeout: at-least-once either way.
func (rc *receiver) settle(ctx context.Context, vs []verdict) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	b := asyncCommit()
	wake := rc.queueVerdicts(b, vs)
	if err := rc.t.pool.SendBatch(ctx, b).Close(); err != nil {
		rc.t.log.Error("postgres transport: settling messages failed; they are delivered again after their visibility timeout",
			"queue", rc.name, "count", len(vs), "error", classify("settle", err))
		return
	}
	if wake {
		rc.t.wakeQueue(rc.name)
	}
}

// queueVerdicts adds the statements that write vs to b: acks delete, nacks
// make visible again now or after their redelivery delay. The receipt check (receive_count) makes a verdict
// on a message whose lease expired and which was received again a no-op. It
// reports whether the queue's consumers should be woken: a nack, or an ack
// that unblocks a FIFO group, makes a message receivable.
func (rc *receiver) queueVerdicts(b *pgx.Batch, vs []verdict) (wake bool) {
	t := rc.t
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
		b.Queue(t.q.ack, ackIDs, ackCounts, rc.name)
	}
	if len(nackIDs) > 0 {
		b.Queue(t.q.nack, nackIDs, nackCounts, rc.name, nackDelays)
	}
	wake = nowVisible || (rc.fifo && len(ackIDs) > 0)
	if wake && !t.cfg.DisableNotify {
		b.Queue(`SELECT pg_notify($1, $2)`, t.channel, rc.name)
	}
	return wake
}

// fetch writes pending verdicts and receives up to a batch of messages into
// buf, in one round trip, moving those over the queue's MaxReceiveCount to its
// dead-letter queue on the way. It returns at once, with the number of
// messages waiting, if another consumer received them while this one waited
// for its turn.
//
// The batch is BatchSize, grown tenfold (up to MaxBatchSize) after each full batch
// whose handlers all finished before a query's time had passed, and back to
// BatchSize after one that took longer: such handlers are waiting for the
// database, and fewer, larger queries serve them better.
func (rc *receiver) fetch(ctx context.Context) (int, error) {
	t := rc.t
	select {
	case rc.turn <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-rc.turn }()
	rc.mu.Lock()
	if n := len(rc.buf); n > 0 {
		rc.mu.Unlock()
		return n, nil
	}
	start := time.Now()
	if !rc.arrived.IsZero() {
		switch handled := start.Sub(rc.arrived); {
		case handled >= rc.took:
			rc.size = 0
		case rc.full:
			rc.size = min(rc.size+1, len(t.q.sizes)-1)
		}
	}
	size := rc.size
	rc.mu.Unlock()
	pending, pendingAt := rc.takePending()
	q := t.q.claim[size]
	if rc.fifo {
		q = t.q.claimFIFO[size]
	}
	b := asyncCommit()
	wake := rc.queueVerdicts(b, pending)
	b.Queue(q, rc.name, rc.vt.Microseconds())
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
	if err != nil {
		rc.putBack(pending, pendingAt) // written with a later query
		rc.mu.Lock()
		rc.arrived = time.Time{}
		rc.mu.Unlock()
		return 0, classify("receive from "+rc.name, err)
	}
	arrived := time.Now()
	if wake {
		t.wakeQueue(rc.name)
	}
	full := len(got) == t.q.sizes[size]
	slices.SortFunc(got, func(a, b received) int { return cmp.Compare(a.id, b.id) })
	if rc.maxReceive > 0 && rc.dlq != "" {
		var deadIDs []int64
		var deadCounts []int32
		keep := got[:0]
		for _, m := range got {
			if int(m.count) > rc.maxReceive {
				deadIDs = append(deadIDs, m.id)
				deadCounts = append(deadCounts, m.count)
			} else {
				keep = append(keep, m)
			}
		}
		got = keep
		if len(deadIDs) > 0 {
			if err := rc.deadLetter(ctx, deadIDs, deadCounts); err != nil {
				// They stay leased and are moved on their next receive.
				t.log.Error("postgres transport: moving to dead-letter queue failed", "queue", rc.name, "dlq", rc.dlq, "error", err)
			}
		}
		if len(got) == 0 && len(deadIDs) > 0 {
			rc.mu.Lock()
			rc.arrived, rc.took, rc.full = arrived, arrived.Sub(start), full
			rc.mu.Unlock()
			return len(deadIDs), nil // look again at once
		}
	}
	rc.mu.Lock()
	rc.arrived, rc.took, rc.full = arrived, arrived.Sub(start), full
	rc.buf, rc.fetched, rc.delivered = got, start, 0
	if len(got) > 1 { // the consumers waiting for messages can help
		for w := range rc.idlers {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
	rc.mu.Unlock()
	return len(got), nil
}

func (rc *receiver) deadLetter(ctx context.Context, ids []int64, counts []int32) error {
	t := rc.t
	b := asyncCommit()
	b.Queue(t.q.deadLetter, ids, counts, rc.dlq, rc.name)
	if !t.cfg.DisableNotify {
		b.Queue(`SELECT pg_notify($1, $2)`, t.channel, rc.dlq)
	}
	return classify("move to dead-letter queue "+rc.dlq, t.pool.SendBatch(ctx, b).Close())
}

func (rc *receiver) message(r received) (*message.Message, error) {
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
func (rc *receiver) release(ctx context.Context, rs []received) {
	if len(rs) == 0 {
		return
	}
	t := rc.t
	ids := make([]int64, len(rs))
	counts := make([]int32, len(rs))
	for i, r := range rs {
		ids[i], counts[i] = r.id, r.count
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	b := asyncCommit()
	b.Queue(t.q.release, ids, counts, rc.name)
	if err := t.pool.SendBatch(ctx, b).Close(); err != nil {
		t.log.Error("postgres transport: giving back messages failed; they are delivered again after their visibility timeout",
			"queue", rc.name, "count", len(rs), "error", classify("release", err))
	}
}

// idle waits for a notification, the next lease expiry of the queue or the
// poll interval, whichever comes first.
func (c *consumer) idle(ctx context.Context) {
	rc := c.rc
	t := rc.t
	wait := t.cfg.PollInterval
	var secs *float64
	if err := t.pool.QueryRow(ctx, t.q.nextVisible, rc.name).Scan(&secs); err == nil && secs != nil {
		wait = min(wait, time.Duration(*secs*float64(time.Second))+time.Millisecond)
	}
	t.cleanDedup(ctx)
	rc.mu.Lock()
	if len(rc.buf) > 0 { // another consumer received some meanwhile
		rc.mu.Unlock()
		return
	}
	rc.idlers[c.wake] = struct{}{}
	rc.mu.Unlock()
	c.sleep(ctx, wait)
	rc.mu.Lock()
	delete(rc.idlers, c.wake)
	rc.mu.Unlock()
}

func (c *consumer) sleep(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-c.wake:
	case <-ctx.Done():
	case <-c.rc.t.closing:
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
