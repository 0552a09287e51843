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
// splits the pending index in two.
//
// Version 4 keeps in the main table only what a write inserts: pending
// records without a due time, with their primary key as the only index.
// Postgres opens every index of a table, and prepares the predicate of
// every partial one, on each INSERT statement, whether the row goes into
// the index or not; the order's transaction paid for the four partial
// indexes of version 3 (about a sixth of the insert's server time). The
// other states live in tables of their own, each with one index for the
// one query that needs it, so claiming stays as cheap with 10^6 published
// rows (or scheduled ones) as with none:
//   - <table>: pending records without a due time. Its primary key is the
//     claim's scan (in id order, which is key order), and the check for
//     older records of a claimed record's key that the claim does not
//     hold.
//   - <table>_scheduled: records with a due time (a write of a delayed
//     event inserts there), also while they back off after a failed
//     attempt. Its index on (deliver_at, id) is the claim of those due,
//     which stops at the first one not due, however many are scheduled
//     for later.
//   - <table>_held: records backing off after a failed attempt (state 0,
//     until available_at) and failed ones (state 2, until Retry or
//     Discard). Tiny in normal operation; its index on (ordering_key, id)
//     finds the keys that must wait. The claim takes a backing-off record
//     from there once it is due; Retry moves a failed one back to the main
//     table (or the scheduled one) under its own id, so in its place in its
//     key's order.
//   - <table>_done: published (state 1) and discarded (state 3) records,
//     moved there by the statement that marks them. Its index on
//     published_at is the retention cleanup's; it has no primary key,
//     since nothing looks a done record up by id.
//
// The scheduled table takes its ids from the main table's sequence, so a
// record keeps one id, unique across the tables, wherever it moves. Version
// 4 moves the rows of version 3 into these tables within the migration's
// transaction, which holds writes for as long as that takes (on a table
// with a long published history, as long as copying it); the columns the
// main table no longer needs are dropped (without a rewrite).
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
}, {
	Version: 4,
	Name:    "slim hot table: scheduled, held and done rows in their own tables",
	SQL: `
DROP INDEX IF EXISTS {{schema}}.{{name}}_pending;
DROP INDEX IF EXISTS {{schema}}.{{name}}_scheduled;
DROP INDEX IF EXISTS {{schema}}.{{name}}_key_blocked;
DROP INDEX IF EXISTS {{schema}}.{{name}}_done;
CREATE TABLE {{table}}_scheduled (
	id           bigint      PRIMARY KEY DEFAULT nextval('{{schema}}.{{name}}_id_seq'),
	event_id     text        NOT NULL,
	topic        text        NOT NULL,
	payload      bytea       NOT NULL,
	metadata     jsonb       NOT NULL,
	ordering_key text        NOT NULL DEFAULT '',
	dedup_id     text        NOT NULL DEFAULT '',
	created_at   timestamptz NOT NULL DEFAULT now(),
	attempts     integer     NOT NULL DEFAULT 0,
	available_at timestamptz,
	last_error   text        NOT NULL DEFAULT '',
	deliver_at   timestamptz NOT NULL
);
CREATE INDEX {{name}}_scheduled_due ON {{table}}_scheduled (deliver_at, id);
CREATE TABLE {{table}}_held (
	id           bigint      PRIMARY KEY,
	event_id     text        NOT NULL,
	topic        text        NOT NULL,
	payload      bytea       NOT NULL,
	metadata     jsonb       NOT NULL,
	ordering_key text        NOT NULL,
	dedup_id     text        NOT NULL,
	created_at   timestamptz NOT NULL,
	-- 0 pending (backing off), 2 failed
	state        smallint    NOT NULL,
	attempts     integer     NOT NULL,
	available_at timestamptz,
	last_error   text        NOT NULL,
	deliver_at   timestamptz
);
CREATE INDEX {{name}}_held_key ON {{table}}_held (ordering_key, id);
CREATE TABLE {{table}}_done (
	id           bigint      NOT NULL,
	event_id     text        NOT NULL,
	topic        text        NOT NULL,
	payload      bytea       NOT NULL,
	metadata     jsonb       NOT NULL,
	ordering_key text        NOT NULL,
	dedup_id     text        NOT NULL,
	created_at   timestamptz NOT NULL,
	-- 1 published, 3 discarded
	state        smallint    NOT NULL,
	attempts     integer     NOT NULL,
	last_error   text        NOT NULL,
	deliver_at   timestamptz,
	published_at timestamptz NOT NULL
);
CREATE INDEX {{name}}_done_published ON {{table}}_done (published_at);
WITH m AS (DELETE FROM {{table}} WHERE state IN (1, 3) RETURNING *)
INSERT INTO {{table}}_done (id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, state, attempts, last_error, deliver_at, published_at)
SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, state, attempts, last_error, deliver_at, coalesce(published_at, now()) FROM m;
WITH m AS (DELETE FROM {{table}} WHERE state = 2 OR (state = 0 AND attempts > 0 AND deliver_at IS NULL) RETURNING *)
INSERT INTO {{table}}_held (id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, state, attempts, available_at, last_error, deliver_at)
SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, state, attempts, coalesce(available_at, now()), last_error, deliver_at FROM m;
WITH m AS (DELETE FROM {{table}} WHERE deliver_at IS NOT NULL RETURNING *)
INSERT INTO {{table}}_scheduled (id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, attempts, available_at, last_error, deliver_at)
SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, attempts, available_at, last_error, deliver_at FROM m;
ALTER TABLE {{table}} DROP COLUMN state, DROP COLUMN available_at, DROP COLUMN last_error, DROP COLUMN published_at, DROP COLUMN deliver_at;
`,
}}

func render(sql, schema, table, name string) string {
	return strings.NewReplacer("{{schema}}", schema, "{{table}}", table, "{{name}}", name).Replace(sql)
}
