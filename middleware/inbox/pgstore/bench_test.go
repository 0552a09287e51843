package pgstore_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware/inbox"
	"github.com/edaproject/eda/middleware/inbox/inboxtest"
	"github.com/edaproject/eda/middleware/inbox/pgstore"
	"github.com/edaproject/eda/transport/memory"
)

// statementLog records the statements a pool sends.
type statementLog struct {
	mu   sync.Mutex
	sqls []string
}

func (l *statementLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	l.sqls = append(l.sqls, data.SQL)
	l.mu.Unlock()
	return ctx
}

func (l *statementLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// A batch is logged as one entry (one round trip): its statements joined
// by " + ".
func (l *statementLog) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	var qs []string
	for _, q := range data.Batch.QueuedQueries {
		qs = append(qs, q.SQL)
	}
	l.mu.Lock()
	l.sqls = append(l.sqls, strings.Join(qs, " + "))
	l.mu.Unlock()
	return ctx
}

func (l *statementLog) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (l *statementLog) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (l *statementLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.sqls
	l.sqls = nil
	return out
}

// tracedStore returns a store on a pool of its own whose statements are
// logged, in a fresh schema.
func tracedStore(t testing.TB) (*pgstore.Store, *pgxpool.Pool, string, *statementLog) {
	_, _, schema := newStore(t) // creates and migrates the schema, drops it at the end
	cfg, err := pgxpool.ParseConfig(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	log := &statementLog{}
	cfg.ConnConfig.Tracer = log
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := pgstore.New(pool, pgstore.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(context.Background(), "CREATE TABLE "+pgx.Identifier{schema, "charges"}.Sanitize()+" (order_id text)")
	if err != nil {
		t.Fatal(err)
	}
	log.take()
	return s, pool, schema, log
}

// txBench runs an app whose billing handler is fn on the memory transport
// and returns a function that handles one event and waits for it.
func txBench(t testing.TB, fn func(context.Context, inboxtest.Charged) error) (handleOne func()) {
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	app, err := eda.New(eda.Config{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	must(t, eda.Register[inboxtest.Charged](app, "charges"))
	done := make(chan struct{}, 1)
	var failed atomic.Value
	must(t, eda.Handle(app, "billing", func(ctx context.Context, e inboxtest.Charged) error {
		err := fn(ctx, e)
		if err != nil {
			failed.Store(err)
		}
		done <- struct{}{}
		return err
	}))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- app.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-errc })
	<-app.Running()
	return func() {
		if err := app.Publish(context.Background(), inboxtest.Charged{Order: "o-1"}); err != nil {
			t.Fatal(err)
		}
		<-done
		if err, _ := failed.Load().(error); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTxInboxIsNoRoundTrip checks the target: the inbox costs no round
// trip of its own; its mark goes in the statement that begins the
// handler's transaction, so the handler sends as many statements as the
// same handler without the inbox.
func TestTxInboxIsNoRoundTrip(t *testing.T) {
	s, pool, schema, log := tracedStore(t)
	insert := "INSERT INTO " + pgx.Identifier{schema, "charges"}.Sanitize() + " (order_id) VALUES ($1)"
	plain := txBench(t, func(ctx context.Context, e inboxtest.Charged) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, insert, e.Order); return err })
	})
	inboxed := txBench(t, pgstore.Tx(s, "billing", func(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
		_, err := tx.Exec(ctx, insert, e.Order)
		return err
	}))
	plain()
	base := log.take()
	inboxed()
	with := log.take()
	if len(with) != len(base) {
		t.Fatalf("statements without inbox %q, with %q: want as many", base, with)
	}
	n := 0
	for _, q := range with {
		if strings.Contains(q, `."eda_inbox"`) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d inbox statements, want 1: %q", n, with)
	}
}

// TestTxCommitBatchIsOneRoundTrip checks that a handler whose writes go on
// the commit batch costs two round trips in all: the begin with the mark,
// then the writes with the commit.
func TestTxCommitBatchIsOneRoundTrip(t *testing.T) {
	s, _, schema, log := tracedStore(t)
	insert := "INSERT INTO " + pgx.Identifier{schema, "charges"}.Sanitize() + " (order_id) VALUES ($1)"
	handle := txBench(t, pgstore.Tx(s, "billing", func(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
		b, ok := pgstore.CommitBatch(ctx)
		if !ok {
			return errors.New("no commit batch in Tx")
		}
		b.Queue(insert, e.Order)
		return nil
	}))
	handle()
	log.take() // the first run prepares the statements
	handle()
	if got := log.take(); len(got) != 2 || !strings.Contains(got[0], `."eda_inbox"`) || got[1] != insert+" + COMMIT" {
		t.Errorf("round trips %q, want the begin with the mark, then the insert with the commit", got)
	}
}

// BenchmarkTx measures the inbox's cost inside the handler's transaction:
// a handler inserting one row in its own transaction, with and without the
// same-transaction inbox, each message through an eda.App on the memory
// transport.
//
//	go test -run '^$' -bench Tx -benchmem ./middleware/inbox/pgstore/
func BenchmarkTx(b *testing.B) {
	s, pool, schema, _ := tracedStore(b)
	insert := "INSERT INTO " + pgx.Identifier{schema, "charges"}.Sanitize() + " (order_id) VALUES ($1)"
	b.Run("plain-tx", func(b *testing.B) {
		one := txBench(b, func(ctx context.Context, e inboxtest.Charged) error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, insert, e.Order); return err })
		})
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			one()
		}
	})
	b.Run("inbox-tx", func(b *testing.B) {
		one := txBench(b, pgstore.Tx(s, "billing", func(ctx context.Context, tx pgx.Tx, e inboxtest.Charged) error {
			_, err := tx.Exec(ctx, insert, e.Order)
			return err
		}))
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			one()
		}
	})
}

// BenchmarkStandalone measures Claim + Complete, the standalone inbox's two
// round trips per message.
func BenchmarkStandalone(b *testing.B) {
	s, _, _ := newStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := inbox.Key{Consumer: "bench", EventID: strconv.Itoa(i)}
		c, err := s.Claim(ctx, k, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Complete(ctx, k, c.Token); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMark isolates the inbox statement: Mark in one open
// transaction, without the commit that dominates BenchmarkTx.
func BenchmarkMark(b *testing.B) {
	s, pool, _ := newStore(b)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		first, err := s.Mark(ctx, tx, inbox.Key{Consumer: "bench", EventID: strconv.Itoa(i)})
		if err != nil || !first {
			b.Fatal(first, err)
		}
	}
}
