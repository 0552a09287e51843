package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware/inbox"

	"github.com/edaproject/eda/internal/sqlident"
)

// Dialect is the SQL flavour of the database.
type Dialect int

// Dialects.
const (
	SQLite Dialect = iota + 1
	Postgres
)

// DefaultTable is Config.Table's default.
const DefaultTable = "eda_inbox"

// Config configures a Store.
type Config struct {
	// Dialect of the database. Required.
	Dialect Dialect
	// Table holding the marks, a lower-case identifier. Default DefaultTable.
	Table string
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Dialect != SQLite && c.Dialect != Postgres {
		errs = append(errs, fmt.Errorf("%w: sqlstore: Dialect must be SQLite or Postgres", inbox.ErrInvalidConfig))
	}
	if c.Table != "" && !sqlident.Valid(c.Table, sqlident.MaxLen) {
		errs = append(errs, fmt.Errorf("%w: sqlstore: Table %q is not a lower-case identifier", inbox.ErrInvalidConfig, c.Table))
	}
	return errors.Join(errs...)
}

// Store records processed events in a table of the service's own database.
type Store struct {
	db                      *sql.DB
	table                   string
	markSQL, expireSQL, ddl string
}

// New returns a store on db. Call Migrate before use.
func New(db *sql.DB, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if db == nil {
		return nil, fmt.Errorf("%w: sqlstore: nil db", inbox.ErrInvalidConfig)
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	p1, p2, p3 := "?", "?", "?"
	if cfg.Dialect == Postgres {
		p1, p2, p3 = "$1", "$2", "$3"
	}
	return &Store{
		db:    db,
		table: cfg.Table,
		ddl: `CREATE TABLE IF NOT EXISTS ` + cfg.Table + ` (
			consumer TEXT NOT NULL,
			event_id TEXT NOT NULL,
			processed_at BIGINT NOT NULL,
			PRIMARY KEY (consumer, event_id))`,
		markSQL: `INSERT INTO ` + cfg.Table + ` (consumer, event_id, processed_at) VALUES (` +
			strings.Join([]string{p1, p2, p3}, ", ") + `) ON CONFLICT (consumer, event_id) DO NOTHING`,
		expireSQL: `DELETE FROM ` + cfg.Table + ` WHERE processed_at < ` + p1,
	}, nil
}

// MigrationSQL is the schema Migrate applies (version 1).
func (s *Store) MigrationSQL() string { return s.ddl }

// Migrate creates the marks table if it does not exist.
func (s *Store) Migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, s.ddl); err != nil {
		return fmt.Errorf("%w: sqlstore: migrate: %w", inbox.ErrStore, err)
	}
	return nil
}

// Mark records key inside tx and reports whether this call recorded it
// (false: already processed). Tx calls it.
func (s *Store) Mark(ctx context.Context, tx *sql.Tx, key inbox.Key) (bool, error) {
	if err := key.Validate(); err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, s.markSQL, key.Consumer, key.EventID, time.Now().UnixNano())
	if err != nil {
		return false, fmt.Errorf("%w: sqlstore: mark: %w", inbox.ErrStore, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("%w: sqlstore: mark: %w", inbox.ErrStore, err)
	}
	return n == 1, nil
}

// Expire deletes marks recorded before before. Keep marks longer than a
// duplicate can arrive (the SQS retention period).
func (s *Store) Expire(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.expireSQL, before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("%w: sqlstore: expire: %w", inbox.ErrStore, err)
	}
	return res.RowsAffected()
}

// Tx wraps fn into an eda handler that runs each message in a transaction
// with the inbox mark: see the package doc. An error from fn, a panic or a
// cancelled context rolls everything back, mark included, so the redelivery
// runs again.
//
//	eda.Handle(app, "inventory", sqlstore.Tx(store, "inventory", reserveStock))
func Tx[E eda.Event](s *Store, consumer string, fn func(ctx context.Context, tx *sql.Tx, e E) error) func(context.Context, E) error {
	return func(ctx context.Context, e E) error {
		if s == nil || fn == nil {
			return eda.Permanent(fmt.Errorf("%w: sqlstore.Tx: nil store or handler", inbox.ErrInvalidConfig))
		}
		env, ok := eda.EnvelopeFromContext(ctx)
		if !ok || env.ID == "" {
			return eda.Permanent(fmt.Errorf("%w: sqlstore.Tx needs the handler context eda passes", inbox.ErrNoEventID))
		}
		key := inbox.Key{Consumer: consumer, EventID: env.ID}
		if err := key.Validate(); err != nil {
			return eda.Permanent(err)
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("%w: sqlstore: begin: %w", inbox.ErrStore, err)
		}
		committed := false
		defer func() {
			if !committed { // an error, a duplicate or a panic
				_ = tx.Rollback()
			}
		}()
		first, err := s.Mark(ctx, tx, key)
		if err != nil || !first {
			return err
		}
		if err := fn(ctx, tx, e); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("%w: sqlstore: commit: %w", inbox.ErrStore, err)
		}
		committed = true
		return nil
	}
}
