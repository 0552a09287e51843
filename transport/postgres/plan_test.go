package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/transport"
)

// queueFilter matches a plan that filters rows on queue instead of finding
// them by index.
var queueFilter = regexp.MustCompile(`Filter: .*queue = `)

// The consumer's queries must use indexes whatever the table holds, also
// under the generic plan Postgres switches prepared statements to: receiving
// from a queue must not cost more as other queues (or its own backlog) grow.
// This checks the plans on a table of 20,000 rows with generic plans forced.
func TestQueryPlansUseIndexes(t *testing.T) {
	ctx := context.Background()
	pool, schema := internalSchema(t, "eda_pgtest_plan_")
	cfg := Config{Pool: pool, Schema: schema}
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	tr, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, q := range []transport.Queue{{Name: "big"}, {Name: "other"}, {Name: "fifo", FIFO: true}, {Name: "dlq"}} {
		if err := tr.Declare(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// Two queues with a backlog among 2,000 small ones, their rows
	// interleaved in the table: the planner estimates "queue = $1" at the
	// average, a dozen rows, and reading them by index as random reads.
	fill := expand(`
INSERT INTO {{schema}}.messages (queue, uuid, payload, metadata, group_id)
SELECT q, g::text, '\x00', '', CASE WHEN q = 'fifo' THEN 'g' || (g % 50) END
FROM (
	SELECT q, g FROM generate_series(1, 10000) g, unnest(ARRAY['big', 'fifo']) q
	UNION ALL
	SELECT 'small' || (g % 2000), g FROM generate_series(1, 10000) g
) r ORDER BY random();
ANALYZE {{schema}}.messages;`, schema)
	if _, err := pool.Exec(ctx, fill); err != nil {
		t.Fatal(err)
	}

	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// The consumer's statements run after consumerSettings, in its
	// transactions (asyncCommit).
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, strings.ReplaceAll(consumerSettings, "true)", "false)")); err != nil {
		t.Fatal(err)
	}
	q := tr.q
	for _, tc := range []struct {
		name, sql, args string
	}{
		{"claim big", q.claim[0], "('big', 30000000)"},
		{"claim other", q.claim[0], "('other', 30000000)"},
		{"claim fifo", q.claimFIFO[0], "('fifo', 30000000)"},
		{"claim big largest batch", q.claim[len(q.claim)-1], "('big', 30000000)"},
		{"claim other largest batch", q.claim[len(q.claim)-1], "('other', 30000000)"},
		{"claim fifo largest batch", q.claimFIFO[len(q.claimFIFO)-1], "('fifo', 30000000)"},
		{"next visible", q.nextVisible, "('big')"},
		{"next visible empty", q.nextVisible, "('other')"},
		{"ack", q.ack, "('{1,2,3}', '{1,1,1}', 'big')"},
		{"nack", q.nack, "('{1,2,3}', '{1,1,1}', 'big', '{0,0,5}')"},
		{"extend", q.extend, "('{1}', '{1}', 'big', 30000000)"},
		{"release", q.release, "('{1,2,3}', '{1,1,1}', 'big')"},
		{"dead letter", q.deadLetter, "('{1,2,3}', '{1,1,1}', 'dlq', 'big')"},
	} {
		name := "plan_" + strings.ReplaceAll(tc.name, " ", "_")
		if _, err := conn.Exec(ctx, "PREPARE "+name+" AS "+tc.sql); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		rows, err := conn.Query(ctx, "EXPLAIN EXECUTE "+name+tc.args, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		plan := strings.Join(lines, "\n")
		if strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "Hash Join") || queueFilter.MatchString(plan) {
			t.Errorf("%s: the generic plan scans more than the queue's rows:\n%s", tc.name, plan)
		}
		// A receive reads the first rows of the queue in index order, not
		// all of them to sort (its backlog, on every receive).
		if strings.HasPrefix(tc.name, "claim") && (strings.Contains(plan, "Sort") || strings.Contains(plan, "Bitmap")) {
			t.Errorf("%s: the generic plan sorts the queue's rows instead of reading the index in order:\n%s", tc.name, plan)
		}
	}
}

// internalSchema returns a pool on the test database and a fresh schema
// name starting with prefix; the schema is dropped and the pool closed when
// the test ends.
func internalSchema(t *testing.T, prefix string) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	dsn := os.Getenv("EDA_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("Postgres at %s is not reachable (%v); start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", dsn, err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := prefix + hex.EncodeToString(b)
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		pool.Close()
	})
	return pool, schema
}
