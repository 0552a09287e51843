// Package sqlitestore is the outbox on SQLite (modernc.org/sqlite, pure Go,
// no cgo): the zero set-up store for examples, tests and single-process
// services, with the same guarantees as pgxstore within one process.
//
// Write events in the caller's *sql.Tx with Store.Write; run an
// outbox.Relay on the Store to publish them.
package sqlitestore
