// Package sqlstore is the same-transaction inbox on database/sql, for
// services whose data lives in SQLite (modernc.org/sqlite) or in Postgres
// reached through database/sql (pgx's stdlib driver).
//
// Tx wraps a handler func(ctx, *sql.Tx, E) error: each message runs in a
// new transaction that first records (consumer, event id) with INSERT ... ON
// CONFLICT DO NOTHING and then calls the handler; both commit together. A
// duplicate finds the mark and is skipped; a concurrent duplicate waits for
// the first transaction (on Postgres the mark's unique index, on SQLite the
// database write lock) and skips if it committed. The effect happens exactly
// once, as with inbox/pgstore.Tx, which does the same on a pgx.Tx.
package sqlstore
