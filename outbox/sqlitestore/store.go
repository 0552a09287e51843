package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"

	"github.com/edaproject/eda/internal/sqlident"
)

// Defaults of Config.
const (
	DefaultTable          = "eda_outbox"
	DefaultWakeupInterval = 10 * time.Millisecond
)

// Config configures a Store.
type Config struct {
	// Table name, a lower-case identifier. Default DefaultTable.
	Table string
	// WakeupInterval is how often the store checks (PRAGMA data_version, a
	// cheap in-process read) whether another connection committed, to wake
	// the relay. Default DefaultWakeupInterval.
	WakeupInterval time.Duration
	// Logger receives the store's logs. Nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Table != "" && !sqlident.Valid(c.Table, 40) {
		errs = append(errs, fmt.Errorf("%w: sqlitestore: Table %q is not a lower-case identifier of at most 40 characters", outbox.ErrInvalidConfig, c.Table))
	}
	if c.WakeupInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: sqlitestore: negative WakeupInterval %s", outbox.ErrInvalidConfig, c.WakeupInterval))
	}
	return errors.Join(errs...)
}

// Store is the SQLite outbox (modernc.org/sqlite, pure Go). Claims are
// coordinated inside the Store value: any number of relays in this process
// can share one Store, with the same guarantees as the Postgres store
// (disjoint claims, per-key order). Use one Store per database file; relays
// in other processes on the same file are not coordinated.
//
// Open the database as a file (not ":memory:", whose connections do not
// share data) in WAL mode with a busy timeout, e.g.
// "file:app.db?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)".
type Store struct {
	db  *sql.DB
	cfg Config
	t   string

	mu       sync.Mutex
	inflight map[int64]string // claimed records: the key they hold in keys, or ""
	keys     map[string]int   // ordering keys held by running claims

	insert, claim, claimDue, stats, failed, retry, discard, cleanup string
}

var _ outbox.DueStore = (*Store)(nil)

// New returns a store on db. Call Migrate before writing.
func New(db *sql.DB, cfg Config) (*Store, error) {
	var errs []error
	if db == nil {
		errs = append(errs, fmt.Errorf("%w: sqlitestore: nil db", outbox.ErrInvalidConfig))
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.WakeupInterval == 0 {
		cfg.WakeupInterval = DefaultWakeupInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := cfg.Table
	s := &Store{db: db, cfg: cfg, t: t, inflight: map[int64]string{}, keys: map[string]int{}}
	s.insert = "INSERT INTO " + t + " (event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, deliver_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
	// Records with a due time are outside their key's order (see
	// outbox.Record.DeliverAt): the claim of those due reads the scheduled
	// index in due order; the other records the pending index.
	s.claim = fmt.Sprintf(`SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, attempts, NULL
FROM %[1]s o
WHERE state = 0 AND deliver_at IS NULL AND (attempts = 0 OR available_at <= ?1)
  AND (ordering_key = '' OR NOT EXISTS (
	SELECT 1 FROM %[1]s b
	WHERE b.ordering_key = o.ordering_key AND b.id < o.id AND b.deliver_at IS NULL
	  AND (b.state = 2 OR (b.state = 0 AND b.attempts > 0 AND b.available_at > ?1))))
ORDER BY id LIMIT ?2`, t)
	s.claimDue = fmt.Sprintf(`SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, attempts, deliver_at
FROM %[1]s
WHERE state = 0 AND deliver_at IS NOT NULL AND deliver_at <= ?3 AND (attempts = 0 OR available_at <= ?1)
ORDER BY deliver_at, id LIMIT ?2`, t)
	s.stats = fmt.Sprintf(`SELECT
	(SELECT count(*) FROM %[1]s WHERE state = 0 AND deliver_at IS NULL) + (SELECT count(*) FROM %[1]s WHERE state = 0 AND deliver_at IS NOT NULL),
	(SELECT created_at FROM %[1]s WHERE state = 0 AND deliver_at IS NULL ORDER BY id LIMIT 1),
	(SELECT deliver_at FROM %[1]s WHERE state = 0 AND deliver_at IS NOT NULL AND deliver_at <= ?1 ORDER BY deliver_at, id LIMIT 1),
	(SELECT count(*) FROM %[1]s WHERE state = 2)`, t)
	s.failed = "SELECT id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, state, attempts, last_error, deliver_at FROM " + t + " WHERE state = 2 ORDER BY id LIMIT ?"
	s.retry = "UPDATE " + t + " SET state = 0, attempts = 0, available_at = NULL WHERE id = ? AND state = 2"
	s.discard = "UPDATE " + t + " SET state = 3, published_at = ? WHERE id = ? AND state = 2"
	s.cleanup = fmt.Sprintf("DELETE FROM %[1]s WHERE id IN (SELECT id FROM %[1]s WHERE state IN (1, 3) AND published_at < ? LIMIT ?)", t)
	return s, nil
}

// Migration is one versioned step of the schema; {{table}} is the table
// name.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations is the SQLite outbox schema, in order. Times are Unix
// nanoseconds. The partial indexes mirror pgxstore's: claiming reads only
// pending rows, however many published rows the table holds. Version 2
// adds deliver_at, the due time of delayed events (NULL for the others),
// and splits the pending index into pending (no due time, by id) and
// scheduled (by due time), so that records scheduled for later are not
// read until due.
var Migrations = []Migration{{
	Version: 1,
	Name:    "create outbox table",
	SQL: `
CREATE TABLE {{table}} (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	event_id     TEXT    NOT NULL,
	topic        TEXT    NOT NULL,
	payload      BLOB    NOT NULL,
	metadata     TEXT    NOT NULL,
	ordering_key TEXT    NOT NULL DEFAULT '',
	dedup_id     TEXT    NOT NULL DEFAULT '',
	created_at   INTEGER NOT NULL,
	state        INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),
	attempts     INTEGER NOT NULL DEFAULT 0,
	available_at INTEGER,
	last_error   TEXT    NOT NULL DEFAULT '',
	published_at INTEGER
);
CREATE INDEX {{table}}_pending ON {{table}} (id) WHERE state = 0;
CREATE INDEX {{table}}_key_blocked ON {{table}} (ordering_key, id) WHERE state = 2 OR (state = 0 AND attempts > 0);
CREATE INDEX {{table}}_done ON {{table}} (published_at) WHERE state IN (1, 3);
CREATE INDEX {{table}}_failed ON {{table}} (id) WHERE state = 2;
`,
}, {
	Version: 2,
	Name:    "due time of delayed events",
	SQL: `
ALTER TABLE {{table}} ADD COLUMN deliver_at INTEGER;
DROP INDEX IF EXISTS {{table}}_pending;
CREATE INDEX {{table}}_pending ON {{table}} (id) WHERE state = 0 AND deliver_at IS NULL;
CREATE INDEX {{table}}_scheduled ON {{table}} (deliver_at, id) WHERE state = 0 AND deliver_at IS NOT NULL;
`,
}}

// MigrationSQL returns the migrations rendered for this store's table.
func (s *Store) MigrationSQL() []Migration {
	out := make([]Migration, len(Migrations))
	for i, m := range Migrations {
		m.SQL = strings.ReplaceAll(m.SQL, "{{table}}", s.t)
		out[i] = m
	}
	return out
}

// Migrate brings the schema to the latest version in one transaction,
// recording applied versions in <table>_migrations.
func (s *Store) Migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: migrate: %w", err)
	}
	defer tx.Rollback()
	mt := s.t + "_migrations"
	if _, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+mt+" (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"); err != nil {
		return fmt.Errorf("sqlitestore: migrate: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM "+mt).Scan(&current); err != nil {
		return fmt.Errorf("sqlitestore: migrate: %w", err)
	}
	for _, m := range s.MigrationSQL() {
		if m.Version <= current {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("sqlitestore: migration %d (%s): %w", m.Version, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+mt+" (version, name, applied_at) VALUES (?, ?, ?)", m.Version, m.Name, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("sqlitestore: migrate: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: migrate: %w", err)
	}
	return nil
}

// Execer is what Write needs of a transaction: *sql.Tx.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Write encodes events with enc (usually the *eda.App) and stores them in
// tx, a transaction on the store's database. They are published once tx
// commits, never if it rolls back.
func (s *Store) Write(ctx context.Context, tx Execer, enc outbox.Encoder, events ...eda.Event) error {
	if tx == nil {
		return fmt.Errorf("%w: sqlitestore: nil transaction", outbox.ErrInvalidConfig)
	}
	recs, err := outbox.Encode(ctx, enc, events...)
	if err != nil {
		return err
	}
	return s.WriteRecords(ctx, tx, recs...)
}

// WriteRecords stores records (see outbox.NewRecord) in tx.
func (s *Store) WriteRecords(ctx context.Context, tx Execer, recs ...outbox.Record) error {
	if tx == nil {
		return fmt.Errorf("%w: sqlitestore: nil transaction", outbox.ErrInvalidConfig)
	}
	now := time.Now().UnixNano()
	for _, r := range recs {
		md, err := outbox.MarshalMetadata(r.Metadata)
		if err != nil {
			return fmt.Errorf("%w: %w", outbox.ErrInvalidEvent, err)
		}
		payload := r.Payload
		if payload == nil {
			payload = []byte{}
		}
		var due any
		if !r.DeliverAt.IsZero() {
			due = r.DeliverAt.UnixNano()
		}
		if _, err := tx.ExecContext(ctx, s.insert, r.EventID, r.Topic, payload, string(md), r.OrderingKey, r.DedupID, now, due); err != nil {
			return s.wrap("write", err)
		}
	}
	return nil
}

func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "no such table") {
		return fmt.Errorf("%w: sqlitestore: %s on %s (run Migrate): %w", outbox.ErrNotMigrated, op, s.t, err)
	}
	return fmt.Errorf("sqlitestore: %s on %s: %w", op, s.t, err)
}

// Claim implements outbox.Store. Records are held in the Store's in-flight
// set while publish runs; if the process dies they were never marked and
// are claimed again on restart.
func (s *Store) Claim(ctx context.Context, limit int, publish func(context.Context, []outbox.Record) []outbox.Result) (int, error) {
	return s.ClaimDue(ctx, outbox.ClaimRequest{Limit: limit}, publish)
}

// ClaimDue implements outbox.DueStore. The store is not partitioned: a
// request's Partition must be the zero value.
func (s *Store) ClaimDue(ctx context.Context, req outbox.ClaimRequest, publish func(context.Context, []outbox.Record) []outbox.Result) (int, error) {
	limit := req.Limit
	if limit <= 0 {
		return 0, fmt.Errorf("%w: sqlitestore: claim limit %d", outbox.ErrInvalidConfig, limit)
	}
	if req.Partition != (outbox.Partition{}) {
		return 0, fmt.Errorf("%w: sqlitestore: partitioned claim (%d of %d) is not supported", outbox.ErrInvalidConfig, req.Partition.Index, req.Partition.Of)
	}
	due := req.DueBy
	if due.IsZero() {
		due = time.Now()
	}
	batch, held, err := s.take(ctx, limit, due, req.InFlight)
	if err != nil || len(batch) == 0 {
		return held, err
	}
	defer s.release(batch)
	var results []outbox.Result
	good := make([]outbox.Record, 0, len(batch))
	for _, r := range batch {
		if r.Metadata == nil {
			results = append(results, outbox.Result{Seq: r.Seq, Outcome: outbox.OutcomeFailed, Err: outbox.ErrCorruptRecord.Error()})
			continue
		}
		good = append(good, r)
	}
	if len(good) > 0 {
		results = append(publish(ctx, good), results...)
	}
	if err := s.apply(context.WithoutCancel(ctx), results); err != nil {
		return 0, err
	}
	return len(batch) + held, nil
}

// take returns the records to publish and how many it held back behind
// records of their keys claimed by another Claim (not counting mine, the
// caller's own: ClaimRequest.InFlight).
// Records due by due (with a due time) come first; they are outside their
// key's order, so they neither wait for a key nor hold it.
func (s *Store) take(ctx context.Context, limit int, due time.Time, mine []int64) ([]outbox.Record, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	own := map[string]int{} // keys held by the caller's own claims
	for _, seq := range mine {
		if k := s.inflight[seq]; k != "" {
			own[k]++
		}
	}
	now := time.Now().UnixNano()
	var batch []outbox.Record
	held := 0
	blocked := map[string]bool{}
	scan := func(q string, args ...any) error {
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return s.wrap("claim", err)
		}
		defer rows.Close()
		for rows.Next() && len(batch) < limit {
			var r outbox.Record
			var md string
			var created int64
			var deliverAt sql.NullInt64
			if err := rows.Scan(&r.Seq, &r.EventID, &r.Topic, &r.Payload, &md, &r.OrderingKey, &r.DedupID, &created, &r.Attempts, &deliverAt); err != nil {
				return s.wrap("claim", err)
			}
			if _, ok := s.inflight[r.Seq]; ok {
				continue
			}
			if deliverAt.Valid {
				r.DeliverAt = time.Unix(0, deliverAt.Int64).UTC()
			} else if k := r.OrderingKey; k != "" && (s.keys[k] > own[k] || blocked[k]) {
				// An older record of this key is held by another claim (or
				// was skipped above): this one waits.
				blocked[k] = true
				held++
				continue
			}
			r.CreatedAt = time.Unix(0, created).UTC()
			r.Metadata, _ = outbox.UnmarshalMetadata([]byte(md))
			batch = append(batch, r)
		}
		return s.wrap("claim", rows.Err())
	}
	if err := scan(s.claimDue, now, limit+len(s.inflight), due.UnixNano()); err != nil {
		return nil, 0, err
	}
	if len(batch) < limit {
		if err := scan(s.claim, now, limit+len(s.inflight)); err != nil {
			return nil, 0, err
		}
	}
	for _, r := range batch {
		s.inflight[r.Seq] = ""
		if r.OrderingKey != "" && r.DeliverAt.IsZero() {
			s.inflight[r.Seq] = r.OrderingKey
			s.keys[r.OrderingKey]++
		}
	}
	return batch, held, nil
}

func (s *Store) release(batch []outbox.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range batch {
		delete(s.inflight, r.Seq)
		if k := r.OrderingKey; k != "" && r.DeliverAt.IsZero() {
			if s.keys[k]--; s.keys[k] <= 0 {
				delete(s.keys, k)
			}
		}
	}
}

func (s *Store) apply(ctx context.Context, results []outbox.Result) error {
	if len(results) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap("claim update", err)
	}
	defer tx.Rollback()
	now := time.Now().UnixNano()
	for _, x := range results {
		var err error
		switch x.Outcome {
		case outbox.OutcomePublished:
			_, err = tx.ExecContext(ctx, "UPDATE "+s.t+" SET state = 1, published_at = ? WHERE id = ?", now, x.Seq)
		case outbox.OutcomeRetry:
			_, err = tx.ExecContext(ctx, "UPDATE "+s.t+" SET attempts = attempts + 1, last_error = ?, available_at = ? WHERE id = ?", x.Err, x.RetryAt.UnixNano(), x.Seq)
		case outbox.OutcomeFailed:
			_, err = tx.ExecContext(ctx, "UPDATE "+s.t+" SET state = 2, attempts = attempts + 1, last_error = ? WHERE id = ?", x.Err, x.Seq)
		}
		if err != nil {
			return s.wrap("claim update", err)
		}
	}
	return s.wrap("claim commit", tx.Commit())
}

// Stats implements outbox.Store.
func (s *Store) Stats(ctx context.Context) (outbox.Stats, error) {
	var st outbox.Stats
	var oldest, due sql.NullInt64
	if err := s.db.QueryRowContext(ctx, s.stats, time.Now().UnixNano()).Scan(&st.Pending, &oldest, &due, &st.Failed); err != nil {
		return st, s.wrap("stats", err)
	}
	// The oldest pending is the oldest record without a due time, or the
	// earliest due time passed.
	if due.Valid && (!oldest.Valid || due.Int64 < oldest.Int64) {
		oldest = due
	}
	if oldest.Valid {
		st.OldestPending = time.Unix(0, oldest.Int64).UTC()
	}
	return st, nil
}

// Failed implements outbox.Store.
func (s *Store) Failed(ctx context.Context, limit int) ([]outbox.Record, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: sqlitestore: limit %d", outbox.ErrInvalidConfig, limit)
	}
	rows, err := s.db.QueryContext(ctx, s.failed, limit)
	if err != nil {
		return nil, s.wrap("failed", err)
	}
	defer rows.Close()
	var out []outbox.Record
	for rows.Next() {
		var r outbox.Record
		var md string
		var created int64
		var deliverAt sql.NullInt64
		if err := rows.Scan(&r.Seq, &r.EventID, &r.Topic, &r.Payload, &md, &r.OrderingKey, &r.DedupID, &created, &r.State, &r.Attempts, &r.LastError, &deliverAt); err != nil {
			return nil, s.wrap("failed", err)
		}
		if deliverAt.Valid {
			r.DeliverAt = time.Unix(0, deliverAt.Int64).UTC()
		}
		r.CreatedAt = time.Unix(0, created).UTC()
		r.Metadata, _ = outbox.UnmarshalMetadata([]byte(md))
		out = append(out, r)
	}
	return out, s.wrap("failed", rows.Err())
}

func (s *Store) each(ctx context.Context, op string, seqs []int64, q func(int64) (string, []any)) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.wrap(op, err)
	}
	defer tx.Rollback()
	var n int64
	for _, seq := range seqs {
		query, args := q(seq)
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return 0, s.wrap(op, err)
		}
		k, _ := res.RowsAffected()
		n += k
	}
	return n, s.wrap(op, tx.Commit())
}

// Retry implements outbox.Store.
func (s *Store) Retry(ctx context.Context, seqs ...int64) (int64, error) {
	return s.each(ctx, "retry", seqs, func(seq int64) (string, []any) { return s.retry, []any{seq} })
}

// Discard implements outbox.Store.
func (s *Store) Discard(ctx context.Context, seqs ...int64) (int64, error) {
	now := time.Now().UnixNano()
	return s.each(ctx, "discard", seqs, func(seq int64) (string, []any) { return s.discard, []any{now, seq} })
}

// Cleanup implements outbox.Store.
func (s *Store) Cleanup(ctx context.Context, before time.Time, limit int) (int64, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: sqlitestore: cleanup limit %d", outbox.ErrInvalidConfig, limit)
	}
	res, err := s.db.ExecContext(ctx, s.cleanup, before.UnixNano(), limit)
	if err != nil {
		return 0, s.wrap("cleanup", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// Wakeup implements outbox.Store: it fires when PRAGMA data_version, read
// every WakeupInterval on a dedicated connection, shows that another
// connection committed.
func (s *Store) Wakeup(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	go func() {
		defer close(ch) // after the connection is released
		conn, err := s.db.Conn(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logger.Warn("sqlitestore: no wake-up connection; the relay polls", "err", err)
			}
			return
		}
		defer conn.Close()
		t := time.NewTicker(s.cfg.WakeupInterval)
		defer t.Stop()
		var last int64 = -1
		for {
			var v int64
			if err := conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
				if ctx.Err() == nil {
					s.cfg.Logger.Warn("sqlitestore: wake-up check failed; the relay polls", "err", err)
				}
				return
			}
			if v != last {
				last = v
				select {
				case ch <- struct{}{}:
				default:
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ch
}
