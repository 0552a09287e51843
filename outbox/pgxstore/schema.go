package pgxstore

import "strings"

// Migration is one versioned step of the outbox schema. SQL uses the
// placeholders {{table}} (the quoted, schema-qualified table), {{name}} (the
// bare table name, for index names) and {{schema}} (the quoted schema).
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations is the outbox schema, in order. Migrate applies the ones a
// database lacks; to run them with your own migration tool instead, render
// them with Store.MigrationSQL.
//
// Version 1 creates the table and its partial indexes; version 2 drops what
// every insert paid for and no query needs; version 3 adds deliver_at, the
// due time of delayed events (eda.At, eda.After; NULL for the others), and
// splits the pending index in two. The indexes each cover only the rows
// one query needs, so claiming stays as cheap with 10^6 published rows (or
// scheduled ones) as with none:
//   - pending: pending rows without a due time, by id: the claim scan, and
//     the check for older pending records of a claimed record's key that
//     the claim does not hold;
//   - scheduled: pending rows with a due time, by (deliver_at, id): the
//     claim of those due, which stops at the first one not due, however
//     many are scheduled for later;
//   - key_blocked: failed rows and pending rows that already failed once,
//     by (key, id): the keys that must wait, and the failed list (tiny in
//     normal operation);
//   - done: published and discarded rows by published_at: the retention
//     cleanup.
//
// Postgres opens every index of the table, and prepares the predicate of
// every partial one and every CHECK, on each INSERT statement, whether the
// row goes into the index or not; the order's transaction pays that.
// Version 2 removes key_open (pending and failed rows by key: the pending
// index serves that check now), failed (key_blocked holds those rows) and
// the CHECK on state (only this package writes it). Version 3 rebuilds the
// pending index within the migration's transaction, which holds writes for
// as long as that takes on the rows pending at the time.
var Migrations = []Migration{{
	Version: 1,
	Name:    "create outbox table",
	SQL: `
CREATE SCHEMA IF NOT EXISTS {{schema}};
CREATE TABLE {{table}} (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	event_id     text        NOT NULL,
	topic        text        NOT NULL,
	payload      bytea       NOT NULL,
	metadata     jsonb       NOT NULL,
	ordering_key text        NOT NULL DEFAULT '',
	dedup_id     text        NOT NULL DEFAULT '',
	created_at   timestamptz NOT NULL DEFAULT now(),
	-- 0 pending, 1 published, 2 failed, 3 discarded
	state        smallint    NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),
	attempts     integer     NOT NULL DEFAULT 0,
	available_at timestamptz,
	last_error   text        NOT NULL DEFAULT '',
	published_at timestamptz
);
CREATE INDEX {{name}}_pending ON {{table}} (id) WHERE state = 0;
CREATE INDEX {{name}}_key_open ON {{table}} (ordering_key, id) WHERE state IN (0, 2) AND ordering_key <> '';
CREATE INDEX {{name}}_key_blocked ON {{table}} (ordering_key, id) WHERE state = 2 OR (state = 0 AND attempts > 0);
CREATE INDEX {{name}}_done ON {{table}} (published_at) WHERE state IN (1, 3);
CREATE INDEX {{name}}_failed ON {{table}} (id) WHERE state = 2;
`,
}, {
	Version: 2,
	Name:    "drop indexes and check that inserts paid for",
	SQL: `
DROP INDEX IF EXISTS {{schema}}.{{name}}_key_open;
DROP INDEX IF EXISTS {{schema}}.{{name}}_failed;
ALTER TABLE {{table}} DROP CONSTRAINT IF EXISTS {{name}}_state_check;
`,
}, {
	Version: 3,
	Name:    "due time of delayed events",
	SQL: `
ALTER TABLE {{table}} ADD COLUMN deliver_at timestamptz;
DROP INDEX IF EXISTS {{schema}}.{{name}}_pending;
CREATE INDEX {{name}}_pending ON {{table}} (id) WHERE state = 0 AND deliver_at IS NULL;
CREATE INDEX {{name}}_scheduled ON {{table}} (deliver_at, id) WHERE state = 0 AND deliver_at IS NOT NULL;
`,
}}

func render(sql, schema, table, name string) string {
	return strings.NewReplacer("{{schema}}", schema, "{{table}}", table, "{{name}}", name).Replace(sql)
}
