package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // the embedded default database

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
	"github.com/edaproject/eda/outbox/sqlitestore"
)

// db is the services' database: SQLite (embedded default) or Postgres, both
// through database/sql so the services' SQL is written once. Queries use ?
// placeholders; on Postgres they are rewritten to $n.
type db struct {
	*sql.DB
	postgres bool
	pool     *pgxpool.Pool // Postgres only: the outbox store and the relay's LISTEN use it
	outbox   outbox.Store
	write    func(ctx context.Context, tx *sql.Tx, enc outbox.Encoder, events ...eda.Event) error
}

// isPostgres reports whether dsn names a Postgres database.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// openDB opens dsn: a postgres:// URL (the services' tables and the outbox go
// to schema, created if missing), or a SQLite file path.
func openDB(ctx context.Context, dsn, schema string) (*db, error) {
	if isPostgres(dsn) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("postgres DSN: %w", err)
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = schema
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		// Processes starting together race on CREATE SCHEMA IF NOT EXISTS:
		// the loser fails with a unique violation on pg_namespace, and the
		// schema then exists.
		_, err = pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize())
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P06") {
			err = nil
		}
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres is not reachable (start it: scripts/postgres.sh): %w", err)
		}
		store, err := pgxstore.New(pool, pgxstore.Config{Schema: schema})
		if err != nil {
			pool.Close()
			return nil, err
		}
		d := &db{DB: stdlib.OpenDBFromPool(pool), postgres: true, pool: pool, outbox: store}
		d.write = func(ctx context.Context, tx *sql.Tx, enc outbox.Encoder, events ...eda.Event) error {
			return store.WriteSQL(ctx, tx, enc, events...)
		}
		return d, nil
	}
	sqldb, err := sql.Open("sqlite", "file:"+dsn+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", dsn, err)
	}
	store, err := sqlitestore.New(sqldb, sqlitestore.Config{})
	if err != nil {
		sqldb.Close()
		return nil, err
	}
	d := &db{DB: sqldb, outbox: store}
	d.write = func(ctx context.Context, tx *sql.Tx, enc outbox.Encoder, events ...eda.Event) error {
		return store.Write(ctx, tx, enc, events...)
	}
	return d, nil
}

func (d *db) Close() error {
	err := d.DB.Close()
	if d.pool != nil {
		d.pool.Close()
	}
	return err
}

// migrate creates the services' tables and the outbox, then runs more
// (the inbox's migration). Services started at once as separate processes on
// one Postgres take turns: CREATE TABLE IF NOT EXISTS is not safe to run
// concurrently.
func (d *db) migrate(ctx context.Context, more ...func(context.Context) error) error {
	if d.postgres {
		conn, err := d.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		const lockID = 0x0eda0de5 // any constant shared by the example's processes
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockID); err != nil {
			return err
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockID) //nolint:errcheck // released with the session anyway
	}
	type migrator interface{ Migrate(context.Context) error }
	if err := d.outbox.(migrator).Migrate(ctx); err != nil {
		return fmt.Errorf("outbox migration: %w", err)
	}
	for _, stmt := range schema {
		if _, err := d.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("schema: %w\n%s", err, stmt)
		}
	}
	for _, m := range more {
		if err := m(ctx); err != nil {
			return err
		}
	}
	return nil
}

// schema works on SQLite and Postgres alike. Times are Unix nanoseconds.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS orders (
		id TEXT PRIMARY KEY,
		customer_id TEXT NOT NULL,
		items TEXT NOT NULL,
		status TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		created_at BIGINT NOT NULL,
		final_at BIGINT
	)`,
	`CREATE TABLE IF NOT EXISTS products (
		sku TEXT PRIMARY KEY,
		stock INTEGER NOT NULL CHECK (stock >= 0)
	)`,
	`CREATE TABLE IF NOT EXISTS reservations (
		order_id TEXT PRIMARY KEY,
		status TEXT NOT NULL,
		created_at BIGINT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS notifications (
		event_id TEXT PRIMARY KEY,
		order_id TEXT NOT NULL,
		kind TEXT NOT NULL,
		created_at BIGINT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS inbox (
		consumer TEXT NOT NULL,
		event_id TEXT NOT NULL,
		processed_at BIGINT NOT NULL,
		PRIMARY KEY (consumer, event_id)
	)`,
}

// q rewrites ? placeholders to $n on Postgres.
func (d *db) q(query string) string {
	if !d.postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// inTx runs fn in a transaction and commits it when fn returns nil.
func (d *db) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, rollback(tx))
	}
	return tx.Commit()
}

func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return nil
}
