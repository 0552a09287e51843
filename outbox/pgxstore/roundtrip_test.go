package pgxstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/internal/pgtest"
	"github.com/edaproject/eda/outbox/pgxstore"
)

// roundTrips counts the queries and batches a pool sends: each is one
// round trip (statements prepared on first use aside).
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// TestClaimIsTwoRoundTrips checks that a claim that publishes costs two
// round trips: the transaction's start with the claim query, then the
// outcomes with the commit.
func TestClaimIsTwoRoundTrips(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // one connection: statements are prepared once
	rt := &roundTrips{}
	cfg.ConnConfig.Tracer = rt
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: pgtest.Schema(t, pool)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	published := func(_ context.Context, recs []outbox.Record) []outbox.Result {
		res := make([]outbox.Result, len(recs))
		for i, r := range recs {
			res[i] = outbox.Result{Seq: r.Seq, Outcome: outbox.OutcomePublished}
		}
		return res
	}
	for round := range 2 { // the first prepares the statements
		var recs []outbox.Record
		for i := range 3 {
			rec, err := outbox.NewRecord("t", message.NewMessage(fmt.Sprintf("ev-%d-%d", round, i), []byte("{}")))
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, rec)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return st.WriteRecords(ctx, tx, recs...) }); err != nil {
			t.Fatal(err)
		}
		rt.n.Store(0)
		n, err := st.Claim(ctx, 10, published)
		if err != nil || n != 3 {
			t.Fatalf("claim: %d records, %v; want 3", n, err)
		}
		if got := rt.n.Load(); round == 1 && got != 2 {
			t.Errorf("a claim took %d round trips, want 2", got)
		}
	}
	stats, err := st.Stats(ctx)
	if err != nil || stats.Pending != 0 {
		t.Errorf("stats %+v, %v: want nothing pending", stats, err)
	}
}
