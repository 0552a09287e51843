package sqlitestore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/outboxtest"
	"github.com/edaproject/eda/outbox/sqlitestore"
)

func openDB(t testing.TB) *sql.DB {
	t.Helper()
	dsn := "file:" + filepath.Join(t.TempDir(), "outbox.db") + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newStore(t *testing.T) (*sqlitestore.Store, outboxtest.Writer) {
	t.Helper()
	db := openDB(t)
	st, err := sqlitestore.New(db, sqlitestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	write := func(ctx context.Context, commit bool, enc outbox.Encoder, events ...eda.Event) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := st.Write(ctx, tx, enc, events...); err != nil {
			return err
		}
		if commit {
			return tx.Commit()
		}
		return tx.Rollback()
	}
	return st, write
}

func TestStore(t *testing.T) {
	outboxtest.Run(t, outboxtest.Harness{
		New: func(t *testing.T) (outbox.Store, outboxtest.Writer) { return newStore(t) },
	})
}

// A database at schema version 1 moves to version 2 (deliver_at); records
// written under version 1 are still published in key order, and delayed
// events can be written after it.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	st, err := sqlitestore.New(db, sqlitestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	v1 := st.MigrationSQL()[0]
	if _, err := db.ExecContext(ctx, v1.SQL+`;
		CREATE TABLE eda_outbox_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);
		INSERT INTO eda_outbox_migrations VALUES (1, 'create outbox table', 0)`); err != nil {
		t.Fatal(err)
	}
	app := outboxtest.NewApp(t)
	recs, err := outbox.Encode(ctx, app, outboxtest.Event{Key: "a", N: 1}, outboxtest.Event{Key: "a", N: 2}, outboxtest.Event{Key: "b", N: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs { // the insert of version 1's code
		md, err := outbox.MarshalMetadata(r.Metadata)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO eda_outbox (event_id, topic, payload, metadata, ordering_key, dedup_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
			r.EventID, r.Topic, r.Payload, string(md), r.OrderingKey, r.DedupID, time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var version int
	var indexes string
	if err := db.QueryRowContext(ctx, `SELECT (SELECT max(version) FROM eda_outbox_migrations),
		(SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'eda_outbox' AND name NOT LIKE 'sqlite_%' ORDER BY name))`).Scan(&version, &indexes); err != nil {
		t.Fatal(err)
	}
	if want := "eda_outbox_done,eda_outbox_failed,eda_outbox_key_blocked,eda_outbox_pending,eda_outbox_scheduled"; version != len(sqlitestore.Migrations) || indexes != want {
		t.Errorf("after Migrate: version %d, indexes %s; want %d, %s", version, indexes, len(sqlitestore.Migrations), want)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Write(ctx, tx, app, eda.After(100*time.Millisecond, outboxtest.Event{Key: "a", N: 3})); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	sink := outboxtest.NewSink()
	r, err := outbox.NewRelay(outbox.RelayConfig{Store: st, Publisher: sink, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	ds := sink.WaitFor(t, 10*time.Second, "the three events written under version 1 and the delayed one", func(ds []outboxtest.Delivery) bool { return len(ds) >= 4 })
	outboxtest.CheckOnceInOrder(t, ds, 4)
}
