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
	"github.com/jackc/pgx/v5/pgxpool"
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
		if err := pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+st.Table()+") + (SELECT count(*) FROM "+st.Table()+"_done) + (SELECT count(*) FROM "+st.Table()+"_held), (SELECT count(*) FROM "+st.Table()+"_held WHERE state = 2)").Scan(&rows, &failed); err != nil {
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
	for _, from := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("v%d", from), func(t *testing.T) { testMigrateFrom(t, from) })
	}
}

func testMigrateFrom(t *testing.T, from int) {
	ctx := context.Background()
	pool, st := storeAtVersion(t, from)
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
	if err := pool.QueryRow(ctx, `SELECT (SELECT max(version) FROM `+st.Table()+`_migrations),
		(SELECT array_agg(indexname ORDER BY indexname) FROM pg_indexes WHERE schemaname || '.' || tablename LIKE $1 || '%'),
		(SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c')`, st.Table()).Scan(&version, &indexes, &checks); err != nil {
		t.Fatal(err)
	}
	// The main table has its primary key only; the others one index each
	// besides theirs.
	want := []string{table + "_done_published", table + "_held_key", table + "_held_pkey", table + "_migrations_pkey", table + "_pkey",
		table + "_scheduled_due", table + "_scheduled_pkey"}
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

// A database at version 3 with records in every state moves to the
// latest version without losing any or their state: the published and
// discarded ones wait for the cleanup, the failed one is listed and holds
// its key back until retried, the one backing off holds its key back, the
// one whose backoff is over and the due delayed one are published, in key
// order.
func TestMigrateFromV3WithEveryState(t *testing.T) {
	ctx := context.Background()
	pool, st := storeAtVersion(t, 3)
	app := outboxtest.NewApp(t)
	// Each record with the state v3 gave it: a SET clause.
	rows := []struct {
		e   outboxtest.Event
		set string
	}{
		{outboxtest.Event{Key: "a", N: 1}, "state = 1, published_at = now() - interval '1 hour'"},
		{outboxtest.Event{Key: "b", N: 1}, "state = 3, published_at = now() - interval '1 hour', last_error = 'gone'"},
		{outboxtest.Event{Key: "c", N: 1}, "state = 2, attempts = 3, last_error = 'boom'"},
		{outboxtest.Event{Key: "c", N: 2}, ""},
		{outboxtest.Event{Key: "a", N: 2}, "attempts = 1, available_at = now() - interval '1 second', last_error = 'flaky'"},
		{outboxtest.Event{Key: "a", N: 3}, ""},
		{outboxtest.Event{Key: "d", N: 1}, "deliver_at = now() - interval '1 second'"},
		{outboxtest.Event{Key: "e", N: 1}, "attempts = 2, available_at = now() + interval '1 hour'"},
		{outboxtest.Event{Key: "e", N: 2}, ""},
		{outboxtest.Event{Key: "f", N: 1}, "deliver_at = now() + interval '1 hour'"},
	}
	for _, r := range rows {
		recs, err := outbox.Encode(ctx, app, r.e)
		if err != nil {
			t.Fatal(err)
		}
		md, err := outbox.MarshalMetadata(recs[0].Metadata)
		if err != nil {
			t.Fatal(err)
		}
		var id int64
		if err := pool.QueryRow(ctx, "INSERT INTO "+st.Table()+" (event_id, topic, payload, metadata, ordering_key, dedup_id) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
			recs[0].EventID, recs[0].Topic, recs[0].Payload, md, recs[0].OrderingKey, recs[0].DedupID).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if r.set != "" {
			if _, err := pool.Exec(ctx, "UPDATE "+st.Table()+" SET "+r.set+" WHERE id = $1", id); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	stats, err := st.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Pending != 7 || stats.Failed != 1 {
		t.Errorf("after Migrate: %d pending, %d failed; want 7 (c2, a2, a3, d1, e1, e2, f1), 1 (c1)", stats.Pending, stats.Failed)
	}
	failed, err := st.Failed(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || failed[0].OrderingKey != "c" || failed[0].LastError != "boom" || failed[0].Attempts != 3 || failed[0].State != outbox.Failed {
		t.Fatalf("Failed after Migrate = %+v; want c1 with its reason and attempts", failed)
	}
	sink := outboxtest.NewSink()
	runRelay(t, st, sink)
	got := func(ds []outboxtest.Delivery) []string {
		var out []string
		for _, d := range ds {
			e := d.Decode(t)
			out = append(out, fmt.Sprintf("%s%d", e.Key, e.N))
		}
		return out
	}
	ds := sink.WaitFor(t, 10*time.Second, "a2, a3 and d1", func(ds []outboxtest.Delivery) bool { return len(ds) >= 3 })
	if g := strings.Join(got(ds), " "); g != "a2 a3 d1" && g != "d1 a2 a3" && g != "a2 d1 a3" {
		t.Errorf("published after Migrate: %s; want a2 before a3, and d1", g)
	}
	if n, err := st.Retry(ctx, failed[0].Seq); err != nil || n != 1 {
		t.Fatalf("Retry(c1) = %d, %v", n, err)
	}
	ds = sink.WaitFor(t, 10*time.Second, "c1 and c2 after the retry", func(ds []outboxtest.Delivery) bool { return len(ds) >= 5 })
	if g := strings.Join(got(ds[3:]), " "); g != "c1 c2" {
		t.Errorf("published after Retry: %s; want c1 c2", g)
	}
	poll.Until(10*time.Second, func() bool { // the relay marks them after publishing
		stats, err = st.Stats(ctx)
		return err != nil || stats.Pending == 3
	})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Pending != 3 || stats.Failed != 0 {
		t.Errorf("at the end: %d pending, %d failed; want 3 (e1 backing off, e2 behind it, f1 scheduled), 0", stats.Pending, stats.Failed)
	}
	if len(sink.Deliveries()) != 5 {
		t.Errorf("%d deliveries, want 5: %v", len(sink.Deliveries()), got(sink.Deliveries()))
	}
	// a1 and b1 from before, and the five published since.
	if n, err := st.Cleanup(ctx, time.Now().Add(time.Minute), 100); err != nil || n != 7 {
		t.Errorf("Cleanup = %d, %v; want 7", n, err)
	}
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

// storeAtVersion returns a store on a fresh schema migrated to version
// from only, as a database the code of that version left.
func storeAtVersion(t *testing.T, from int) (*pgxpool.Pool, *pgxstore.Store) {
	t.Helper()
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
	return pool, st
}
