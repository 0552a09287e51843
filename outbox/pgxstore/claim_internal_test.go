package pgxstore

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/outbox/internal/pgtest"
)

// A claim reads the scheduled index up to the due records and the primary
// key in order, and stops after its limit, even
// when the statistics say the table is empty (analyzed after a drain) and
// the backlog is large (an outage): it must not read and sort the whole
// backlog on every claim.
func TestClaimPlanWithStaleStatistics(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, 2)
	s, err := New(pool, Config{Schema: pgtest.Schema(t, pool)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+s.table+", "+s.table+"_scheduled, "+s.table+"_held"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+s.table+` (event_id, topic, payload, metadata, ordering_key)
		SELECT g::text, 't', '\x00', '{}', 'key-' || (g % 500) FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	// Delayed events: 100 due, 20000 scheduled for later, which the claim
	// must not read.
	if _, err := pool.Exec(ctx, `INSERT INTO `+s.table+`_scheduled (event_id, topic, payload, metadata, ordering_key, deliver_at)
		SELECT 'd' || g, 't', '\x00', '{}', 'key-' || (g % 500), CASE WHEN g <= 100 THEN now() - interval '1 minute' ELSE now() + interval '1 day' END
		FROM generate_series(1, 20100) g`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: claimBegin})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var jit string
	if err := tx.QueryRow(ctx, "SHOW jit").Scan(&jit); err != nil || jit != "off" {
		t.Errorf("jit in the claim's transaction: %q, %v; want off (compiling the claim costs more than running it)", jit, err)
	}
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "+s.claim, 500, time.Now(), []int64{})
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	scheduled := regexp.MustCompile(`Index Scan using ` + s.cfg.Table + `_scheduled_due on ` + s.cfg.Table + `_scheduled o(_\d+)? \(actual rows=100 loops=1\)`)
	pending := regexp.MustCompile(`Index Scan using ` + s.cfg.Table + `_pkey on ` + s.cfg.Table + ` o(_\d+)? \(actual rows=400 loops=1\)`)
	if !scheduled.MatchString(plan) || !pending.MatchString(plan) || strings.Contains(plan, "Bitmap") || strings.Contains(plan, "Seq Scan") {
		t.Errorf("the claim does not walk the scheduled index up to the due records, then the primary key up to its limit; want %q and %q in:\n%s", scheduled, pending, plan)
	}
	// The search for older records of the claimed keys that the claim does
	// not hold walks the primary key only up to the newest claimed id:
	// the 399 older claimed ones, not the 19600 behind them.
	for _, want := range []string{
		"Index Scan using " + s.cfg.Table + "_pkey on " + s.cfg.Table + " (actual rows=0 loops=1)",
		"Index Cond: (id < $",
		"Rows Removed by Filter: 399",
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("the blocker search is not a bounded walk of the primary key; want %q in:\n%s", want, plan)
		}
	}
}
