package pgxstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
)

// Tx is a transaction that costs the outbox no round trip of its own: its
// BEGIN travels with its first statement and its outbox records with its
// COMMIT. Inserting an order and its event this way takes two round trips
// to Postgres, where pool.Begin, Exec, Write and Commit take four (and the
// same insert without an outbox, three).
//
//	tx, err := store.Begin(ctx)
//	defer tx.Rollback(ctx)
//	err = tx.QueryRow(ctx, "INSERT INTO orders (customer) VALUES ($1) RETURNING id", c).Scan(&id) // BEGIN + INSERT
//	err = tx.Write(ctx, app, OrderCreated{ID: id})                                                // queued
//	err = tx.Commit(ctx)                                                                           // outbox INSERT + COMMIT
//
// Exec, Query and QueryRow have pgx's signatures, so repository code written
// against them (sqlc's DBTX, for one) takes a *Tx. A Tx is not safe for
// concurrent use. Its semantics are those of a pgx.Tx: after a failed
// statement the transaction is aborted and Commit reports
// pgx.ErrTxCommitRollback; Commit and Rollback end it and return the
// connection to the pool, and a second call returns pgx.ErrTxClosed, so
// "defer tx.Rollback(ctx)" is safe.
type Tx struct {
	s       *Store
	conn    *pgxpool.Conn
	begun   bool // BEGIN was sent
	pending []queuedInsert
}

type queuedInsert struct {
	sql  string
	args []any
}

// Begin starts a Tx on a connection from the store's pool. It sends
// nothing yet.
func (s *Store) Begin(ctx context.Context) (*Tx, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.wrap("begin", err)
	}
	return &Tx{s: s, conn: conn}, nil
}

// Write encodes events with enc (usually the *eda.App) and queues their
// insert to be sent with Commit, in the same transaction. Encoding errors
// are reported here; database errors by Commit.
func (tx *Tx) Write(ctx context.Context, enc outbox.Encoder, events ...eda.Event) error {
	if tx.conn == nil {
		return pgx.ErrTxClosed
	}
	recs, err := outbox.Encode(ctx, enc, events...)
	if err != nil {
		return err
	}
	return tx.WriteRecords(recs...)
}

// WriteRecords queues records (see outbox.NewRecord) like Write.
func (tx *Tx) WriteRecords(recs ...outbox.Record) error {
	if tx.conn == nil {
		return pgx.ErrTxClosed
	}
	q, args, err := tx.s.insertArgs(recs)
	if err != nil || q == "" {
		return err
	}
	tx.pending = append(tx.pending, queuedInsert{q, args})
	return nil
}

// Exec runs a statement in the transaction.
func (tx *Tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if tx.conn == nil {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	if tx.begun {
		return tx.conn.Exec(ctx, sql, args...)
	}
	br, err := tx.sendBegin(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	return tag, errors.Join(err, br.Close())
}

// Query runs a query in the transaction. As with pgx, the rows must be
// closed before the next statement.
func (tx *Tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if tx.conn == nil {
		return nil, pgx.ErrTxClosed
	}
	if tx.begun {
		return tx.conn.Query(ctx, sql, args...)
	}
	br, err := tx.sendBegin(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		rows.Close()
		return nil, errors.Join(err, br.Close())
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow runs a query that returns at most one row; see pgx.Conn.QueryRow.
func (tx *Tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if tx.conn != nil && tx.begun {
		return tx.conn.QueryRow(ctx, sql, args...)
	}
	rows, err := tx.Query(ctx, sql, args...)
	return &row{rows: rows, err: err}
}

// sendBegin sends BEGIN and the first statement in one batch and reads
// BEGIN's result; the caller reads the statement's.
func (tx *Tx) sendBegin(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sql, args...)
	br := tx.conn.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		return nil, errors.Join(err, br.Close())
	}
	tx.begun = true
	return br, nil
}

// Commit sends the queued outbox inserts and COMMIT in one round trip (and
// BEGIN, if no statement ran yet). On any error nothing is committed.
func (tx *Tx) Commit(ctx context.Context) error {
	if tx.conn == nil {
		return pgx.ErrTxClosed
	}
	if !tx.begun && len(tx.pending) == 0 {
		tx.release(false)
		return nil
	}
	b := &pgx.Batch{}
	if !tx.begun {
		b.Queue("BEGIN")
	}
	for _, p := range tx.pending {
		b.Queue(p.sql, p.args...)
	}
	b.Queue("COMMIT")
	tx.begun = true
	br := tx.conn.SendBatch(ctx, b)
	var tag pgconn.CommandTag
	var err error
	for range b.Len() {
		if tag, err = br.Exec(); err != nil {
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tx.rollback(ctx)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "25P02" { // in_failed_sql_transaction
			return fmt.Errorf("%w: an earlier statement failed: %w", pgx.ErrTxCommitRollback, err)
		}
		return tx.s.wrap("commit", err)
	}
	tx.release(false)
	if tag.String() == "ROLLBACK" { // an earlier statement failed
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// Rollback aborts the transaction and drops the queued inserts.
func (tx *Tx) Rollback(ctx context.Context) error {
	if tx.conn == nil {
		return pgx.ErrTxClosed
	}
	return tx.rollback(ctx)
}

func (tx *Tx) rollback(ctx context.Context) error {
	if !tx.begun {
		tx.release(false)
		return nil
	}
	_, err := tx.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	tx.release(err != nil)
	if err != nil {
		return fmt.Errorf("pgxstore: rollback: %w", err)
	}
	return nil
}

// release returns the connection to the pool, or closes it when its
// transaction state is unknown.
func (tx *Tx) release(broken bool) {
	if broken {
		_ = tx.conn.Conn().Close(context.Background())
	}
	tx.conn.Release()
	tx.conn, tx.pending = nil, nil
}

// batchRows are the rows of a query sent in a batch with BEGIN; closing
// them closes the batch.
type batchRows struct {
	pgx.Rows
	br       pgx.BatchResults
	closeErr error
	closed   bool
}

func (r *batchRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.closeErr = r.br.Close()
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.closeErr
}

// row is QueryRow's result for a query sent with BEGIN.
type row struct {
	rows pgx.Rows
	err  error
}

func (r *row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		r.rows.Close()
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
