package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
	"github.com/edaproject/eda/outbox/sqlitestore"
)

// fillOutbox writes three records and runs one relay pass over them: the
// first fails for good, the second is published, the third stays pending.
// It returns the failed record's seq.
func fillOutbox(t *testing.T, ctx context.Context, store outbox.Store, write func(...outbox.Record) error) int64 {
	t.Helper()
	var recs []outbox.Record
	for _, id := range []string{"ev-a", "ev-b", "ev-c"} {
		msg := message.NewMessage(id, []byte(`{"order_id":"`+id+`"}`))
		msg.Metadata.Set("ce_id", id)
		msg.Metadata.Set("ce_type", "orders.OrderCreated")
		r, err := outbox.NewRecord("orders", msg)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if err := write(recs...); err != nil {
		t.Fatal(err)
	}
	var failed int64
	_, err := store.Claim(ctx, 10, func(_ context.Context, batch []outbox.Record) []outbox.Result {
		if len(batch) != 3 {
			t.Errorf("claimed %d records, want 3", len(batch))
			return nil
		}
		failed = batch[0].Seq
		return []outbox.Result{
			{Seq: batch[0].Seq, Outcome: outbox.OutcomeFailed, Err: "topic orders does not exist (AutoCreate is off)"},
			{Seq: batch[1].Seq, Outcome: outbox.OutcomePublished},
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return failed
}

type statusJSON struct {
	Pending       int64   `json:"pending"`
	OldestPending string  `json:"oldestPending"`
	LagSeconds    float64 `json:"lagSeconds"`
	Failed        int64   `json:"failed"`
}

func checkOutbox(t *testing.T, db string, extra []string, failedSeq int64) {
	args := func(a ...string) []string { return append(append(a, "-db", db), extra...) }
	status := func() statusJSON {
		t.Helper()
		var st statusJSON
		out := mustRun(t, args("outbox", "status", "-o", "json")...)
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		return st
	}
	if st := status(); st.Pending != 1 || st.Failed != 1 || st.OldestPending == "" || st.LagSeconds < 0 {
		t.Fatalf("status before retry: %+v, want 1 pending, 1 failed", st)
	}
	out := mustRun(t, args("outbox", "status")...)
	if !strings.Contains(out, "PENDING") || !strings.Contains(out, "ago") {
		t.Errorf("status table:\n%s", out)
	}
	seq := strconv.FormatInt(failedSeq, 10)
	out = mustRun(t, args("outbox", "failed")...)
	for _, want := range []string{seq, "ev-a", "orders.OrderCreated", "topic orders does not exist"} {
		if !strings.Contains(out, want) {
			t.Errorf("failed does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ev-b") || strings.Contains(out, "ev-c") {
		t.Errorf("failed lists records that did not fail:\n%s", out)
	}
	var recs []struct {
		Seq   int64  `json:"seq"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, args("outbox", "failed", "-o", "json")...)), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Seq != failedSeq || recs[0].Error == "" {
		t.Errorf("failed -o json: %+v", recs)
	}

	// A seq that is not failed: nothing happens, exit 1.
	if _, errs, code := edactl(t, args("outbox", "retry", "999999")...); code != exitError || !strings.Contains(errs, "not failed") {
		t.Errorf("retry of a record that is not failed: exit %d, %s", code, errs)
	}
	if out := mustRun(t, args("outbox", "retry", seq)...); !strings.Contains(out, "retried 1 record(s)") {
		t.Errorf("retry:\n%s", out)
	}
	if st := status(); st.Pending != 2 || st.Failed != 0 {
		t.Errorf("status after retry: %+v, want 2 pending, 0 failed", st)
	}
	if out := mustRun(t, args("outbox", "failed")...); !strings.Contains(out, "no failed records") {
		t.Errorf("failed after retry:\n%s", out)
	}
}

func TestOutboxPostgres(t *testing.T) {
	t.Parallel()
	pool, schema := pgSchema(t)
	ctx := testContext(t)
	store, err := pgxstore.New(pool, pgxstore.Config{Schema: schema, Table: "events_outbox"})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	seq := fillOutbox(t, ctx, store, func(recs ...outbox.Record) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return store.WriteRecords(ctx, tx, recs...) })
	})
	extra := []string{"-schema", schema, "-table", "events_outbox"}
	checkOutbox(t, testDSN(), extra, seq)

	// Discard every failed record.
	fail := func(_ context.Context, batch []outbox.Record) []outbox.Result {
		res := make([]outbox.Result, len(batch))
		for i, r := range batch {
			res[i] = outbox.Result{Seq: r.Seq, Outcome: outbox.OutcomeFailed, Err: "still broken"}
		}
		return res
	}
	if _, err := store.Claim(ctx, 10, fail); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, append([]string{"outbox", "discard", "-all", "-db", testDSN(), "-o", "json"}, extra...)...)
	if !strings.Contains(out, `"discarded": 2`) {
		t.Errorf("discard -all:\n%s", out)
	}
	if st, _ := store.Stats(ctx); st.Failed != 0 || st.Pending != 0 {
		t.Errorf("after discard: %+v", st)
	}

	// The wrong table: a typed, clear error.
	_, errs, code := edactl(t, "outbox", "status", "-db", testDSN(), "-schema", schema, "-table", "nope")
	if code != exitError || !strings.Contains(errs, "not migrated") {
		t.Errorf("status on a missing table: exit %d, %s", code, errs)
	}
}

func TestOutboxSQLite(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := sqlitestore.New(db, sqlitestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	seq := fillOutbox(t, ctx, store, func(recs ...outbox.Record) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := store.WriteRecords(ctx, tx, recs...); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	})
	checkOutbox(t, path, nil, seq)
}
