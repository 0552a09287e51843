// Package pgxstore is the outbox on Postgres with pgx/v5.
//
// Events are written in the caller's own transaction (pgx.Tx, a pgxpool
// transaction, or a database/sql transaction via WriteSQL) with one
// statement, which also NOTIFYs the relays on commit. An outbox.Relay drains
// the Store: each claim locks a batch with FOR UPDATE SKIP LOCKED, so any
// number of relays in any number of processes share the work, and skips any
// record that has an older unsettled record of its ordering key, so a key
// is never published out of order.
//
// The schema is created by Migrate (versioned, recorded in
// <table>_migrations); Migrations holds the SQL for those who run their own
// migration tool.
package pgxstore
