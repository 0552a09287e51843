package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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
// committed yet makes Mark wait for its outcome). One round trip. Tx calls
// it; call it yourself when you manage the transaction.
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
// event id as processed by consumer (one INSERT ... ON CONFLICT DO NOTHING),
// then calls fn with it and commits. A duplicate finds the mark and returns
// nil without calling fn; a concurrent duplicate waits on the mark's unique
// index until the first transaction ends, then skips (it committed) or runs
// (it rolled back). An error from fn, a panic or a cancelled context rolls
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
		tx, err := s.db.Begin(ctx)
		if err != nil {
			return fmt.Errorf("%w: pgstore: begin: %w", inbox.ErrStore, err)
		}
		committed := false
		defer func() {
			if !committed { // an error, a duplicate or a panic
				_ = tx.Rollback(context.WithoutCancel(ctx))
			}
		}()
		first, err := s.Mark(ctx, tx, key)
		if err != nil || !first {
			return err
		}
		if err := fn(ctx, tx, e); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("%w: pgstore: commit: %w", inbox.ErrStore, err)
		}
		committed = true
		return nil
	}
}
