package sqlstore_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/middleware/inbox"
	"github.com/edaproject/eda/middleware/inbox/sqlstore"
	"github.com/edaproject/eda/transport"
)

type paid struct {
	OrderID string `json:"order_id"`
}

func (paid) EventName() string { return "test.Paid" }

type database struct {
	db      *sql.DB
	dialect sqlstore.Dialect
	q       func(string) string
}

func databases(t *testing.T) map[string]database {
	t.Helper()
	lite, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "t.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lite.Close() })

	const dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Ping(); err != nil {
		t.Fatalf("Postgres at 127.0.0.1:5432 is not reachable (start it: scripts/postgres.sh): %v", err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "inbox_sql_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if a, err := sql.Open("pgx", dsn); err == nil {
			_, _ = a.Exec("DROP SCHEMA " + schema + " CASCADE")
			a.Close()
		}
	})
	pg, err := sql.Open("pgx", dsn+"&search_path="+schema)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	return map[string]database{
		"sqlite":   {lite, sqlstore.SQLite, func(s string) string { return s }},
		"postgres": {pg, sqlstore.Postgres, func(s string) string { return strings.ReplaceAll(s, "?", "$1") }},
	}
}

// Two consumers receive the same event at once (the memory transport's
// standard queue does not deduplicate); the effect happens once. A first
// attempt that fails is rolled back, mark included, and its redelivery is
// applied.
func TestConcurrentDuplicatesAndFailedAttempt(t *testing.T) {
	for name, d := range databases(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			store, err := sqlstore.New(d.db, sqlstore.Config{Dialect: d.dialect})
			must(t, err)
			must(t, store.Migrate(ctx))
			must(t, store.Migrate(ctx)) // idempotent
			_, err = d.db.Exec(`CREATE TABLE counter (id TEXT PRIMARY KEY, n INTEGER NOT NULL)`)
			must(t, err)
			_, err = d.db.Exec(`INSERT INTO counter VALUES ('a', 0), ('b', 0)`)
			must(t, err)

			h := edatest.New(t, edatest.Config{})
			must(t, eda.Register[paid](h.App, "payments"))
			must(t, h.App.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "billing"}, Concurrency: 4}))
			var failedB atomic.Bool
			must(t, eda.Handle(h.App, "billing", sqlstore.Tx(store, "billing", func(ctx context.Context, tx *sql.Tx, e paid) error {
				if e.OrderID == "b" && failedB.CompareAndSwap(false, true) {
					return errors.New("first attempt fails")
				}
				_, err := tx.ExecContext(ctx, d.q("UPDATE counter SET n = n + 1 WHERE id = ?"), e.OrderID)
				return err
			})))
			h.Start()

			// Event a delivered 4 times at once; event b fails once.
			topic, msg, err := h.App.NewMessage(ctx, paid{OrderID: "a"})
			must(t, err)
			var copies []*message.Message
			for range 4 {
				copies = append(copies, msg.Copy())
			}
			_, b, err := h.App.NewMessage(ctx, paid{OrderID: "b"})
			must(t, err)
			must(t, h.Transport.Publish(topic, b))
			must(t, h.Transport.Publish(topic, copies...))
			h.WaitHandled("billing", 5)
			h.WaitFailed("billing", 1)
			for id, want := range map[string]int{"a": 1, "b": 1} {
				var n int
				must(t, d.db.QueryRow(d.q("SELECT n FROM counter WHERE id = ?"), id).Scan(&n))
				if n != want {
					t.Errorf("effect of event %s applied %d times, want %d", id, n, want)
				}
			}
			if n, err := store.Expire(ctx, timeFar()); err != nil || n != 2 {
				t.Errorf("Expire removed %d marks (%v), want 2", n, err)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := sqlstore.New(nil, sqlstore.Config{Dialect: sqlstore.SQLite}); !errors.Is(err, inbox.ErrInvalidConfig) {
		t.Errorf("nil db: %v", err)
	}
	if _, err := sqlstore.New(&sql.DB{}, sqlstore.Config{}); !errors.Is(err, inbox.ErrInvalidConfig) {
		t.Errorf("no dialect: %v", err)
	}
	if _, err := sqlstore.New(&sql.DB{}, sqlstore.Config{Dialect: sqlstore.Postgres, Table: "x; drop"}); !errors.Is(err, inbox.ErrInvalidConfig) {
		t.Errorf("bad table: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func timeFar() time.Time { return time.Now().Add(time.Hour) }
