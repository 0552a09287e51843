package pgxstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/internal/pgtest"
	"github.com/edaproject/eda/outbox/outboxtest"
	"github.com/edaproject/eda/outbox/pgxstore"
)

func TestDeletePublished(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, 6)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: pgtest.Schema(t, pool), DeletePublished: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	app := outboxtest.NewApp(t)
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return st.Write(ctx, tx, app, outboxtest.Event{Key: "a", N: 1}, outboxtest.Event{Key: "a", N: 2, Poison: true})
	}); err != nil {
		t.Fatal(err)
	}
	sink := outboxtest.NewSink()
	sink.SetReject(true)
	runRelay(t, st, sink)
	sink.WaitFor(t, 10*time.Second, "the healthy event", func(ds []outboxtest.Delivery) bool { return len(ds) == 1 })
	var rows, failed int
	if !poll.Until(10*time.Second, func() bool {
		if err := pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE state = 2) FROM "+st.Table()).Scan(&rows, &failed); err != nil {
			t.Fatal(err)
		}
		return rows == 1 && failed == 1 // the published row is gone, the failed one kept
	}) {
		t.Fatalf("%d rows, %d failed; want only the failed row left", rows, failed)
	}
}

func TestNotMigrated(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, 2)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: pgtest.Schema(t, pool)})
	if err != nil {
		t.Fatal(err)
	}
	app := outboxtest.NewApp(t)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return st.Write(ctx, tx, app, outboxtest.Event{N: 1}) })
	if !errors.Is(err, outbox.ErrNotMigrated) {
		t.Errorf("Write before Migrate = %v, want ErrNotMigrated", err)
	}
	if _, err := st.Stats(ctx); !errors.Is(err, outbox.ErrNotMigrated) {
		t.Errorf("Stats before Migrate = %v, want ErrNotMigrated", err)
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := pgxstore.New(nil, pgxstore.Config{Schema: "Bad-Schema", Table: "x; DROP"})
	if !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("New(bad) = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{"nil pool", "Schema", "Table"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestWriteSQL(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	db, err := sql.Open("pgx", pgtest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	app := outboxtest.NewApp(t)
	for _, commit := range []bool{false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.WriteSQL(ctx, tx, app, outboxtest.Event{Key: "s", N: 1}, outboxtest.Event{Key: "s", N: 2}); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	stats, err := st.Stats(ctx)
	if err != nil || stats.Pending != 2 {
		t.Fatalf("stats = %+v, %v; want the 2 committed events pending, none of the rolled-back ones", stats, err)
	}
	var got []outbox.Record
	if _, err := st.Claim(ctx, 10, func(_ context.Context, b []outbox.Record) []outbox.Result { got = b; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].OrderingKey != "s" || got[0].Metadata.Get("ce_type") != "outboxtest.event" {
		t.Fatalf("claimed %+v", got)
	}
	if err := st.WriteSQL(ctx, nil, app, outboxtest.Event{}); !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Errorf("WriteSQL(nil tx) = %v, want ErrInvalidConfig", err)
	}
}

// A database at an older schema version moves to the latest version, and
// the records written under it (by the code of that version: no
// deliver_at) are still published, in key order; delayed events can be
// written after it.
func TestMigrateFromOlderVersions(t *testing.T) {
	for _, from := range []int{1, 2} {
		t.Run(fmt.Sprintf("v%d", from), func(t *testing.T) { testMigrateFrom(t, from) })
	}
}

func testMigrateFrom(t *testing.T, from int) {
	ctx := context.Background()
	pool := pgtest.Pool(t, 6)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: pgtest.Schema(t, pool)})
	if err != nil {
		t.Fatal(err)
	}
	mt := st.Table() + "_migrations"
	if _, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+st.Table()[:strings.Index(st.Table(), ".")]+
		"; CREATE TABLE "+mt+" (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	for _, m := range st.MigrationSQL()[:from] {
		if _, err := pool.Exec(ctx, m.SQL); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "INSERT INTO "+mt+" (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
	app := outboxtest.NewApp(t)
	recs, err := outbox.Encode(ctx, app, outboxtest.Event{Key: "a", N: 1}, outboxtest.Event{Key: "a", N: 2}, outboxtest.Event{Key: "b", N: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs { // the insert of the code of that version
		md, err := outbox.MarshalMetadata(r.Metadata)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, "INSERT INTO "+st.Table()+" (event_id, topic, payload, metadata, ordering_key, dedup_id) VALUES ($1, $2, $3, $4, $5, $6)",
			r.EventID, r.Topic, r.Payload, md, r.OrderingKey, r.DedupID); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var version int
	var indexes []string
	var checks int
	table := st.Table()[strings.Index(st.Table(), ".")+1:]
	if err := pool.QueryRow(ctx, `SELECT (SELECT max(version) FROM `+mt+`),
		(SELECT array_agg(indexname ORDER BY indexname) FROM pg_indexes WHERE schemaname || '.' || tablename = $1),
		(SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c')`, st.Table()).Scan(&version, &indexes, &checks); err != nil {
		t.Fatal(err)
	}
	want := []string{table + "_done", table + "_key_blocked", table + "_pending", table + "_pkey", table + "_scheduled"}
	if version != len(pgxstore.Migrations) || strings.Join(indexes, ",") != strings.Join(want, ",") || checks != 0 {
		t.Errorf("after Migrate: version %d, indexes %v, %d check constraints; want version %d, indexes %v, none",
			version, indexes, checks, len(pgxstore.Migrations), want)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return st.Write(ctx, tx, app, eda.After(100*time.Millisecond, outboxtest.Event{Key: "a", N: 3}))
	}); err != nil {
		t.Fatal(err)
	}
	sink := outboxtest.NewSink()
	runRelay(t, st, sink)
	ds := sink.WaitFor(t, 10*time.Second, "the three events written before the migration and the delayed one", func(ds []outboxtest.Delivery) bool { return len(ds) >= 4 })
	outboxtest.CheckOnceInOrder(t, ds, 4)
}

// runRelay runs a relay from st to sink until the test ends.
func runRelay(t *testing.T, st *pgxstore.Store, sink *outboxtest.Sink) {
	t.Helper()
	r, err := outbox.NewRelay(outbox.RelayConfig{Store: st, Publisher: sink, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// Partitions split the keyed records between them, each key whole in one
// partition, and every partition also takes records without a key.
func TestClaimPartition(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, 4)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: pgtest.Schema(t, pool)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	app := outboxtest.NewApp(t)
	var evs []eda.Event
	for i := range 40 {
		evs = append(evs, outboxtest.Event{Key: fmt.Sprintf("k%d", i%20), N: i / 20})
	}
	evs = append(evs, outboxtest.Event{N: 100})
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return st.Write(ctx, tx, app, evs...) }); err != nil {
		t.Fatal(err)
	}
	const parts = 3
	owner := map[string]int{}
	for i := range parts {
		// Look without settling anything: every partition sees the unkeyed
		// record, and its keys' records, oldest first.
		var got []outbox.Record
		if _, err := st.ClaimPartition(ctx, outbox.Partition{Index: i, Of: parts}, 100, func(_ context.Context, b []outbox.Record) []outbox.Result {
			got = b
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		unkeyed := 0
		for _, r := range got {
			if r.OrderingKey == "" {
				unkeyed++
				continue
			}
			if o, ok := owner[r.OrderingKey]; ok && o != i {
				t.Errorf("key %s in partitions %d and %d", r.OrderingKey, o, i)
			}
			owner[r.OrderingKey] = i
		}
		if unkeyed != 1 {
			t.Errorf("partition %d took %d records without a key, want 1", i, unkeyed)
		}
	}
	if len(owner) != 20 {
		t.Errorf("the partitions hold %d of the 20 keys", len(owner))
	}
	counts := make([]int, parts)
	for _, p := range owner {
		counts[p]++
	}
	for i, c := range counts {
		if c == 0 {
			t.Errorf("partition %d holds no key (%v)", i, counts)
		}
	}
	for _, p := range []outbox.Partition{{Index: 0, Of: 0}, {Index: 3, Of: 3}, {Index: -1, Of: 2}} {
		if _, err := st.ClaimPartition(ctx, p, 10, nil); !errors.Is(err, outbox.ErrInvalidConfig) {
			t.Errorf("ClaimPartition(%+v) = %v, want ErrInvalidConfig", p, err)
		}
	}
}

// Retry and Discard notify the relays: a retried record is published at
// once, not at the relay's next poll (regression: the notify statement was
// never set, so they sent nothing).
func TestRetryWakesRelay(t *testing.T) {
	ctx := context.Background()
	st, write := newStore(t)
	app := outboxtest.NewApp(t)
	sink := outboxtest.NewSink()
	sink.SetReject(true)
	const pollEvery = time.Minute
	r, err := outbox.NewRelay(outbox.RelayConfig{Store: st, Publisher: sink, PollInterval: pollEvery})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := write(ctx, true, app, outboxtest.Event{Key: "k", N: 1, Poison: true}); err != nil {
		t.Fatal(err)
	}
	var failed []outbox.Record
	if !poll.Until(10*time.Second, func() bool {
		failed, err = st.Failed(ctx, 10)
		return err == nil && len(failed) == 1
	}) {
		t.Fatalf("record not failed: %v %v", failed, err)
	}
	sink.SetReject(false)
	// The relay now sleeps for its whole poll interval: only a
	// notification wakes it.
	start := time.Now()
	if n, err := st.Retry(ctx, failed[0].Seq); err != nil || n != 1 {
		t.Fatalf("Retry = %d, %v", n, err)
	}
	sink.WaitFor(t, pollEvery/4, "the retried record", func(ds []outboxtest.Delivery) bool { return len(ds) == 1 })
	t.Logf("retried record published %s after Retry (poll interval %s)", time.Since(start).Round(time.Millisecond), pollEvery)
}
