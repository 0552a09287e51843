package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware/inbox"

	"github.com/edaproject/eda/internal/pgddl"
	"github.com/edaproject/eda/internal/sqlident"
)

// DB is what the store needs of a database handle; *pgxpool.Pool has it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var (
	_ DB          = (*pgxpool.Pool)(nil)
	_ inbox.Store = (*Store)(nil)
)

// Defaults of Config.
const (
	DefaultSchema = "public"
	DefaultTable  = "eda_inbox"
)

// Config configures New.
type Config struct {
	// Schema holds the table. Default DefaultSchema.
	Schema string
	// Table name. Default DefaultTable.
	Table string
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Schema != "" && !sqlident.Valid(c.Schema, sqlident.MaxLen) {
		errs = append(errs, fmt.Errorf("%w: pgstore: schema %q is not a lower-case SQL identifier", inbox.ErrInvalidConfig, c.Schema))
	}
	if c.Table != "" && !sqlident.Valid(c.Table, sqlident.MaxLen) {
		errs = append(errs, fmt.Errorf("%w: pgstore: table %q is not a lower-case SQL identifier", inbox.ErrInvalidConfig, c.Table))
	}
	return errors.Join(errs...)
}

// Store is the Postgres inbox. Create it with New and its table with
// Migrate.
type Store struct {
	db           DB
	schema, name string
	table        string // quoted schema.table

	claimSQL, completeSQL, releaseSQL, expireSQL, markSQL string
	// beginMarkSQL is the start of the statement that marks a key and
	// begins the transaction in one round trip (see begin).
	beginMarkSQL string
}

// New returns a store on db.
func New(db DB, cfg Config) (*Store, error) {
	var errs []error
	if db == nil {
		errs = append(errs, fmt.Errorf("%w: pgstore: nil DB", inbox.ErrInvalidConfig))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Schema == "" {
		cfg.Schema = DefaultSchema
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	t := pgx.Identifier{cfg.Schema, cfg.Table}.Sanitize()
	s := &Store{db: db, schema: cfg.Schema, name: cfg.Table, table: t}
	// One round trip: insert a claim, or take over an expired one; if
	// neither, tell done from busy from the statement's snapshot (a row
	// committed meanwhile is invisible: "busy", which is safe, a retry sees
	// it done).
	s.claimSQL = `WITH ins AS (
	INSERT INTO ` + t + ` AS i (consumer, event_id, token, lease_until)
	VALUES ($1, $2, $3, now() + $4 * interval '1 microsecond')
	ON CONFLICT (consumer, event_id) DO UPDATE
		SET token = EXCLUDED.token, lease_until = EXCLUDED.lease_until
		WHERE i.processed_at IS NULL AND i.lease_until <= now()
	RETURNING 1)
SELECT CASE
	WHEN EXISTS (SELECT 1 FROM ins) THEN 1
	WHEN (SELECT processed_at FROM ` + t + ` WHERE consumer = $1 AND event_id = $2) IS NOT NULL THEN 2
	ELSE 3 END`
	s.completeSQL = `UPDATE ` + t + ` SET processed_at = now(), token = NULL, lease_until = NULL
WHERE consumer = $1 AND event_id = $2 AND token = $3 AND processed_at IS NULL`
	s.releaseSQL = `DELETE FROM ` + t + ` WHERE consumer = $1 AND event_id = $2 AND token = $3 AND processed_at IS NULL`
	s.expireSQL = `DELETE FROM ` + t + ` WHERE processed_at < $1 OR (processed_at IS NULL AND lease_until < $1)`
	s.markSQL = `INSERT INTO ` + t + ` (consumer, event_id, processed_at) VALUES ($1, $2, now())
ON CONFLICT (consumer, event_id) DO NOTHING`
	s.beginMarkSQL = `INSERT INTO ` + t + ` (consumer, event_id, processed_at) VALUES (`
	return s, nil
}

// Migrate creates the schema, the table and its expiry index if they do not
// exist. Processes started together take turns (an advisory lock per table).
func (s *Store) Migrate(ctx context.Context) error {
	if err := pgddl.CreateSchema(ctx, s.db, s.schema); err != nil {
		return fmt.Errorf("%w: pgstore: migrate: %w", inbox.ErrStore, err)
	}
	err := s.migrate(ctx)
	if pgddl.Race(err) { // another process's DDL committed as ours ran: it is there now
		err = s.migrate(ctx)
	}
	if err != nil {
		return fmt.Errorf("%w: pgstore: migrate: %w", inbox.ErrStore, err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	stmts := []string{
		`SELECT pg_advisory_xact_lock(hashtext('eda_inbox_migrate:' || $1))`,
		`CREATE TABLE IF NOT EXISTS ` + s.table + ` (
	consumer     text        NOT NULL,
	event_id     text        NOT NULL,
	token        text,
	lease_until  timestamptz,
	processed_at timestamptz,
	PRIMARY KEY (consumer, event_id))`,
		`CREATE INDEX IF NOT EXISTS ` + pgx.Identifier{s.name + "_processed_at"}.Sanitize() + ` ON ` + s.table + ` (processed_at)`,
	}
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		for i, q := range stmts {
			var args []any
			if i == 0 {
				args = []any{s.table}
			}
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// Claim implements inbox.Store.
func (s *Store) Claim(ctx context.Context, key inbox.Key, lease time.Duration) (inbox.Claim, error) {
	if err := key.Validate(); err != nil {
		return inbox.Claim{}, err
	}
	token := rand.Text()
	var state int
	if err := s.db.QueryRow(ctx, s.claimSQL, key.Consumer, key.EventID, token, lease.Microseconds()).Scan(&state); err != nil {
		return inbox.Claim{}, fmt.Errorf("%w: pgstore: claim: %w", inbox.ErrStore, err)
	}
	switch state {
	case 1:
		return inbox.Claim{State: inbox.Acquired, Token: token}, nil
	case 2:
		return inbox.Claim{State: inbox.Done}, nil
	}
	return inbox.Claim{State: inbox.Busy}, nil
}

// Complete implements inbox.Store.
func (s *Store) Complete(ctx context.Context, key inbox.Key, token string) error {
	if err := key.Validate(); err != nil {
		return err
	}
	tag, err := s.db.Exec(ctx, s.completeSQL, key.Consumer, key.EventID, token)
	if err != nil {
		return fmt.Errorf("%w: pgstore: complete: %w", inbox.ErrStore, err)
	}
	if tag.RowsAffected() == 0 {
		return inbox.ErrLeaseLost
	}
	return nil
}

// Release implements inbox.Store.
func (s *Store) Release(ctx context.Context, key inbox.Key, token string) error {
	if err := key.Validate(); err != nil {
		return err
	}
	if _, err := s.db.Exec(ctx, s.releaseSQL, key.Consumer, key.EventID, token); err != nil {
		return fmt.Errorf("%w: pgstore: release: %w", inbox.ErrStore, err)
	}
	return nil
}

// Expire implements inbox.Store.
func (s *Store) Expire(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.db.Exec(ctx, s.expireSQL, before)
	if err != nil {
		return 0, fmt.Errorf("%w: pgstore: expire: %w", inbox.ErrStore, err)
	}
	return tag.RowsAffected(), nil
}

// Mark records (consumer, event id) as processed inside tx and reports
// whether this call recorded it: false means the event was already
// processed (by a committed transaction; a concurrent one that has not
// committed yet makes Mark wait for its outcome). One round trip. Call it
// when you manage the transaction yourself; Tx marks with the same
// semantics in the round trip that begins its transaction.
func (s *Store) Mark(ctx context.Context, tx pgx.Tx, key inbox.Key) (bool, error) {
	if err := key.Validate(); err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, s.markSQL, key.Consumer, key.EventID)
	if err != nil {
		return false, fmt.Errorf("%w: pgstore: mark: %w", inbox.ErrStore, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Tx wraps fn, a handler that writes to the store's database, into an eda
// handler: each message runs in a new transaction that first marks the
// event id as processed by consumer (an INSERT sent with the BEGIN, in the
// same round trip), then calls fn with it and commits (with the statements
// fn queued on CommitBatch, in the commit's round trip). A duplicate finds
// the mark and returns nil without calling fn; a concurrent duplicate waits
// on the mark's unique index until the first transaction ends, then skips
// (it committed) or runs (it rolled back). An error from fn, a panic or a cancelled context rolls
// everything back, mark included, so the redelivery runs again. The effect
// is exactly once even if the process dies between commit and ack.
//
// Use it with eda.Handle:
//
//	eda.Handle(app, "billing", pgstore.Tx(store, "billing", chargeOrder))
func Tx[E eda.Event](s *Store, consumer string, fn func(ctx context.Context, tx pgx.Tx, e E) error) func(context.Context, E) error {
	return func(ctx context.Context, e E) error {
		if s == nil || fn == nil {
			return eda.Permanent(fmt.Errorf("%w: pgstore.Tx: nil store or handler", inbox.ErrInvalidConfig))
		}
		msg, ok := eda.MessageFromContext(ctx)
		if !ok || msg.Metadata.Get(eda.MetadataID) == "" {
			return eda.Permanent(fmt.Errorf("%w: pgstore.Tx needs the handler context eda passes", inbox.ErrNoEventID))
		}
		key := inbox.Key{Consumer: consumer, EventID: msg.Metadata.Get(eda.MetadataID)}
		if err := key.Validate(); err != nil {
			return eda.Permanent(err)
		}
		t, first, err := s.begin(ctx, key)
		if err != nil || !first {
			return err
		}
		committed := false
		defer func() {
			if !committed { // an error or a panic
				t.rollback(context.WithoutCancel(ctx))
			}
		}()
		b := &pgx.Batch{}
		if err := fn(context.WithValue(ctx, commitBatchKey{}, b), t.tx, e); err != nil {
			return err
		}
		if err := t.commit(ctx, b); err != nil {
			return fmt.Errorf("%w: pgstore: commit: %w", inbox.ErrStore, err)
		}
		committed = true
		return nil
	}
}

// txn is Tx's transaction.
type txn struct {
	tx pgx.Tx
	// conn is the pool connection tx runs on when begin acquired it, so
	// that the commit can go with the commit batch; nil when tx came from
	// DB.Begin (and releases its connection itself).
	conn *pgxpool.Conn
}

// begin starts Tx's transaction with key marked in it, and reports whether
// this mark is the first (false: the event was processed, and no
// transaction is open).
//
// On a *pgxpool.Pool this is one round trip instead of two (BEGIN, then
// Mark): the mark's INSERT and BEGIN go as one simple-protocol query,
// "INSERT ...; BEGIN". Postgres runs the INSERT in the query's implicit
// transaction, which BEGIN turns into the transaction fn runs in, so the
// mark commits or rolls back with fn's effects as before. A key processed
// already makes the INSERT fail on the primary key (waiting, like Mark, for
// a concurrent transaction holding the key to end); the implicit
// transaction then rolls back and the connection is idle again. The key's
// strings are inlined as escape-string literals; a key with a NUL byte
// (which text cannot hold anyway) takes the two-round-trip path and fails
// there as before, as does any other DB.
func (s *Store) begin(ctx context.Context, key inbox.Key) (txn, bool, error) {
	pool, ok := s.db.(*pgxpool.Pool)
	if !ok || strings.ContainsRune(key.Consumer, 0) || strings.ContainsRune(key.EventID, 0) {
		tx, err := s.db.Begin(ctx)
		if err != nil {
			return txn{}, false, fmt.Errorf("%w: pgstore: begin: %w", inbox.ErrStore, err)
		}
		first, err := s.Mark(ctx, tx, key)
		if err != nil || !first {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return txn{}, false, err
		}
		return txn{tx: tx}, true, nil
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return txn{}, false, fmt.Errorf("%w: pgstore: begin: %w", inbox.ErrStore, err)
	}
	q := s.beginMarkSQL + literal(key.Consumer) + ", " + literal(key.EventID) + ", now()); BEGIN"
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{BeginQuery: q})
	if err != nil {
		conn.Release()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation: marked already
			return txn{}, false, nil
		}
		return txn{}, false, fmt.Errorf("%w: pgstore: begin and mark: %w", inbox.ErrStore, err)
	}
	return txn{tx: tx, conn: conn}, true, nil
}

// commit sends b's statements, then COMMIT: in one round trip on a
// connection begin acquired.
func (t txn) commit(ctx context.Context, b *pgx.Batch) error {
	if t.conn == nil || b.Len() == 0 {
		if b.Len() > 0 {
			if err := t.tx.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
		}
		err := t.tx.Commit(ctx)
		if t.conn != nil && err == nil {
			t.conn.Release()
		}
		return err
	}
	b.Queue("COMMIT")
	if err := t.conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	// Committed; t.tx, which did not send the COMMIT, is dropped.
	t.conn.Release()
	return nil
}

// rollback ends a transaction that was not committed.
func (t txn) rollback(ctx context.Context) {
	_ = t.tx.Rollback(ctx)
	if t.conn != nil {
		t.conn.Release() // closed instead of reused if still in a transaction
	}
}

// commitBatchKey is the context key of Tx's commit batch.
type commitBatchKey struct{}

// CommitBatch returns, inside a handler run by Tx, the batch that Tx sends
// with its COMMIT: statements queued on it run in the handler's
// transaction after the handler returned, in the commit's round trip
// instead of one each. Use it for writes whose results the handler does
// not need, such as its outbox events (pgxstore.Store.Queue). If one
// fails, the transaction rolls back and the handler's error is that
// failure. ok is false outside Tx.
func CommitBatch(ctx context.Context) (b *pgx.Batch, ok bool) {
	b, ok = ctx.Value(commitBatchKey{}).(*pgx.Batch)
	return b, ok
}

// literal quotes v as a Postgres escape-string constant (E'...'), which
// means the same whatever standard_conforming_strings is: backslashes and
// single quotes are doubled. v must not contain NUL.
func literal(v string) string {
	var b strings.Builder
	b.Grow(len(v) + 4)
	b.WriteString("E'")
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\', '\'':
			b.WriteByte(c)
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}
