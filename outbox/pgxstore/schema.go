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
// Version 1 creates the table and four partial indexes. Each index covers
// only the rows one query needs, so claiming stays as cheap with 10^6
// published rows as with none:
//   - pending: state = 0 (pending), by id: the claim scan;
//   - key_open: pending and failed rows with an ordering key, by (key, id):
//     the "older record of the same key" checks;
//   - key_blocked: failed rows and pending rows that already failed once:
//     the keys that must wait (tiny in normal operation);
//   - done: published and discarded rows by published_at: the retention
//     cleanup.
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
}}

func render(sql, schema, table, name string) string {
	return strings.NewReplacer("{{schema}}", schema, "{{table}}", table, "{{name}}", name).Replace(sql)
}
