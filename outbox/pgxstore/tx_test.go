package pgxstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/internal/pgtest"
	"github.com/edaproject/eda/outbox/outboxtest"
	"github.com/edaproject/eda/outbox/pgxstore"
)

// The whole store suite again, every write through a pipelined Tx.
func TestStoreTx(t *testing.T) {
	outboxtest.Run(t, outboxtest.Harness{
		New: func(t *testing.T) (outbox.Store, outboxtest.Writer) {
			st, _ := newStore(t)
			return st, func(ctx context.Context, commit bool, enc outbox.Encoder, events ...eda.Event) error {
				tx, err := st.Begin(ctx)
				if err != nil {
					return err
				}
				defer tx.Rollback(ctx)
				if err := tx.Write(ctx, enc, events...); err != nil {
					return err
				}
				if commit {
					return tx.Commit(ctx)
				}
				return tx.Rollback(ctx)
			}
		},
	})
}

// countingConn counts writes to Postgres: pgx sends each round trip's
// messages in one write.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// txFixture is a store on a one-connection pool whose writes are counted,
// with an orders table beside the outbox.
func txFixture(t *testing.T) (*pgxstore.Store, *pgxpool.Pool, *atomic.Int64) {
	t.Helper()
	ctx := context.Background()
	schema := pgtest.Schema(t, pgtest.Pool(t, 1))
	cfg, err := pgxpool.ParseConfig(pgtest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	writes := &atomic.Int64{}
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, writes}, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: schema, DisableNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("Postgres at %s: %v; %s", pgtest.DSN(), err, pgtest.StartHint)
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE "+schema+".orders (id bigserial PRIMARY KEY, customer text NOT NULL UNIQUE)"); err != nil {
		t.Fatal(err)
	}
	return st, pool, writes
}

// placeOrder inserts an order and its event through a Tx.
func placeOrder(ctx context.Context, st *pgxstore.Store, app outbox.Encoder, customer string) (int64, error) {
	tx, err := st.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	var id int64
	if err := tx.QueryRow(ctx, "INSERT INTO "+schemaOf(st)+".orders (customer) VALUES ($1) RETURNING id", customer).Scan(&id); err != nil {
		return 0, err
	}
	if err := tx.Write(ctx, app, outboxtest.Event{Key: customer, N: int(id)}); err != nil {
		return 0, err
	}
	return id, tx.Commit(ctx)
}

func schemaOf(st *pgxstore.Store) string {
	t := st.Table()
	return t[:len(t)-len(pgxstore.DefaultTable)-1]
}

// An order and its event take two round trips: BEGIN with the insert,
// the outbox insert with COMMIT. Both rows commit together.
func TestTxTwoRoundTrips(t *testing.T) {
	ctx := context.Background()
	st, pool, writes := txFixture(t)
	app := outboxtest.NewApp(t)
	if _, err := placeOrder(ctx, st, app, "warm-up"); err != nil { // prepares the statements
		t.Fatal(err)
	}
	before := writes.Load()
	id, err := placeOrder(ctx, st, app, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if n := writes.Load() - before; n != 2 {
		t.Errorf("order and event took %d round trips, want 2", n)
	}
	var orders, events int
	if err := pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+schemaOf(st)+".orders WHERE id = $1), (SELECT count(*) FROM "+st.Table()+" WHERE ordering_key = 'alice')", id).Scan(&orders, &events); err != nil {
		t.Fatal(err)
	}
	if orders != 1 || events != 1 {
		t.Errorf("%d orders and %d events committed, want 1 and 1", orders, events)
	}
}

// Errors leave nothing behind and the connection usable.
func TestTxErrors(t *testing.T) {
	ctx := context.Background()
	st, pool, _ := txFixture(t)
	app := outboxtest.NewApp(t)
	count := func() (orders, events int) {
		t.Helper()
		if err := pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM "+schemaOf(st)+".orders), (SELECT count(*) FROM "+st.Table()+")").Scan(&orders, &events); err != nil {
			t.Fatal(err)
		}
		return orders, events
	}
	if _, err := placeOrder(ctx, st, app, "bob"); err != nil {
		t.Fatal(err)
	}

	// A failed statement aborts the transaction: the caller that ignores
	// the error gets ErrTxCommitRollback, and the event is not stored.
	tx, err := st.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+schemaOf(st)+".orders (customer) VALUES ($1)", "bob"); err == nil {
		t.Fatal("duplicate customer: no error")
	}
	if err := tx.Write(ctx, app, outboxtest.Event{Key: "bob", N: 2}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Errorf("Commit after a failed statement: %v, want ErrTxCommitRollback", err)
	}
	if err := tx.Rollback(ctx); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("Rollback after Commit: %v, want ErrTxClosed", err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); !errors.Is(err, pgx.ErrTxClosed) {
		t.Errorf("Exec after Commit: %v, want ErrTxClosed", err)
	}

	// Rollback drops the order and the queued event.
	tx, err = st.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var none int
	if err := tx.QueryRow(ctx, "SELECT 1 FROM "+schemaOf(st)+".orders WHERE customer = 'nobody'").Scan(&none); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("QueryRow of no row: %v, want ErrNoRows", err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+schemaOf(st)+".orders (customer) VALUES ('carol')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Write(ctx, app, outboxtest.Event{Key: "carol", N: 3}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// An event that cannot be encoded is refused by Write.
	tx, err = st.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Write(ctx, app, unregistered{}); !errors.Is(err, eda.ErrUnregisteredEvent) || !errors.Is(err, outbox.ErrInvalidEvent) {
		t.Errorf("Write of an unregistered event: %v, want ErrUnregisteredEvent and ErrInvalidEvent", err)
	}
	_ = tx.Rollback(ctx)

	// The outbox insert fails at COMMIT (the table is gone): the order
	// does not commit either, and the error says what to do.
	if _, err := pool.Exec(ctx, "ALTER TABLE "+st.Table()+" RENAME TO moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := placeOrder(ctx, st, app, "dave"); !errors.Is(err, outbox.ErrNotMigrated) {
		t.Errorf("Commit with the outbox table missing: %v, want ErrNotMigrated", err)
	}
	if _, err := pool.Exec(ctx, "ALTER TABLE "+schemaOf(st)+".moved RENAME TO "+pgxstore.DefaultTable); err != nil {
		t.Fatal(err)
	}
	if o, e := count(); o != 1 || e != 1 {
		t.Errorf("%d orders, %d events; want only bob's", o, e)
	}

	// A cancelled context mid-transaction: nothing commits, and the pool
	// (one connection) still serves.
	cctx, cancel := context.WithCancel(ctx)
	tx, err = st.Begin(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(cctx, "INSERT INTO "+schemaOf(st)+".orders (customer) VALUES ('erin')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Write(cctx, app, outboxtest.Event{Key: "erin", N: 5}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := tx.Commit(cctx); err == nil {
		t.Error("Commit with a cancelled context: no error")
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := placeOrder(wctx, st, app, "frank"); err != nil {
		t.Fatalf("the pool after a cancelled commit: %v", err)
	}
	if o, e := count(); o != 2 || e != 2 {
		t.Errorf("%d orders, %d events; want bob's and frank's", o, e)
	}
}

type unregistered struct{}

func (unregistered) EventName() string { return "test.unregistered" }

// Write in the caller's own transaction costs one round trip once its
// statement is prepared (pgx's statement cache: no describe on later
// calls), and Store.Queue none of its own: the order and its event go in
// one batch. The same holds with NOTIFY, which goes with the insert.
func TestWriteRoundTrips(t *testing.T) {
	ctx := context.Background()
	st, pool, writes := txFixture(t)
	app := outboxtest.NewApp(t)
	notifying, err := pgxstore.New(pool, pgxstore.Config{Schema: schemaOf(st), NotifyInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*pgxstore.Store{st, notifying} {
		write := func(customer string) int64 {
			t.Helper()
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "INSERT INTO "+schemaOf(st)+".orders (customer) VALUES ($1)", customer); err != nil {
				t.Fatal(err)
			}
			before := writes.Load()
			if err := s.Write(ctx, tx, app, outboxtest.Event{Key: customer, N: 1}); err != nil {
				t.Fatal(err)
			}
			n := writes.Load() - before
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			return n
		}
		queue := func(customer string) int64 {
			t.Helper()
			before := writes.Load()
			b := &pgx.Batch{}
			b.Queue("INSERT INTO "+schemaOf(st)+".orders (customer) VALUES ($1)", customer)
			if err := s.Queue(ctx, b, app, outboxtest.Event{Key: customer, N: 1}); err != nil {
				t.Fatal(err)
			}
			if err := pool.SendBatch(ctx, b).Close(); err != nil {
				t.Fatal(err)
			}
			return writes.Load() - before
		}
		write(fmt.Sprintf("warm-write-%p", s))
		queue(fmt.Sprintf("warm-queue-%p", s))
		for i := range 3 {
			if n := write(fmt.Sprintf("w%d-%p", i, s)); n != 1 {
				t.Errorf("Write took %d round trips, want 1", n)
			}
			if n := queue(fmt.Sprintf("q%d-%p", i, s)); n != 1 {
				t.Errorf("the order and Store.Queue took %d round trips, want 1", n)
			}
		}
	}
}
