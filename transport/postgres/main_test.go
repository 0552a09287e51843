package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/transport/postgres"
)

// testDSN is the Postgres the tests use: database test on 127.0.0.1:5432.
// EDA_TEST_POSTGRES_DSN overrides it.
func testDSN() string {
	if dsn := os.Getenv("EDA_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable&pool_max_conns=16"
}

const startPostgres = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

// shared is the pool and schema of this test run: one fresh schema, migrated
// once, dropped by TestMain.
var shared struct {
	once   sync.Once
	pool   *pgxpool.Pool
	schema string
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.pool != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := shared.pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{shared.schema}.Sanitize()+" CASCADE")
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "dropping test schema %s: %v\n", shared.schema, err)
		}
		shared.pool.Close()
	}
	os.Exit(code)
}

// testPool returns the run's pool and its migrated schema; it fails the test
// with the command that starts Postgres if Postgres is down.
func testPool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shared.pool, shared.err = connect(ctx)
		if shared.err != nil {
			return
		}
		shared.schema = "eda_pgtest_" + randomHex(4)
		shared.err = postgres.Migrate(ctx, postgres.Config{Pool: shared.pool, Schema: shared.schema})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.pool, shared.schema
}

func connect(ctx context.Context) (*pgxpool.Pool, error) {
	pool, err := pgxpool.New(ctx, testDSN())
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("Postgres at %s is not reachable (%v); start it with: %s", testDSN(), err, startPostgres)
	}
	return pool, nil
}

// freshSchema returns a schema name no one uses, dropped when t ends.
func freshSchema(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	pool, _ := testPool(t)
	schema := "eda_pgtest_" + randomHex(4)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return pool, schema
}

// newTransport returns a transport on the run's schema, closed when t ends.
func newTransport(t *testing.T, cfg postgres.Config) *postgres.Transport {
	t.Helper()
	pool, schema := testPool(t)
	if cfg.Pool == nil && cfg.DSN == "" {
		cfg.Pool = pool
	}
	if cfg.Schema == "" {
		cfg.Schema = schema
	}
	tr, err := postgres.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("postgres.New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
