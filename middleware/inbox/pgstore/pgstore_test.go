package pgstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/middleware/inbox"
	"github.com/edaproject/eda/middleware/inbox/inboxtest"
	"github.com/edaproject/eda/middleware/inbox/pgstore"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
)

const startPostgres = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

// testDSN is database test on 127.0.0.1:5432; EDA_TEST_POSTGRES_DSN
// overrides it.
func testDSN() string {
	if dsn := os.Getenv("EDA_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable&pool_max_conns=16"
}

var shared struct {
	once sync.Once
	pool *pgxpool.Pool
	err  error
}

func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := sharedPool()
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

// sharedPool connects once per test binary.
func sharedPool() (*pgxpool.Pool, error) {
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shared.pool, shared.err = pgxpool.New(ctx, testDSN())
		if shared.err == nil {
			shared.err = shared.pool.Ping(ctx)
		}
		if shared.err != nil {
			shared.err = fmt.Errorf("Postgres at %s is not reachable (%v); start it with: %s", testDSN(), shared.err, startPostgres)
		}
	})
	return shared.pool, shared.err
}

// waitDrained polls until queue is empty, for up to 10s.
func waitDrained(tr *memory.Transport, queue string) bool {
	return waitFor(context.Background(), func() bool {
		v, f, err := tr.Depth(queue)
		return err == nil && v == 0 && f == 0
	})
}

// newStore returns a migrated store in a fresh schema, dropped when the
// test ends.
func newStore(t testing.TB) (*pgstore.Store, *pgxpool.Pool, string) {
	t.Helper()
	pool := testPool(t)
	schema := "eda_inbox_" + randomSuffix()
	s, err := pgstore.New(pool, pgstore.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil { // idempotent
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	return s, pool, schema
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}

func TestStoreConformance(t *testing.T) {
	inboxtest.Run(t, func(t *testing.T) inbox.Store { s, _, _ := newStore(t); return s })
}

func TestMiddlewareOnPostgresStore(t *testing.T) {
	inboxtest.RunMiddleware(t, func(t *testing.T) inbox.Store { s, _, _ := newStore(t); return s })
}

func TestConfigValidate(t *testing.T) {
	if _, err := pgstore.New(nil, pgstore.Config{Schema: "Bad-Name", Table: "x;drop"}); !errors.Is(err, inbox.ErrInvalidConfig) {
		t.Errorf("New: %v", err)
	}
}

// txFixture runs an eda app on the memory transport whose handler is a
// pgstore.Tx adapter writing an effect row.
type txFixture struct {
	t      *testing.T
	store  *pgstore.Store
	pool   *pgxpool.Pool
	schema string
	tr     *memory.Transport
	calls  atomic.Int32 // fn bodies entered
}

func newTxFixture(t *testing.T) *txFixture {
	s, pool, schema := newStore(t)
	_, err := pool.Exec(context.Background(), "CREATE TABLE "+pgx.Identifier{schema, "charges"}.Sanitize()+" (id bigserial PRIMARY KEY, order_id text NOT NULL)")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return &txFixture{t: t, store: s, pool: pool, schema: schema, tr: tr}
}

// charge is the effect: one row per application.
func (f *txFixture) charge(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
	f.calls.Add(1)
	_, err := tx.Exec(ctx, "INSERT INTO "+pgx.Identifier{f.schema, "charges"}.Sanitize()+" (order_id) VALUES ($1)", e.Order)
	return err
}

func (f *txFixture) effects() int {
	var n int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{f.schema, "charges"}.Sanitize()).Scan(&n); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// app builds an app on the fixture's transport with fn as the billing handler.
func (f *txFixture) app(concurrency int, fn func(context.Context, pgx.Tx, inboxtest.Charged) error, mw ...message.HandlerMiddleware) *eda.App {
	app, err := eda.New(eda.Config{Transport: f.tr, Middleware: mw, CloseTimeout: 5 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	must(f.t, eda.Register[inboxtest.Charged](app, "charges"))
	must(f.t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "billing"}, Concurrency: concurrency}))
	must(f.t, eda.Handle(app, "billing", pgstore.Tx(f.store, "billing", fn)))
	return app
}

func (f *txFixture) publish(app *eda.App, copies int) {
	_, msg, err := app.NewMessage(context.Background(), inboxtest.Charged{Order: "o-1"})
	must(f.t, err)
	for range copies {
		c := message.NewMessage(msg.UUID, msg.Payload)
		c.Metadata = maps.Clone(msg.Metadata)
		must(f.t, f.tr.Publish("charges", c))
	}
}

func (f *txFixture) drained() {
	f.t.Helper()
	eventually(f.t, "queue drained", func() bool {
		v, fl, err := f.tr.Depth("billing")
		return err == nil && v == 0 && fl == 0
	})
}

func TestTxDuplicateSkipped(t *testing.T) {
	f := newTxFixture(t)
	app := f.app(1, f.charge)
	start(t, app)
	f.publish(app, 3)
	f.drained()
	if n := f.effects(); n != 1 || f.calls.Load() != 1 {
		t.Errorf("%d effects, %d calls; want 1, 1", n, f.calls.Load())
	}
}

func TestTxFailedHandlerRedeliveryApplied(t *testing.T) {
	f := newTxFixture(t)
	app := f.app(1, func(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
		if err := f.charge(ctx, tx, e); err != nil {
			return err
		}
		if f.calls.Load() == 1 {
			return errors.New("fails after writing: rolled back with the mark")
		}
		return nil
	})
	start(t, app)
	f.publish(app, 1)
	f.drained()
	if n := f.effects(); n != 1 || f.calls.Load() != 2 {
		t.Errorf("%d effects, %d calls; want 1, 2", n, f.calls.Load())
	}
}

func TestTxPanicRollsBack(t *testing.T) {
	f := newTxFixture(t)
	recoverMW := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) (out []*message.Message, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			return h(msg)
		}
	}
	app := f.app(1, func(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
		must(t, f.charge(ctx, tx, e))
		if f.calls.Load() == 1 {
			panic("boom")
		}
		return nil
	}, recoverMW)
	start(t, app)
	f.publish(app, 1)
	f.drained()
	if n := f.effects(); n != 1 || f.calls.Load() != 2 {
		t.Errorf("%d effects, %d calls; want 1, 2", n, f.calls.Load())
	}
}

// TestTxConcurrentDuplicates delivers copies of one event to four
// concurrent consumers. The first holds its transaction open until another
// delivery has reached the handler, which then blocks on the mark's unique
// index and skips once the first commits.
func TestTxConcurrentDuplicates(t *testing.T) {
	f := newTxFixture(t)
	var entered atomic.Int32
	probe := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			entered.Add(1)
			return h(msg)
		}
	}
	app := f.app(4, func(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
		if err := f.charge(ctx, tx, e); err != nil {
			return err
		}
		if !waitFor(ctx, func() bool { return entered.Load() >= 2 }) {
			return errors.New("no concurrent delivery arrived")
		}
		return nil
	}, probe)
	start(t, app)
	f.publish(app, 4)
	f.drained()
	if n := f.effects(); n != 1 || f.calls.Load() != 1 {
		t.Errorf("%d effects, %d calls; want 1, 1", n, f.calls.Load())
	}
	if entered.Load() < 4 {
		t.Errorf("%d deliveries, want 4", entered.Load())
	}
}

// TestTxCrashMidEffectThenRestart stops the consumer while its handler has
// written the effect but not committed: the transaction dies with the
// handler's context, and the restarted consumer applies the effect once.
func TestTxCrashMidEffectThenRestart(t *testing.T) {
	f := newTxFixture(t)
	written := make(chan struct{})
	app1 := f.app(1, func(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
		if err := f.charge(ctx, tx, e); err != nil {
			return err
		}
		close(written)
		<-ctx.Done() // killed mid-effect
		return ctx.Err()
	})
	stop := start(t, app1)
	f.publish(app1, 1)
	<-written
	stop()
	if n := f.effects(); n != 0 {
		t.Fatalf("%d effects visible after the crash, want 0 (uncommitted)", n)
	}
	app2 := f.app(1, f.charge)
	start(t, app2)
	f.drained()
	if n := f.effects(); n != 1 || f.calls.Load() != 2 {
		t.Errorf("%d effects, %d calls; want 1 effect after 2 calls", n, f.calls.Load())
	}
}

// TestTxCrashAfterCommitBeforeAck loses the ack of a committed delivery:
// the broker redelivers, the restarted consumer finds the mark and skips.
func TestTxCrashAfterCommitBeforeAck(t *testing.T) {
	f := newTxFixture(t)
	committed := make(chan struct{})
	loseAck := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err != nil {
				return out, err
			}
			close(committed)
			<-msg.Context().Done() // the process dies before acking
			return nil, errors.New("crashed before ack")
		}
	}
	app1 := f.app(1, f.charge, loseAck)
	stop := start(t, app1)
	f.publish(app1, 1)
	<-committed
	stop()
	app2 := f.app(1, f.charge)
	start(t, app2)
	f.drained()
	if n := f.effects(); n != 1 || f.calls.Load() != 1 {
		t.Errorf("%d effects, %d calls; want 1, 1 (redelivery skipped)", n, f.calls.Load())
	}
}

func TestTxNeedsHandlerContext(t *testing.T) {
	s, _, _ := newStore(t)
	h := pgstore.Tx(s, "billing", func(context.Context, pgx.Tx, inboxtest.Charged) error { return nil })
	if err := h(context.Background(), inboxtest.Charged{}); !errors.Is(err, inbox.ErrNoEventID) || !eda.IsPermanent(err) {
		t.Errorf("err %v", err)
	}
}

func start(t *testing.T, app *eda.App) (stop func()) {
	t.Helper()
	return edatest.Run(t, app)
}

func waitFor(ctx context.Context, cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !waitFor(context.Background(), cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestTxEventIDQuoted checks that event ids Tx inlines into its begin
// statement arrive in the inbox byte for byte, whatever quotes and
// backslashes they hold, and that their duplicates are skipped.
func TestTxEventIDQuoted(t *testing.T) {
	f := newTxFixture(t)
	app := f.app(1, f.charge)
	start(t, app)
	ids := []string{
		`o'1`,
		`''`,
		`\`,
		`\'); DROP TABLE charges; --`,
		`E'\\x41'`,
		`$$ ; SELECT 1 $$`,
		"new\nline\ttab",
		"ünïcødé ✓",
	}
	_, msg, err := app.NewMessage(context.Background(), inboxtest.Charged{Order: "o-1"})
	must(t, err)
	for _, id := range ids {
		for range 2 {
			c := message.NewMessage(id, msg.Payload)
			c.Metadata = maps.Clone(msg.Metadata)
			c.Metadata.Set(eda.MetadataID, id)
			must(t, f.tr.Publish("charges", c))
		}
	}
	f.drained()
	if n := f.effects(); n != len(ids) {
		t.Errorf("%d effects, want %d (one per id)", n, len(ids))
	}
	rows, err := f.pool.Query(context.Background(), "SELECT event_id FROM "+pgx.Identifier{f.schema, pgstore.DefaultTable}.Sanitize()+" WHERE consumer = $1 AND processed_at IS NOT NULL", "billing")
	must(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	slices.Sort(got)
	want := slices.Clone(ids)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("inbox holds %q, want %q", got, want)
	}
}

// TestTxCommitBatch checks that statements queued on the commit batch
// commit with the handler's transaction, and that one that fails rolls it
// back, mark included, so that the redelivery runs the handler again.
func TestTxCommitBatch(t *testing.T) {
	f := newTxFixture(t)
	var fail atomic.Bool
	fail.Store(true)
	insert := "INSERT INTO " + pgx.Identifier{f.schema, "charges"}.Sanitize() + " (order_id) VALUES ($1)"
	app := f.app(1, func(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
		f.calls.Add(1)
		b, ok := pgstore.CommitBatch(ctx)
		if !ok {
			return errors.New("no commit batch in Tx")
		}
		b.Queue(insert, e.Order)
		if fail.CompareAndSwap(true, false) {
			b.Queue("SELECT 1/0") // fails at commit
		}
		return nil
	})
	start(t, app)
	f.publish(app, 1)
	f.drained()
	if n := f.effects(); n != 1 || f.calls.Load() != 2 {
		t.Errorf("%d effects, %d calls; want 1 (the failed commit rolled back), 2", n, f.calls.Load())
	}
	if _, ok := pgstore.CommitBatch(context.Background()); ok {
		t.Error("CommitBatch outside Tx reports a batch")
	}
}
