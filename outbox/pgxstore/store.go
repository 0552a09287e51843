package pgxstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/pgddl"
	"github.com/edaproject/eda/outbox"

	"github.com/edaproject/eda/internal/sqlident"
)

// Defaults of Config.
const (
	DefaultSchema         = "public"
	DefaultTable          = "eda_outbox"
	DefaultNotifyInterval = 5 * time.Millisecond
)

// Config configures a Store.
type Config struct {
	// Schema holding the outbox table. Default DefaultSchema.
	Schema string
	// Table name. Default DefaultTable. Schema and Table are lower-case SQL
	// identifiers ([a-z_][a-z0-9_]*), at most 40 characters.
	Table string
	// DisableNotify stops writes from sending a NOTIFY. By default writes
	// notify the relays (delivered at commit), so they wake at once;
	// without it relays find new records at their next poll.
	DisableNotify bool
	// NotifyInterval is the least time between two writes of this Store
	// that send a NOTIFY; the writes in between do not. Postgres serialises
	// the commits of notifying transactions (a database-wide lock held
	// through the commit), which would cap write throughput; one
	// notification per interval wakes the relays just as well under load. A
	// write that skipped it is found by the relay's next claim (relays claim
	// again shortly after every batch) or, after a lull, its next poll.
	// Default DefaultNotifyInterval; negative notifies on every write.
	NotifyInterval time.Duration
	// DeletePublished deletes records as soon as they are published instead
	// of marking them and keeping them for the relay's retention cleanup.
	// It makes relaying several times cheaper for the database (a delete
	// writes no new row version) at the price of no history of published
	// events. Failed and discarded records are kept either way.
	DeletePublished bool
	// Logger receives the store's logs (the LISTEN connection). Nil
	// discards them.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Schema != "" && !sqlident.Valid(c.Schema, 40) {
		errs = append(errs, fmt.Errorf("%w: pgxstore: Schema %q is not a lower-case identifier of at most 40 characters", outbox.ErrInvalidConfig, c.Schema))
	}
	if c.Table != "" && !sqlident.Valid(c.Table, 40) {
		errs = append(errs, fmt.Errorf("%w: pgxstore: Table %q is not a lower-case identifier of at most 40 characters", outbox.ErrInvalidConfig, c.Table))
	}
	return errors.Join(errs...)
}

// Store is the Postgres outbox on pgx/v5.
type Store struct {
	pool    *pgxpool.Pool
	cfg     Config
	table   string // schema.table
	channel string

	claim, claimPart, stats, failed, retry, discard, cleanup, notify string
	// inserts by kind of write (one or many records, delayed or not)
	hotOne, schedOne, hotMany, mixedMany insertSQL
	// what apply runs for the records of each table (src*)
	publish, backoff, fail [3]string
	lastNotify             atomic.Int64 // unix nanoseconds
	// claimSlots bounds the claims that hold a pool connection at once to
	// one fewer than the pool's size (see claimWith).
	claimSlots chan struct{}
}

// insertSQL is one insert, with and without the NOTIFY.
type insertSQL struct{ quiet, notify string }

// The tables a claimed record comes from.
const (
	srcHot   = 0 // the main table: pending records without a due time
	srcSched = 1 // <table>_scheduled: records with a due time
	srcHeld  = 2 // <table>_held: records backing off after a failed attempt, and failed ones
)

var (
	_ outbox.PartitionedStore = (*Store)(nil)
	_ outbox.DueStore         = (*Store)(nil)
)

// New returns a store on pool. It does not touch the database: call
// Migrate once (at deploy or start-up) before writing.
//
// Claims hold at most one fewer connection than the pool's MaxConns at
// once, so a relay's Publisher that writes to the same pool always gets
// one; on a pool of one connection such a Publisher would wait forever.
func New(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	var errs []error
	if pool == nil {
		errs = append(errs, fmt.Errorf("%w: pgxstore: nil pool", outbox.ErrInvalidConfig))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Schema == "" {
		cfg.Schema = DefaultSchema
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NotifyInterval == 0 {
		cfg.NotifyInterval = DefaultNotifyInterval
	}
	t := cfg.Schema + "." + cfg.Table
	sched, held, done := t+"_scheduled", t+"_held", t+"_done"
	s := &Store{pool: pool, cfg: cfg, table: t, channel: cfg.Schema + "_" + cfg.Table}
	s.claimSlots = make(chan struct{}, max(1, int(pool.Config().MaxConns)-1))
	// s.notify is what Retry and Discard send to wake the relays.
	s.notify = fmt.Sprintf("SELECT pg_notify('%s', '')", s.channel)
	// A write inserts into the main table, or into the scheduled one for
	// a record with a due time. The insert that notifies is a
	// data-modifying CTE so that one statement also notifies (delivered
	// at commit); the main SELECT must call pg_notify itself, since an
	// unreferenced SELECT CTE would never run. The others are a plain
	// INSERT, which Postgres plans and starts with fewer nodes.
	const cols = "event_id, topic, payload, metadata, ordering_key, dedup_id"
	withNotify := func(q string) insertSQL { return insertSQL{q, "WITH i AS (" + q + ") " + s.notify} }
	s.hotOne = withNotify(fmt.Sprintf(`INSERT INTO %s (%s) VALUES ($1, $2, $3, $4, $5, $6)`, t, cols))
	s.schedOne = withNotify(fmt.Sprintf(`INSERT INTO %s (%s, deliver_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`, sched, cols))
	s.hotMany = withNotify(fmt.Sprintf(`INSERT INTO %s (%s)
		SELECT a, b, c, d, e, f FROM unnest($1::text[], $2::text[], $3::bytea[], $4::jsonb[], $5::text[], $6::text[]) WITH ORDINALITY AS x(a, b, c, d, e, f, o) ORDER BY o`, t, cols))
	mixed := fmt.Sprintf(`WITH x AS (
		SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::jsonb[], $5::text[], $6::text[], $7::timestamptz[]) WITH ORDINALITY AS x(a, b, c, d, e, f, g, o)
	), h AS (INSERT INTO %[1]s (%[3]s) SELECT a, b, c, d, e, f FROM x WHERE g IS NULL ORDER BY o
	), s AS (INSERT INTO %[2]s (%[3]s, deliver_at) SELECT a, b, c, d, e, f, g FROM x WHERE g IS NOT NULL ORDER BY o
	) `, t, sched, cols)
	s.mixedMany = insertSQL{mixed + "SELECT", mixed + s.notify}
	// The claim takes, first, records with a due time that are due by $2
	// (the scheduled table's index, in due order: it stops at the first
	// one not due), then held records whose backoff is over, then fills
	// its limit with the main table's records, in id order (its primary
	// key: the table holds only pending records), whose key has no older
	// held record that must wait (failed, backing off, or due but claimed
	// elsewhere). It locks them with SKIP LOCKED so concurrent relays take
	// disjoint sets, and reports for each record of the main table whether
	// an older record of its key there is not in this claim (locked by
	// another relay): such a record is a "blocker" and the claimed record
	// is left alone, so a key is never published out of order. The
	// blockers are found in one walk of the primary key up to the newest
	// claimed id, which is about as long as the claim's own walk. Records
	// the caller holds in its own earlier claims ($3,
	// ClaimRequest.InFlight) are not blockers: the caller orders them
	// itself. Records with a due time are outside their key's order: they
	// neither wait nor make others wait. A held record without a due time
	// never has an older record of its key in the main table (it was
	// claimed after them, and a failed one holds the newer ones back), so
	// held records are checked against held ones only.
	claim := func(part string) string {
		return fmt.Sprintf(`WITH d AS (
	SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, attempts, deliver_at
	FROM %[2]s o
	WHERE deliver_at <= $2 AND (attempts = 0 OR available_at <= now())%[5]s
	ORDER BY deliver_at, id
	LIMIT $1
	FOR UPDATE SKIP LOCKED
), r AS (
	SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, attempts
	FROM %[3]s o
	WHERE state = 0 AND available_at <= now()
	  AND (ordering_key = '' OR NOT EXISTS (
		SELECT 1 FROM %[3]s b
		WHERE b.ordering_key = o.ordering_key AND b.id < o.id AND b.deliver_at IS NULL AND (b.state = 2 OR b.available_at > now())))%[5]s
	ORDER BY id
	LIMIT $1 - (SELECT count(*) FROM d)
	FOR UPDATE SKIP LOCKED
), c AS (
	SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, attempts
	FROM %[1]s o
	WHERE (ordering_key = '' OR NOT EXISTS (
		SELECT 1 FROM %[3]s b
		WHERE b.ordering_key = o.ordering_key AND b.id < o.id AND b.deliver_at IS NULL
		  AND (b.state = 2 OR b.available_at > now() OR (b.id NOT IN (SELECT id FROM r) AND b.id <> ALL($3)))))%[5]s
	ORDER BY id
	LIMIT $1 - (SELECT count(*) FROM d) - (SELECT count(*) FROM r)
	FOR UPDATE SKIP LOCKED
), other AS (
	SELECT ordering_key, min(id) AS id FROM %[1]s
	WHERE id < (SELECT max(id) FROM c) AND ordering_key <> '' AND id NOT IN (SELECT id FROM c)
	  AND id NOT IN (SELECT unnest($3::bigint[]))
	GROUP BY ordering_key
)
SELECT c.id, c.event_id, c.topic, c.payload, c.metadata::text, c.ordering_key, c.dedup_id, c.created_at, c.attempts,
	NULL::timestamptz, coalesce(other.id < c.id, false), %[4]d
FROM c LEFT JOIN other ON other.ordering_key = c.ordering_key
UNION ALL
SELECT r.id, r.event_id, r.topic, r.payload, r.metadata::text, r.ordering_key, r.dedup_id, r.created_at, r.attempts,
	NULL::timestamptz, r.ordering_key <> '' AND EXISTS (
		SELECT 1 FROM %[3]s b
		WHERE b.ordering_key = r.ordering_key AND b.id < r.id AND b.deliver_at IS NULL AND b.id NOT IN (SELECT id FROM r) AND b.id <> ALL($3)), %[7]d
FROM r
UNION ALL
SELECT d.id, d.event_id, d.topic, d.payload, d.metadata::text, d.ordering_key, d.dedup_id, d.created_at, d.attempts,
	d.deliver_at, false, %[6]d
FROM d
ORDER BY 1`, t, sched, held, srcHot, part, srcSched, srcHeld)
	}
	s.claim = claim("")
	// A partition holds the keys whose hash is its index modulo the count,
	// and every record without a key.
	s.claimPart = claim(`
	  AND (ordering_key = '' OR (hashtext(ordering_key) & 2147483647) % $4 = $5)`)
	// What the claim's outcomes do to the records of each table. A
	// published record moves to the done table (or is deleted), a failed
	// one to the held table; a record of the main table backing off moves
	// to the held table too, out of the claim's walk, and comes back from
	// it when due.
	const base = "id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at"
	srcTable := [3]string{t, sched, held}
	lastErr := [3]string{"''", "last_error", "last_error"}
	deliverAt := [3]string{"NULL::timestamptz", "deliver_at", "deliver_at"}
	for src, from := range srcTable {
		if cfg.DeletePublished {
			s.publish[src] = "DELETE FROM " + from + " WHERE id = ANY($1)"
		} else {
			s.publish[src] = fmt.Sprintf(`WITH m AS (DELETE FROM %[1]s WHERE id = ANY($1) RETURNING *)
	INSERT INTO %[2]s (%[3]s, state, attempts, last_error, deliver_at, published_at)
	SELECT %[3]s, 1, attempts, %[4]s, %[5]s, now() FROM m`, from, done, base, lastErr[src], deliverAt[src])
		}
		// Into the held table: $1 ids, $2 errors, $3 backoff ends (NULL
		// when failed).
		toHeld := func(state int) string {
			return fmt.Sprintf(`WITH m AS (DELETE FROM %[1]s t USING unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS x(id, err, at)
		WHERE t.id = x.id RETURNING t.*, x.err, x.at)
	INSERT INTO %[2]s (%[3]s, state, attempts, available_at, last_error, deliver_at)
	SELECT %[3]s, %[4]d, attempts + 1, at, err, %[5]s FROM m`, from, held, base, state, deliverAt[src])
		}
		s.fail[src] = toHeld(int(outbox.Failed))
		s.backoff[src] = toHeld(int(outbox.Pending))
	}
	for _, src := range []int{srcSched, srcHeld} { // backing off in place
		s.backoff[src] = "UPDATE " + srcTable[src] + ` t SET attempts = t.attempts + 1, last_error = x.err, available_at = x.at
	FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS x(id, err, at) WHERE t.id = x.id`
	}
	s.fail[srcHeld] = "UPDATE " + held + ` t SET state = 2, attempts = t.attempts + 1, last_error = x.err
	FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS x(id, err, at) WHERE t.id = x.id`
	// Pending counts scheduled and backing-off records too; the oldest
	// pending is the oldest record without a due time, or the earliest
	// due time passed.
	s.stats = fmt.Sprintf(`SELECT
	(SELECT count(*) FROM %[1]s) + (SELECT count(*) FROM %[2]s) + (SELECT count(*) FROM %[3]s WHERE state = 0),
	least((SELECT created_at FROM %[1]s ORDER BY id LIMIT 1),
		(SELECT min(created_at) FROM %[3]s WHERE state = 0),
		(SELECT deliver_at FROM %[2]s WHERE deliver_at <= now() ORDER BY deliver_at, id LIMIT 1)),
	(SELECT count(*) FROM %[3]s WHERE state = 2)`, t, sched, held)
	s.failed = fmt.Sprintf(`SELECT id, event_id, topic, payload, metadata::text, ordering_key, dedup_id, created_at, state, attempts, last_error, deliver_at
	FROM %s WHERE state = 2 ORDER BY id LIMIT $1`, held)
	// Retry moves failed records back where a write puts them, with zero
	// attempts, under their own ids (so in their place in their key's
	// order).
	s.retry = fmt.Sprintf(`WITH m AS (DELETE FROM %[3]s WHERE id = ANY($1) AND state = 2 RETURNING *),
	h AS (INSERT INTO %[1]s (%[4]s, attempts) OVERRIDING SYSTEM VALUE SELECT %[4]s, 0 FROM m WHERE deliver_at IS NULL),
	s AS (INSERT INTO %[2]s (%[4]s, attempts, deliver_at) SELECT %[4]s, 0, deliver_at FROM m WHERE deliver_at IS NOT NULL)
	SELECT count(*) FROM m`, t, sched, held, base)
	s.discard = fmt.Sprintf(`WITH m AS (DELETE FROM %[1]s WHERE id = ANY($1) AND state = 2 RETURNING *)
	INSERT INTO %[2]s (%[3]s, state, attempts, last_error, deliver_at, published_at)
	SELECT %[3]s, 3, attempts, last_error, deliver_at, now() FROM m`, held, done, base)
	s.cleanup = fmt.Sprintf(`DELETE FROM %[1]s WHERE ctid = ANY(ARRAY(SELECT ctid FROM %[1]s WHERE published_at < $1 LIMIT $2))`, done)
	return s, nil
}

// Table returns the schema-qualified table name.
func (s *Store) Table() string { return s.table }

// Tables returns the schema-qualified names of the store's tables: the
// main one (Table: what writes insert into), then <table>_scheduled
// (records with a due time), <table>_held (records backing off, and
// failed ones) and <table>_done (published and discarded ones, until the
// retention cleanup).
func (s *Store) Tables() []string {
	return []string{s.table, s.table + "_scheduled", s.table + "_held", s.table + "_done"}
}

// Channel returns the LISTEN/NOTIFY channel the store uses.
func (s *Store) Channel() string { return s.channel }

// MigrationSQL returns the SQL of every migration, rendered for this store's
// schema and table, in order.
func (s *Store) MigrationSQL() []Migration {
	out := make([]Migration, len(Migrations))
	for i, m := range Migrations {
		m.SQL = render(m.SQL, s.cfg.Schema, s.table, s.cfg.Table)
		out[i] = m
	}
	return out
}

// Migrate brings the outbox schema to the latest version, applying missing
// migrations in one transaction. Concurrent calls serialise on an advisory
// lock. The applied versions are recorded in <table>_migrations.
func (s *Store) Migrate(ctx context.Context) error {
	// The schema first, outside the transaction: services started together
	// on a fresh database create it at the same moment, and the one that
	// loses that race must not abort its migration.
	if err := pgddl.CreateSchema(ctx, s.pool, s.cfg.Schema); err != nil {
		return fmt.Errorf("pgxstore: migrate: %w", err)
	}
	err := s.migrate(ctx)
	if pgddl.Race(err) { // another process's DDL committed as ours ran: it is there now
		err = s.migrate(ctx)
	}
	return err
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgxstore: migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	mt := s.table + "_migrations"
	stmts := []string{
		"SELECT pg_advisory_xact_lock(hashtext($1))",
		"CREATE TABLE IF NOT EXISTS " + mt + " (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
	}
	for i, q := range stmts {
		var args []any
		if i == 0 {
			args = []any{"eda_outbox_migrate:" + s.table}
		}
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("pgxstore: migrate: %w", err)
		}
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+mt).Scan(&current); err != nil {
		return fmt.Errorf("pgxstore: migrate: %w", err)
	}
	for _, m := range s.MigrationSQL() {
		if m.Version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("pgxstore: migration %d (%s): %w", m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+mt+" (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			return fmt.Errorf("pgxstore: migrate: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgxstore: migrate: %w", err)
	}
	return nil
}

// Execer is what Write needs of a transaction: pgx.Tx, a pgxpool-started
// transaction (also a pgx.Tx) and *pgx.Conn inside BEGIN all have it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Write encodes events with enc (usually the *eda.App) and stores them in
// tx. They are published once tx commits, and never if it rolls back. One
// statement stores every event.
func (s *Store) Write(ctx context.Context, tx Execer, enc outbox.Encoder, events ...eda.Event) error {
	recs, err := outbox.Encode(ctx, enc, events...)
	if err != nil {
		return err
	}
	return s.WriteRecords(ctx, tx, recs...)
}

// WriteRecords stores records (see outbox.NewRecord) in tx.
func (s *Store) WriteRecords(ctx context.Context, tx Execer, recs ...outbox.Record) error {
	if tx == nil {
		return fmt.Errorf("%w: pgxstore: nil transaction", outbox.ErrInvalidConfig)
	}
	q, args, err := s.insertArgs(recs)
	if err != nil || q == "" {
		return err
	}
	_, err = tx.Exec(ctx, q, args...)
	return s.wrap("write", err)
}

// Queue encodes events with enc and adds their insert to b, the caller's
// batch, after the statements already queued. Sending b inside a
// transaction writes them in it; sending it with pool.SendBatch or
// conn.SendBatch outside a transaction runs the whole batch as one implicit
// transaction, in one round trip: the order row and its events commit
// together or not at all.
func (s *Store) Queue(ctx context.Context, b *pgx.Batch, enc outbox.Encoder, events ...eda.Event) error {
	if b == nil {
		return fmt.Errorf("%w: pgxstore: nil batch", outbox.ErrInvalidConfig)
	}
	recs, err := outbox.Encode(ctx, enc, events...)
	if err != nil {
		return err
	}
	q, args, err := s.insertArgs(recs)
	if err != nil || q == "" {
		return err
	}
	b.Queue(q, args...)
	return nil
}

// insertArgs returns the insert statement and arguments for recs ("" when
// recs is empty).
func (s *Store) insertArgs(recs []outbox.Record) (string, []any, error) {
	switch len(recs) {
	case 0:
		return "", nil, nil
	case 1:
		r := recs[0]
		md, err := outbox.MarshalMetadata(r.Metadata)
		if err != nil {
			return "", nil, fmt.Errorf("%w: %w", outbox.ErrInvalidEvent, err)
		}
		if r.DeliverAt.IsZero() {
			return s.insertSQL(s.hotOne), []any{r.EventID, r.Topic, r.Payload, md, r.OrderingKey, r.DedupID}, nil
		}
		return s.insertSQL(s.schedOne), []any{r.EventID, r.Topic, r.Payload, md, r.OrderingKey, r.DedupID, r.DeliverAt}, nil
	}
	ids, topics, keys, dedups := make([]string, len(recs)), make([]string, len(recs)), make([]string, len(recs)), make([]string, len(recs))
	payloads, mds := make([][]byte, len(recs)), make([]string, len(recs))
	var due []*time.Time // nil unless one is delayed
	for i, r := range recs {
		md, err := outbox.MarshalMetadata(r.Metadata)
		if err != nil {
			return "", nil, fmt.Errorf("%w: %w", outbox.ErrInvalidEvent, err)
		}
		ids[i], topics[i], payloads[i], mds[i], keys[i], dedups[i] = r.EventID, r.Topic, r.Payload, string(md), r.OrderingKey, r.DedupID
		if !r.DeliverAt.IsZero() {
			if due == nil {
				due = make([]*time.Time, len(recs))
			}
			due[i] = &recs[i].DeliverAt
		}
	}
	if due == nil {
		return s.insertSQL(s.hotMany), []any{ids, topics, payloads, mds, keys, dedups}, nil
	}
	return s.insertSQL(s.mixedMany), []any{ids, topics, payloads, mds, keys, dedups, due}, nil
}

// insertSQL returns q with the NOTIFY when this write sends it.
func (s *Store) insertSQL(q insertSQL) string {
	if s.shouldNotify() {
		return q.notify
	}
	return q.quiet
}

// SQLExecer is what WriteSQL needs of a database/sql transaction (*sql.Tx).
type SQLExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// WriteSQL is Write for a database/sql transaction on Postgres (pgx's
// stdlib driver or lib/pq). It sends one statement per event.
func (s *Store) WriteSQL(ctx context.Context, tx SQLExecer, enc outbox.Encoder, events ...eda.Event) error {
	if tx == nil {
		return fmt.Errorf("%w: pgxstore: nil transaction", outbox.ErrInvalidConfig)
	}
	recs, err := outbox.Encode(ctx, enc, events...)
	if err != nil {
		return err
	}
	for _, r := range recs {
		md, err := outbox.MarshalMetadata(r.Metadata)
		if err != nil {
			return fmt.Errorf("%w: %w", outbox.ErrInvalidEvent, err)
		}
		if r.DeliverAt.IsZero() {
			_, err = tx.ExecContext(ctx, s.insertSQL(s.hotOne), r.EventID, r.Topic, r.Payload, string(md), r.OrderingKey, r.DedupID)
		} else {
			_, err = tx.ExecContext(ctx, s.insertSQL(s.schedOne), r.EventID, r.Topic, r.Payload, string(md), r.OrderingKey, r.DedupID, r.DeliverAt)
		}
		if err != nil {
			return s.wrap("write", err)
		}
	}
	return nil
}

// shouldNotify reports whether this write sends the NOTIFY: not when
// disabled, nor within NotifyInterval of the last one that did.
func (s *Store) shouldNotify() bool {
	if s.cfg.DisableNotify {
		return false
	}
	if s.cfg.NotifyInterval < 0 {
		return true
	}
	now := time.Now().UnixNano()
	last := s.lastNotify.Load()
	return now-last >= int64(s.cfg.NotifyInterval) && s.lastNotify.CompareAndSwap(last, now)
}

// wrap maps "relation does not exist" to ErrNotMigrated.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return fmt.Errorf("%w: pgxstore: %s on %s (run Migrate): %w", outbox.ErrNotMigrated, op, s.table, err)
	}
	return fmt.Errorf("pgxstore: %s on %s: %w", op, s.table, err)
}

// claimBegin starts a claim's transaction. Its statements go in the
// claim's round trip, before the claim query.
//
// The claim's commit only records that records were published. Losing it
// in a database crash means publishing them again, which at-least-once
// delivery allows, so it need not wait for the WAL flush; the caller's
// writes stay fully durable.
//
// The claim must walk the pending index in id order and stop after limit
// rows, whatever the backlog. With statistics from a moment the table was
// small (empty after a drain, or never analyzed), the planner instead reads
// every pending row through a bitmap scan and sorts them, so each claim
// costs as much as the whole backlog: after an outage, draining slows down
// exactly when the backlog is largest (TestClaimPlanWithStaleStatistics).
// Without seq and bitmap scans the only plan left is the ordered one.
//
// The planner prices that walk by the rows it may read, not the limit it
// stops at: with a large backlog analyzed, the claim's estimated cost
// passes jit_above_cost and Postgres compiles the query with LLVM on every
// claim, which takes 40-100 ms of CPU for a query that runs in 1 ms
// (cmd/outboxbench -phases claim, its backlog case). JIT is off for the
// claim's transaction.
const claimBegin = "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off"

// claimBeginStatements are claimBegin's statements, one by one, for a
// pgx.Batch (whose extended protocol takes one statement per query).
var claimBeginStatements = strings.Split(claimBegin, "; ")

// Claim implements outbox.Store. The records stay row-locked (FOR UPDATE
// SKIP LOCKED) in one transaction while publish runs; if the process dies,
// the transaction aborts and the records are claimed again.
func (s *Store) Claim(ctx context.Context, limit int, publish func(context.Context, []outbox.Record) []outbox.Result) (int, error) {
	return s.ClaimDue(ctx, outbox.ClaimRequest{Limit: limit}, publish)
}

// ClaimPartition implements outbox.PartitionedStore.
func (s *Store) ClaimPartition(ctx context.Context, p outbox.Partition, limit int, publish func(context.Context, []outbox.Record) []outbox.Result) (int, error) {
	if p.Of <= 0 {
		return 0, fmt.Errorf("%w: pgxstore: partition %d of %d", outbox.ErrInvalidConfig, p.Index, p.Of)
	}
	return s.ClaimDue(ctx, outbox.ClaimRequest{Limit: limit, Partition: p}, publish)
}

// ClaimDue implements outbox.DueStore.
func (s *Store) ClaimDue(ctx context.Context, req outbox.ClaimRequest, publish func(context.Context, []outbox.Record) []outbox.Result) (int, error) {
	due := req.DueBy
	if due.IsZero() {
		due = time.Now()
	}
	inflight := req.InFlight
	if inflight == nil {
		inflight = []int64{} // NOT IN of a NULL array would match nothing
	}
	p := req.Partition
	switch {
	case p.Of == 0 && p.Index == 0:
		return s.claimWith(ctx, req.Limit, publish, s.claim, req.Limit, due, inflight)
	case p.Of <= 0 || p.Index < 0 || p.Index >= p.Of:
		return 0, fmt.Errorf("%w: pgxstore: partition %d of %d", outbox.ErrInvalidConfig, p.Index, p.Of)
	}
	return s.claimWith(ctx, req.Limit, publish, s.claimPart, req.Limit, due, inflight, p.Of, p.Index)
}

// claimWith runs one claim of q (with args) in two round trips: the
// transaction's start and the claim query in one batch, then, after
// publish, the outcomes' updates and the commit in another.
func (s *Store) claimWith(ctx context.Context, limit int, publish func(context.Context, []outbox.Record) []outbox.Result, q string, args ...any) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: pgxstore: claim limit %d", outbox.ErrInvalidConfig, limit)
	}
	// A claim holds its connection while publish runs, and a relay runs
	// two claims per worker at once (outbox.ClaimRequest.InFlight). If
	// they took every connection of the pool, a publisher that writes to
	// the same pool (the Postgres transport on the application's pool, a
	// sink table) would wait for a connection forever. One connection is
	// always left to others.
	select {
	case s.claimSlots <- struct{}{}:
	case <-ctx.Done():
		return 0, s.wrap("claim", ctx.Err())
	}
	defer func() { <-s.claimSlots }()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, s.wrap("claim", err)
	}
	open := true // the claim's transaction may be open
	defer func() {
		if open {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
		conn.Release() // a connection left in a transaction is closed, not reused
	}()
	b := &pgx.Batch{}
	for _, q := range claimBeginStatements {
		b.Queue(q)
	}
	b.Queue(q, args...)
	br := conn.SendBatch(ctx, b)
	batch, src, found, err := s.scanClaim(br)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, s.wrap("claim", err)
	}
	if len(batch) == 0 {
		return found, nil
	}
	var results []outbox.Result
	var corrupt []outbox.Result
	good := batch[:0:0]
	for _, r := range batch {
		if r.Metadata == nil {
			corrupt = append(corrupt, outbox.Result{Seq: r.Seq, Outcome: outbox.OutcomeFailed, Err: outbox.ErrCorruptRecord.Error()})
			continue
		}
		good = append(good, r)
	}
	if len(good) > 0 {
		results = publish(ctx, good)
	}
	results = append(results, corrupt...)
	if err := s.applyAndCommit(ctx, conn, results, src); err != nil {
		return 0, err
	}
	open = false
	return found, nil
}

// scanClaim reads the results of a claim's batch: its begin statements,
// then the claimed records (found counts those held back too) and the
// table of each one not from the main table.
func (s *Store) scanClaim(br pgx.BatchResults) (batch []outbox.Record, src map[int64]int, found int, err error) {
	for range claimBeginStatements {
		if _, err := br.Exec(); err != nil {
			return nil, nil, 0, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, 0, err
	}
	defer rows.Close()
	src = map[int64]int{}
	for rows.Next() {
		found++
		var r outbox.Record
		var md string
		var isBlocked bool
		var due *time.Time
		var from int
		if err := rows.Scan(&r.Seq, &r.EventID, &r.Topic, &r.Payload, &md, &r.OrderingKey, &r.DedupID, &r.CreatedAt, &r.Attempts, &due, &isBlocked, &from); err != nil {
			return nil, nil, 0, err
		}
		if due != nil {
			r.DeliverAt = due.UTC()
		}
		if isBlocked {
			continue // an older record of its key is held elsewhere
		}
		if from != srcHot {
			src[r.Seq] = from
		}
		if r.Metadata, err = outbox.UnmarshalMetadata([]byte(md)); err != nil {
			// Cannot happen for rows written by Write; park it visibly.
			r.Metadata = nil
		}
		batch = append(batch, r)
	}
	rows.Close()
	return batch, src, found, rows.Err()
}

// applyAndCommit records the claim's outcomes and commits its transaction
// on conn, in one round trip; src gives the table of each record not from
// the main one.
func (s *Store) applyAndCommit(ctx context.Context, conn *pgxpool.Conn, results []outbox.Result, src map[int64]int) error {
	type outcomes struct {
		ids  []int64
		errs []string
		at   []*time.Time
	}
	var pub [3][]int64
	var retry, fail [3]outcomes
	for _, x := range results {
		from := src[x.Seq]
		switch x.Outcome {
		case outbox.OutcomePublished:
			pub[from] = append(pub[from], x.Seq)
		case outbox.OutcomeRetry:
			at := x.RetryAt
			o := &retry[from]
			o.ids, o.errs, o.at = append(o.ids, x.Seq), append(o.errs, x.Err), append(o.at, &at)
		case outbox.OutcomeFailed:
			o := &fail[from]
			o.ids, o.errs, o.at = append(o.ids, x.Seq), append(o.errs, x.Err), append(o.at, nil)
		}
	}
	b := &pgx.Batch{}
	for from := range 3 {
		if len(pub[from]) > 0 {
			b.Queue(s.publish[from], pub[from])
		}
		if o := retry[from]; len(o.ids) > 0 {
			b.Queue(s.backoff[from], o.ids, o.errs, o.at)
		}
		if o := fail[from]; len(o.ids) > 0 {
			b.Queue(s.fail[from], o.ids, o.errs, o.at)
		}
	}
	updates := b.Len()
	b.Queue("COMMIT")
	// The outcome must be recorded even if ctx was cancelled while
	// publishing: the broker already has the messages.
	br := conn.SendBatch(context.WithoutCancel(ctx), b)
	op := "claim update"
	var err error
	for i := 0; i <= updates && err == nil; i++ {
		if i == updates {
			op = "claim commit"
		}
		var tag pgconn.CommandTag
		if tag, err = br.Exec(); err == nil && i == updates && tag.String() == "ROLLBACK" {
			err = pgx.ErrTxCommitRollback
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// Stats implements outbox.Store.
func (s *Store) Stats(ctx context.Context) (outbox.Stats, error) {
	var st outbox.Stats
	var oldest *time.Time
	if err := s.pool.QueryRow(ctx, s.stats).Scan(&st.Pending, &oldest, &st.Failed); err != nil {
		return st, s.wrap("stats", err)
	}
	if oldest != nil {
		st.OldestPending = *oldest
	}
	return st, nil
}

// Failed implements outbox.Store.
func (s *Store) Failed(ctx context.Context, limit int) ([]outbox.Record, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: pgxstore: limit %d", outbox.ErrInvalidConfig, limit)
	}
	rows, err := s.pool.Query(ctx, s.failed, limit)
	if err != nil {
		return nil, s.wrap("failed", err)
	}
	defer rows.Close()
	var out []outbox.Record
	for rows.Next() {
		var r outbox.Record
		var md string
		var state int16
		var due *time.Time
		if err := rows.Scan(&r.Seq, &r.EventID, &r.Topic, &r.Payload, &md, &r.OrderingKey, &r.DedupID, &r.CreatedAt, &state, &r.Attempts, &r.LastError, &due); err != nil {
			return nil, s.wrap("failed", err)
		}
		if due != nil {
			r.DeliverAt = due.UTC()
		}
		r.State = outbox.State(state)
		r.Metadata, _ = outbox.UnmarshalMetadata([]byte(md))
		out = append(out, r)
	}
	return out, s.wrap("failed", rows.Err())
}

// Retry implements outbox.Store.
func (s *Store) Retry(ctx context.Context, seqs ...int64) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, s.retry, seqs).Scan(&n); err != nil {
		return 0, s.wrap("retry", err)
	}
	if n > 0 && !s.cfg.DisableNotify {
		_, _ = s.pool.Exec(ctx, s.notify)
	}
	return n, nil
}

// Discard implements outbox.Store.
func (s *Store) Discard(ctx context.Context, seqs ...int64) (int64, error) {
	tag, err := s.pool.Exec(ctx, s.discard, seqs)
	if err != nil {
		return 0, s.wrap("discard", err)
	}
	if tag.RowsAffected() > 0 && !s.cfg.DisableNotify {
		_, _ = s.pool.Exec(ctx, s.notify) // records behind it may now go
	}
	return tag.RowsAffected(), nil
}

// Cleanup implements outbox.Store.
func (s *Store) Cleanup(ctx context.Context, before time.Time, limit int) (int64, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: pgxstore: cleanup limit %d", outbox.ErrInvalidConfig, limit)
	}
	tag, err := s.pool.Exec(ctx, s.cleanup, before, limit)
	if err != nil {
		return 0, s.wrap("cleanup", err)
	}
	return tag.RowsAffected(), nil
}

// Wakeup implements outbox.Store with LISTEN on a dedicated connection,
// reconnecting after errors. It fires once after each (re)connect, since
// notifications sent while disconnected are lost.
func (s *Store) Wakeup(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	fire := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	go func() {
		defer close(ch) // after the connection is released
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := s.listen(ctx, fire)
			if ctx.Err() != nil {
				return
			}
			s.cfg.Logger.Warn("pgxstore: LISTEN connection lost; relays poll meanwhile", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, 10*time.Second)
		}
	}()
	return ch
}

func (s *Store) listen(ctx context.Context, fire func()) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack() // never return a LISTENing connection to the pool
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	fire()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		fire()
	}
}
