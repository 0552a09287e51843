package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Publishes in the transport's own transactions that run at the same time
// are combined: while maxCombiners batches of publishes are being written,
// further Publish calls wait, and the next batch takes all of them, each
// call's statement in one transaction and one round trip. A call that finds
// fewer batches under way writes its own at once, so a lone publisher waits
// for nothing; concurrent publishers share commits (and their WAL flush)
// and round trips. A batch whose statements fail is rolled back and each of
// its calls written again on its own, so that every call is still all or
// nothing and gets its own error. Only publishes of messages without group
// ids are combined: a FIFO publish holds advisory locks until its
// transaction ends, and two batches taking them in different orders would
// deadlock.
const maxCombiners = 2

// publishCall is one Publish waiting to be written.
type publishCall struct {
	ctx  context.Context
	sql  string
	args []any
	done chan error
}

// combine writes the statement sql with args in its own transaction, or in
// one shared with concurrent calls.
func (t *Transport) combine(ctx context.Context, sql string, args ...any) error {
	call := &publishCall{ctx: ctx, sql: sql, args: args, done: make(chan error, 1)}
	t.pubMu.Lock()
	t.pubQueue = append(t.pubQueue, call)
	lead := t.combiners < maxCombiners
	if lead {
		t.combiners++
	}
	t.pubMu.Unlock()
	if lead {
		t.writeCalls(call)
	}
	select {
	case err := <-call.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the batch it is in may still commit, as a cancelled query may
	}
}

// writeCalls writes the waiting calls in batches until mine is written,
// then hands the writing of any still waiting to a goroutine of its own.
func (t *Transport) writeCalls(mine *publishCall) {
	for {
		t.pubMu.Lock()
		calls := t.pubQueue
		t.pubQueue = nil
		if len(calls) == 0 {
			t.combiners--
			t.pubMu.Unlock()
			return
		}
		t.pubMu.Unlock()
		t.writeBatch(calls)
		if mine == nil {
			continue
		}
		select {
		case err := <-mine.done: // written: let another goroutine go on
			mine.done <- err
			t.pubMu.Lock()
			if len(t.pubQueue) == 0 {
				t.combiners--
				t.pubMu.Unlock()
				return
			}
			t.wg.Add(1)
			t.pubMu.Unlock()
			go func() {
				defer t.wg.Done()
				t.writeCalls(nil)
			}()
			return
		default:
		}
	}
}

// writeBatch writes calls in one transaction, or each on its own when that
// fails on a statement.
func (t *Transport) writeBatch(calls []*publishCall) {
	if len(calls) == 1 {
		c := calls[0]
		c.done <- t.pool.SendBatch(c.ctx, single(c)).Close()
		return
	}
	b := &pgx.Batch{}
	for _, c := range calls {
		b.Queue(c.sql, c.args...)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(calls[0].ctx), settleTimeout)
	err := t.pool.SendBatch(ctx, b).Close()
	cancel()
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) { // rolled back: each on its own
		for _, c := range calls {
			c.done <- t.pool.SendBatch(c.ctx, single(c)).Close()
		}
		return
	}
	for _, c := range calls {
		c.done <- err
	}
}

func single(c *publishCall) *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(c.sql, c.args...)
	return b
}
