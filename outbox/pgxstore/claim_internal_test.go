package pgxstore

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/outbox/internal/pgtest"
)

// A claim reads the pending index in order and stops after its limit, even
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
	if _, err := pool.Exec(ctx, "ANALYZE "+s.table); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+s.table+` (event_id, topic, payload, metadata, ordering_key)
		SELECT g::text, 't', '\x00', '{}', 'key-' || (g % 500) FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: claimBegin})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "+s.claim, 500)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	pending := "Index Scan using " + s.cfg.Table + "_pending on " + s.cfg.Table + " o (actual rows=500 loops=1)"
	if !strings.Contains(plan, pending) || strings.Contains(plan, "Bitmap") || strings.Contains(plan, "Seq Scan") {
		t.Errorf("the claim does not walk the pending index and stop at its limit; want %q in:\n%s", pending, plan)
	}
	// The search for older records of the claimed keys that the claim does
	// not hold walks the pending index only up to the newest claimed id:
	// the 499 older claimed ones, not the 19500 behind them.
	for _, want := range []string{
		"Index Scan using " + s.cfg.Table + "_pending on " + s.cfg.Table + " (actual rows=0 loops=1)",
		"Index Cond: (id < $",
		"Rows Removed by Filter: 499",
	} {
		if !strings.Contains(plan, want) {
			t.Errorf("the blocker search is not a bounded walk of the pending index; want %q in:\n%s", want, plan)
		}
	}
}
