// Package pgddl runs eda's schema changes on Postgres so that services
// started at the same moment on a fresh database all come up.
//
// Two sessions that run CREATE SCHEMA IF NOT EXISTS (or CREATE TABLE IF NOT
// EXISTS) at once can both pass the existence check; the one that commits
// second fails with a unique violation on a system catalog
// (pg_namespace_nspname_index, pg_type_typname_nsp_index) once the first
// commits. The object then exists, which is all either asked for. eda's
// migrations take turns on advisory locks for their own tables, and create
// schemas through CreateSchema, which treats that race as success; Race tells
// a migration that lost such a race and may simply run again.
package pgddl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Execer runs a statement: *pgxpool.Pool, *pgxpool.Conn, *pgx.Conn and
// pgx.Tx have it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// CreateSchema creates schema if it does not exist. Run it outside any
// transaction of the caller's: a statement that loses the race aborts the
// transaction it runs in.
func CreateSchema(ctx context.Context, db Execer, schema string) error {
	q := "CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema}.Sanitize()
	var err error
	for range 3 {
		if _, err = db.Exec(ctx, q); err == nil || !Race(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create schema %s: %w", schema, err)
	}
	return nil
}

// Race reports whether err is a concurrent DDL statement's lost race for the
// same catalog entry: the object now exists.
func Race(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "42P06", "42P07", "42710": // duplicate_schema, duplicate_table, duplicate_object
		return true
	case "23505": // unique_violation, on a system catalog only
		return strings.HasPrefix(pgErr.ConstraintName, "pg_")
	}
	return false
}

// Unreachable reports whether err means the server could not be reached
// (connect refused or timed out, DNS, a dropped connection), as opposed to an
// error the server returned.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.Timeout(err)
}
