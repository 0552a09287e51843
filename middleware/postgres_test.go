package middleware_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/middleware/inbox"
	"github.com/edaproject/eda/middleware/inbox/pgstore"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
)

// These tests run retry, poison and idempotency on the Postgres transport,
// against the Postgres at EDA_TEST_POSTGRES_DSN (default database test on
// 127.0.0.1:5432).

const startPostgres = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

func pgDSN() string {
	if dsn := os.Getenv("EDA_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable&pool_max_conns=16"
}

// pgEnv is a Postgres transport and a pool in a fresh schema, dropped when
// the test ends.
type pgEnv struct {
	pool   *pgxpool.Pool
	schema string
	tr     *postgres.Transport
}

func newPGEnv(t *testing.T) *pgEnv {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgDSN())
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("Postgres at %s is not reachable (%v); start it with: %s", pgDSN(), err, startPostgres)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	schema := fmt.Sprintf("eda_mwtest_%x", b)
	cfg := postgres.Config{Pool: pool, Schema: schema}
	must(t, postgres.Migrate(ctx, cfg))
	tr, err := postgres.New(ctx, cfg)
	must(t, err)
	t.Cleanup(func() {
		_ = tr.Close()
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
		pool.Close()
	})
	return &pgEnv{pool: pool, schema: schema, tr: tr}
}

func (e *pgEnv) drained(t *testing.T, queue string) {
	t.Helper()
	eventually(t, "queue "+queue+" drained", func() bool {
		v, f, err := e.tr.Depth(context.Background(), queue)
		return err == nil && v == 0 && f == 0
	})
}

func TestPostgresTransportRetry(t *testing.T) {
	e := newPGEnv(t)
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond, NoJitter: true}))
	app := newApp(t, e.tr, nil, retry)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, ev placed) error {
		if c.n() < 3 {
			return c.add(ctx, errFlaky)
		}
		return c.add(ctx, nil)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	e.drained(t, "q")
	var counts []string
	for _, cl := range c.all() {
		counts = append(counts, cl.ReceiveCount)
	}
	if got := strings.Join(counts, ","); got != "1,1,2,2" {
		t.Errorf("receive counts of calls %s, want 1,1,2,2 (two in process, nack, redelivery)", got)
	}
}

func TestPostgresTransportPoison(t *testing.T) {
	e := newPGEnv(t)
	poisoned := subscribe(t, e.tr, poisonQueue, poisonTopic)
	pub, err := middleware.NewPublisher(e.tr, middleware.TracingConfig{})
	must(t, err)
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond},
		Poison: &middleware.PoisonConfig{Publisher: e.tr, Topic: poisonTopic, MaxDeliveries: 2},
	})
	must(t, err)
	app := newApp(t, e.tr, pub, stack...)
	transient, permanent := newCalls(), newCalls()
	must(t, eda.Handle(app, "flaky", func(ctx context.Context, ev placed) error { return transient.add(ctx, errFlaky) }))
	must(t, eda.Handle(app, "strict", func(ctx context.Context, ev placed) error {
		return permanent.add(ctx, eda.Permanent(errors.New("invalid")))
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	got := map[string]message.Metadata{}
	for range 2 {
		msg := receive(t, poisoned)
		got[msg.Metadata.Get(middleware.MetadataPoisonQueue)] = msg.Metadata
	}
	e.drained(t, "flaky")
	e.drained(t, "strict")
	if md := got["strict"]; md.Get(middleware.MetadataPoisonReason) != "permanent" || md.Get(middleware.MetadataPoisonAttempts) != "1" ||
		md.Get(middleware.MetadataPoisonDeliveries) != "1" || md.Get(middleware.MetadataPoisonTopic) != placedTopic || permanent.n() != 1 {
		t.Errorf("permanent: %d calls, poisoned with %v", permanent.n(), md)
	}
	if md := got["flaky"]; md.Get(middleware.MetadataPoisonReason) != "retries_exhausted" || md.Get(middleware.MetadataPoisonAttempts) != "2" ||
		md.Get(middleware.MetadataPoisonDeliveries) != "2" || transient.n() != 4 {
		t.Errorf("transient: %d calls, poisoned with %v", transient.n(), md)
	}
}

func TestPostgresTransportIdempotency(t *testing.T) {
	e := newPGEnv(t)
	store, err := pgstore.New(e.pool, pgstore.Config{Schema: e.schema})
	must(t, err)
	must(t, store.Migrate(context.Background()))
	effects := pgx.Identifier{e.schema, "effects"}.Sanitize()
	_, err = e.pool.Exec(context.Background(), "CREATE TABLE "+effects+" (consumer text, order_id text)")
	must(t, err)
	count := func(consumer string) int {
		var n int
		must(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+effects+" WHERE consumer = $1", consumer).Scan(&n))
		return n
	}
	idem, err := inbox.New(inbox.Config{Store: store})
	must(t, err)
	stack, err := middleware.Default(middleware.Config{
		Retry:       middleware.RetryConfig{MaxAttempts: 1},
		Idempotency: idem,
	})
	must(t, err)
	app := newApp(t, e.tr, nil, stack...)
	must(t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "ledger"}, Concurrency: 3}))
	// Same-transaction inbox (the standalone one above also runs, keyed on
	// the queue name: both mark).
	must(t, eda.Handle(app, "ledger", pgstore.Tx(store, "ledger-tx", func(ctx context.Context, tx pgx.Tx, ev placed) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+effects+" VALUES ('ledger', $1)", ev.ID)
		return err
	})))
	// Standalone inbox; the first call fails after the effect is attempted,
	// and the redelivery must be applied.
	mailCalls := newCalls()
	must(t, eda.Handle(app, "mailer", func(ctx context.Context, ev placed) error {
		if mailCalls.n() == 0 {
			return mailCalls.add(ctx, errFlaky)
		}
		_, err := e.pool.Exec(ctx, "INSERT INTO "+effects+" VALUES ('mailer', $1)", ev.ID)
		return mailCalls.add(ctx, err)
	}))
	start(t, app)
	_, msg, err := app.NewMessage(context.Background(), placed{ID: "o-1"})
	must(t, err)
	for range 3 { // the broker delivers one event three times
		must(t, e.tr.Publish(placedTopic, msg.Copy()))
	}
	e.drained(t, "ledger")
	e.drained(t, "mailer")
	if n := count("ledger"); n != 1 {
		t.Errorf("ledger effect applied %d times, want 1", n)
	}
	if n := count("mailer"); n != 1 || mailCalls.n() != 2 {
		t.Errorf("mailer effect applied %d times in %d calls, want 1 in 2 (failed delivery redelivered and applied, duplicates skipped)", n, mailCalls.n())
	}
}
