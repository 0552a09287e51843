package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/internal/pgddl"
	"github.com/edaproject/eda/internal/sqlident"
)

// ErrSchemaVersion: the database schema is missing or at another version than
// this package needs. Run Migrate.
var ErrSchemaVersion = errors.New("postgres transport: schema not at the expected version (run postgres.Migrate)")

// migrations are applied in order; migration i brings the schema to version
// i+1. Never edit a released migration: append a new one. "{{schema}}" is
// replaced with the quoted schema name.
var migrations = []string{
	// 1: queues, subscriptions, messages, deduplication ids.
	`
CREATE TABLE {{schema}}.queues (
	name                  text PRIMARY KEY,
	fifo                  boolean NOT NULL,
	visibility_timeout_us bigint  NOT NULL CHECK (visibility_timeout_us > 0),
	max_receive_count     integer NOT NULL CHECK (max_receive_count >= 0),
	dead_letter_queue     text REFERENCES {{schema}}.queues (name),
	-- plain: declared only as another queue's dead-letter queue so far.
	plain                 boolean NOT NULL DEFAULT false,
	created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {{schema}}.subscriptions (
	topic text NOT NULL,
	queue text NOT NULL REFERENCES {{schema}}.queues (name) ON DELETE CASCADE,
	PRIMARY KEY (topic, queue)
);

-- One row per message per queue. A row is visible to consumers when
-- visible_at <= now(); receiving it pushes visible_at one visibility timeout
-- ahead (the lease) and increments receive_count, which also serves as the
-- receipt: ack and nack only act on the row if receive_count is still the one
-- they received. Ack deletes the row.
CREATE TABLE {{schema}}.messages (
	id                 bigint GENERATED ALWAYS AS IDENTITY,
	-- No foreign key to queues: its check would share-lock the queue's row
	-- on every insert, which concurrent publishers turn into multixacts.
	-- Queues are never deleted.
	queue              text    NOT NULL,
	uuid               text    NOT NULL,
	payload            bytea   NOT NULL,
	-- metadata: the Watermill metadata, length-prefixed key/value pairs (see
	-- metadata.go); bytea keeps every byte of every value exactly.
	metadata           bytea   NOT NULL,
	-- group_id: the FIFO message group; NULL on standard queues.
	group_id           text,
	receive_count      integer NOT NULL DEFAULT 0,
	visible_at         timestamptz NOT NULL DEFAULT now(),
	-- dead_letter_source: the queue this message was dead-lettered from.
	dead_letter_source text,
	published_at       timestamptz NOT NULL DEFAULT now(),
	-- The only index in id order starts with the queue, so that no plan can
	-- walk the whole table in id order filtering on queue (see queries.go).
	PRIMARY KEY (queue, id)
) WITH (fillfactor = 80);
-- Receiving, acking and nacking change no indexed column, so with the free
-- space fillfactor leaves those updates are HOT: no index writes.
CREATE INDEX messages_fifo_head ON {{schema}}.messages (queue, group_id, id) WHERE group_id IS NOT NULL;

-- Deduplication ids of FIFO queues, remembered until expires_at.
CREATE TABLE {{schema}}.dedup (
	queue      text NOT NULL, -- no foreign key, as in messages
	dedup_id   text NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (queue, dedup_id)
);
CREATE INDEX dedup_expires_at ON {{schema}}.dedup (expires_at);

-- Raised by the publishing statement for a message without a group id bound
-- for a FIFO queue (transport.ErrMissingGroupID).
CREATE FUNCTION {{schema}}.missing_group(queue text, uuid text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'message % has no group id and FIFO queue % needs one', uuid, queue
		USING ERRCODE = 'EDA01';
END
$$;
`,
	// 2: half of each messages page left free, and each subscription says
	// whether its queue is FIFO.
	//
	// Fillfactor: a receive updates every row
	// it leases (receive count, lease end), and the new version of a row
	// stays on its page, without an index entry (a HOT update), only if the
	// page has room for it. At fillfactor 80 a page of rows published
	// together has room for about one new version in five, so most of a
	// receive's rows moved to other pages, each with a new primary key
	// entry and its whole tuple in the WAL: 25% of the updates of 100
	// receives of 100 200-byte messages were HOT, 100% at 50, with a third
	// of the WAL and no index growth. Pages written before the migration
	// keep their fill; new ones (every page of new messages) take 50.
	//
	// subscriptions.fifo: a publish finds the queues of its topic and
	// whether each is FIFO; with the flag in subscriptions that is one index
	// lookup instead of a join with queues, whose plan (a hash join over all
	// queues) cost ~30 µs of server CPU per publish of one message (8
	// publishers, 8,000 publishes: 0.89 s with the join, 0.60-0.70 s
	// without). A queue's FIFO setting never changes once declared.
	`
ALTER TABLE {{schema}}.messages SET (fillfactor = 50);
ALTER TABLE {{schema}}.subscriptions ADD COLUMN fifo boolean;
UPDATE {{schema}}.subscriptions s SET fifo = q.fifo FROM {{schema}}.queues q WHERE q.name = s.queue;
ALTER TABLE {{schema}}.subscriptions ALTER COLUMN fifo SET NOT NULL;
`,
}

// SchemaVersion is the schema version this package needs.
var SchemaVersion = len(migrations)

// SchemaSQL returns the SQL that creates the transport's tables in schema
// and records SchemaVersion, for users who apply migrations with their own
// tool. It is what Migrate runs on an empty schema, without Migrate's lock.
func SchemaSQL(schema string) (string, error) {
	if !sqlident.Valid(schema, sqlident.MaxLen) {
		return "", fmt.Errorf("%w: schema name %q (want lower-case letters, digits, _; at most 63)", errInvalid, schema)
	}
	var b strings.Builder
	b.WriteString(versionTableSQL(schema))
	for i, m := range migrations {
		b.WriteString(expand(m, schema))
		fmt.Fprintf(&b, "\nINSERT INTO %s.schema_version (version) VALUES (%d);\n", quote(schema), i+1)
	}
	return b.String(), nil
}

func versionTableSQL(schema string) string {
	return fmt.Sprintf(`
CREATE SCHEMA IF NOT EXISTS %[1]s;
CREATE TABLE IF NOT EXISTS %[1]s.schema_version (
	version    integer PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now()
);
`, quote(schema))
}

func quote(schema string) string { return pgx.Identifier{schema}.Sanitize() }

func expand(sql, schema string) string { return strings.ReplaceAll(sql, "{{schema}}", quote(schema)) }

// Migrate creates or upgrades the transport's schema (Config.Schema) to
// SchemaVersion. It is idempotent and safe to run from several processes at
// once (an advisory lock serializes them). New does not create anything: run
// Migrate first, at deploy time or at start-up.
func Migrate(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	pool, owned, err := cfg.pool(ctx)
	if err != nil {
		return err
	}
	if owned {
		defer pool.Close()
	}
	schema := cfg.Schema
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return classify("migrate: connect", err)
	}
	defer conn.Release()
	// A session lock taken before the transaction starts: a transaction
	// that waited for a lock inside it could miss the catalog changes of the
	// migration it waited for (advisory locks do not refresh the catalog
	// snapshot) and fail on CREATE SCHEMA IF NOT EXISTS.
	key := lockKey("eda-transport-migrate", schema)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return classify("migrate: lock", err)
	}
	defer func() {
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		defer cancel()
		if _, err := conn.Exec(unlockCtx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			conn.Conn().PgConn().Close(unlockCtx) // do not return a connection holding the lock to the pool
		}
	}()
	// The schema outside the transaction: another eda component (an outbox,
	// an inbox) may create the same schema at this moment under its own
	// lock, and the statement that loses that race would abort ours.
	if err := pgddl.CreateSchema(ctx, conn, schema); err != nil {
		return classify("migrate", err)
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		setup := versionTableSQL(schema)
		if _, err := tx.Exec(ctx, setup); err != nil {
			return classify("migrate: create schema", err)
		}
		var have int
		if err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(max(version), 0) FROM %s.schema_version`, quote(schema))).Scan(&have); err != nil {
			return classify("migrate: read version", err)
		}
		if have > SchemaVersion {
			return fmt.Errorf("%w: schema %q is at version %d, newer than this package's %d", ErrSchemaVersion, schema, have, SchemaVersion)
		}
		for v := have + 1; v <= SchemaVersion; v++ {
			if _, err := tx.Exec(ctx, expand(migrations[v-1], schema)); err != nil {
				return classify(fmt.Sprintf("migrate: version %d", v), err)
			}
			if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.schema_version (version) VALUES ($1)`, quote(schema)), v); err != nil {
				return classify("migrate: record version", err)
			}
		}
		return nil
	})
}

// checkSchema returns ErrSchemaVersion unless schema is at SchemaVersion.
func checkSchema(ctx context.Context, db *pgxpool.Pool, schema string) error {
	var have int
	err := db.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(max(version), 0) FROM %s.schema_version`, quote(schema))).Scan(&have)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // undefined table, invalid schema
		return fmt.Errorf("%w: schema %q has no eda transport tables", ErrSchemaVersion, schema)
	}
	if err != nil {
		return classify("check schema version", err)
	}
	if have != SchemaVersion {
		return fmt.Errorf("%w: schema %q is at version %d, this package needs %d", ErrSchemaVersion, schema, have, SchemaVersion)
	}
	return nil
}

// lockKey hashes parts into an advisory lock key. Collisions only make
// unrelated work wait for each other.
func lockKey(parts ...string) int64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int64(h.Sum64())
}
