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
// every insert paid for and no query needs. The remaining indexes each
// cover only the rows one query needs, so claiming stays as cheap with
// 10^6 published rows as with none:
//   - pending: state = 0 (pending), by id: the claim scan, and the check
//     for older pending records of a claimed record's key that the claim
//     does not hold;
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
// the CHECK on state (only this package writes it).
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
}}

func render(sql, schema, table, name string) string {
	return strings.NewReplacer("{{schema}}", schema, "{{table}}", table, "{{name}}", name).Replace(sql)
}
