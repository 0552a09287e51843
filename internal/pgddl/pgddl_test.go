package pgddl_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/internal/pgddl"
)

func dsn() string {
	if v := os.Getenv("EDA_POSTGRES_DSN"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/test"
}

// Many sessions create one new schema at the same moment: every call
// succeeds. A plain CREATE SCHEMA IF NOT EXISTS fails some of them with a
// unique violation on pg_namespace (checked below, so the test shows the race
// it guards against is real on this server).
func TestCreateSchemaConcurrently(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn()+"?pool_max_conns=16")
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("Postgres at %s is not reachable (start it: scripts/postgres.sh): %v", dsn(), err)
	}
	defer pool.Close()
	run := func(create func(ctx context.Context, schema string) error) (failed int, firstErr error) {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		schema := "eda_pgddl_" + hex.EncodeToString(b)
		defer pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") //nolint:errcheck
		var mu sync.Mutex
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				if err := create(ctx, schema); err != nil {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}()
		}
		close(gate)
		wg.Wait()
		return failed, firstErr
	}
	raced := false
	for range 20 {
		if n, err := run(func(ctx context.Context, s string) error {
			_, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+s)
			return err
		}); n > 0 {
			if !pgddl.Race(err) {
				t.Fatalf("plain CREATE SCHEMA failed with %v, not the catalog race", err)
			}
			raced = true
			break
		}
	}
	if !raced {
		t.Log("plain CREATE SCHEMA IF NOT EXISTS did not race in 20 rounds on this server")
	}
	for range 20 {
		if n, err := run(func(ctx context.Context, s string) error { return pgddl.CreateSchema(ctx, pool, s) }); n > 0 {
			t.Fatalf("%d of 12 concurrent CreateSchema calls failed: %v", n, err)
		}
	}
}

func TestRaceAndUnreachable(t *testing.T) {
	for _, c := range []struct {
		err         error
		race, unrch bool
	}{
		{&pgconn.PgError{Code: "23505", ConstraintName: "pg_namespace_nspname_index"}, true, false},
		{&pgconn.PgError{Code: "23505", ConstraintName: "orders_pkey"}, false, false},
		{&pgconn.PgError{Code: "42P06"}, true, false},
		{&pgconn.PgError{Code: "42501"}, false, false},
		{errors.New("other"), false, false},
	} {
		if got := pgddl.Race(c.err); got != c.race {
			t.Errorf("Race(%v) = %v, want %v", c.err, got, c.race)
		}
		if got := pgddl.Unreachable(c.err); got != c.unrch {
			t.Errorf("Unreachable(%v) = %v, want %v", c.err, got, c.unrch)
		}
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:1/test?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); !pgddl.Unreachable(err) {
		t.Fatalf("Unreachable(%v) = false for a closed port", err)
	}
}
