// Package pgxstore is the outbox on Postgres with pgx/v5.
//
// Events are written in the caller's own transaction (pgx.Tx, a pgxpool
// transaction, a database/sql transaction via WriteSQL, or the caller's
// pgx.Batch via Queue) with one statement, or in a Tx from Store.Begin,
// which sends them with its COMMIT and its BEGIN with its first statement,
// so the outbox adds no round trip. The insert also NOTIFYs the relays on
// commit (at most once per Config.NotifyInterval, because Postgres
// serialises notifying commits). An outbox.Relay drains
// the Store: each claim locks a batch with FOR UPDATE SKIP LOCKED, so any
// number of relays in any number of processes share the work, and skips any
// record that has an older unsettled record of its ordering key, so a key
// is never published out of order. The claim's own commit does not wait for
// the WAL flush (synchronous_commit off for that transaction only): losing
// it in a database crash only means publishing again.
//
// Writes insert into a table that holds only pending records and has no
// index but its primary key; the statement that publishes, fails or backs
// off a record moves it into a table of its own (see Migrations). Published
// records are kept there for the relay's retention cleanup, or deleted at
// once with Config.DeletePublished. Either way claiming reads only pending
// rows, so its cost does not grow with the published history (see
// cmd/outboxbench).
//
// The schema is created by Migrate (versioned, recorded in
// <table>_migrations); Migrations holds the SQL for those who run their own
// migration tool.
package pgxstore
