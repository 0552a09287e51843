// Package pgstore keeps the eda inbox in Postgres (pgx v5): Store is the
// standalone inbox.Store, and Tx runs a typed handler in a transaction in
// which its writes and the inbox mark commit together — the exactly-once
// effect for handlers that write to the same database.
//
// Both use one table (Config.Schema.Config.Table, created by Migrate):
//
//	consumer text, event_id text, token text, lease_until timestamptz,
//	processed_at timestamptz, PRIMARY KEY (consumer, event_id)
//
// A row with processed_at set is a done mark; one without is a standalone
// claim. Do not use both modes with one consumer name.
package pgstore
