package pgxstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/internal/pgtest"
	"github.com/edaproject/eda/outbox/outboxtest"
	"github.com/edaproject/eda/outbox/pgxstore"
)

// poolSink publishes by inserting into a table through the store's own
// pool. Before it takes a connection it waits (up to 200 ms) for the
// claims to take every connection they can, so that a store letting them
// take all of them deadlocks every time, not only when they win the race.
type poolSink struct {
	pool  *pgxpool.Pool
	table string
}

func (s poolSink) Publish(_ string, msgs ...*message.Message) error {
	max := s.pool.Config().MaxConns
	poll.Until(200*time.Millisecond, func() bool { return s.pool.Stat().AcquiredConns() >= max })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, m := range msgs {
		if _, err := s.pool.Exec(ctx, "INSERT INTO "+s.table+" (event_id) VALUES ($1) ON CONFLICT DO NOTHING", m.Metadata.Get(eda.MetadataID)); err != nil {
			return err
		}
	}
	return nil
}

func (poolSink) Close() error { return nil }

// A relay whose Publisher writes to the store's pool keeps publishing:
// its claims, two per worker, never hold every connection of the pool
// (2 workers on a pool of 2 deadlocked: each claim held one connection
// while its publish waited for another).
func TestRelayPublisherSharesThePool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := pgtest.Pool(t, 2)
	schema := pgtest.Schema(t, pool)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	sink := schema + ".sink"
	if _, err := pool.Exec(ctx, "CREATE TABLE "+sink+" (event_id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	app := outboxtest.NewApp(t)
	const total = 60
	evs := make([]eda.Event, total)
	for i := range evs {
		evs[i] = outboxtest.Event{Key: fmt.Sprintf("k%d", i%6), N: i}
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Write(ctx, tx, app, evs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := outbox.NewRelay(outbox.RelayConfig{Store: st, Publisher: poolSink{pool, sink}, BatchSize: 5, Workers: 2, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	count := func() (n int) {
		qctx, qcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer qcancel()
		// Not through the pool: the relay may be holding it.
		conn, err := pgx.Connect(qctx, pgtest.DSN())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(qctx, "SELECT count(*) FROM "+sink).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	ok := poll.Until(20*time.Second, func() bool { return count() == total })
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("relay: %v", err)
	}
	if !ok {
		t.Fatalf("%d of %d events published in 20s: the relay's claims hold the pool its publisher needs", count(), total)
	}
}
