package pgxstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
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

// childEnv makes the test binary run a relay instead of the tests: the
// "relay process" the crash test kills.
const childEnv = "EDA_OUTBOX_RELAY_CHILD_SCHEMA"

func TestMain(m *testing.M) {
	if schema := os.Getenv(childEnv); schema != "" {
		if err := runChildRelay(schema); err != nil {
			fmt.Fprintln(os.Stderr, "relay child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pgSink publishes into Postgres tables: sink_log gets every delivery,
// sink every distinct event id (the consumer's deduplicated view).
type pgSink struct {
	pool   *pgxpool.Pool
	schema string
}

func (s pgSink) Publish(topic string, msgs ...*message.Message) error {
	b := &pgx.Batch{}
	for _, m := range msgs {
		var e outboxtest.Event
		if err := json.Unmarshal(m.Payload, &e); err != nil {
			return err
		}
		id := m.Metadata.Get(eda.MetadataID)
		b.Queue("INSERT INTO "+s.schema+".sink_log (event_id, key, n) VALUES ($1, $2, $3)", id, e.Key, e.N)
		b.Queue("INSERT INTO "+s.schema+".sink (event_id) VALUES ($1) ON CONFLICT DO NOTHING", id)
	}
	return s.pool.SendBatch(context.Background(), b).Close()
}

func (pgSink) Close() error { return nil }

func runChildRelay(schema string) error {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	pool, err := pgxpool.New(ctx, pgtest.DSN())
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: schema})
	if err != nil {
		return err
	}
	r, err := outbox.NewRelay(outbox.RelayConfig{Store: st, Publisher: pgSink{pool, schema}, BatchSize: 5, Workers: 2, PollInterval: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	return r.Run(ctx) // until SIGKILL
}

func startChild(t *testing.T, schema string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+schema)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// TestRelayKilledMidway: events are committed, the relay process is
// SIGKILLed while publishing, and a restarted relay publishes every event:
// the sink's deduplicated view holds each id exactly once and each key's
// first deliveries are in order.
func TestRelayKilledMidway(t *testing.T) {
	ctx := context.Background()
	st, write := newStore(t)
	pool := pgtest.Pool(t, 4)
	schema := st.Table()[:len(st.Table())-len(".eda_outbox")]
	if _, err := pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %[1]s.sink_log (seq bigserial PRIMARY KEY, event_id text NOT NULL, key text NOT NULL, n int NOT NULL);
		CREATE TABLE %[1]s.sink (event_id text PRIMARY KEY)`, schema)); err != nil {
		t.Fatal(err)
	}
	app := outboxtest.NewApp(t)
	const keys, perKey = 10, 150
	total := keys * perKey
	writeRange := func(from, to int) {
		for i := from; i < to; i++ {
			evs := make([]eda.Event, keys)
			for k := range keys {
				evs[k] = outboxtest.Event{Key: fmt.Sprintf("k%d", k), N: i}
			}
			if err := write(ctx, true, app, evs...); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeRange(0, perKey/2)
	count := func(table string) int {
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+"."+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	child := startChild(t, schema)
	writeRange(perKey/2, perKey) // committed while the relay runs
	if !poll.Until(30*time.Second, func() bool { return count("sink") >= total/5 }) {
		t.Fatalf("the relay child published %d of %d in 30s", count("sink"), total)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	atKill := count("sink")
	if atKill >= total {
		t.Fatalf("the relay finished (%d) before it was killed; the test proves nothing", atKill)
	}
	t.Logf("killed the relay with %d of %d events in the sink", atKill, total)

	second := startChild(t, schema)
	if !poll.Until(60*time.Second, func() bool { return count("sink") >= total }) {
		t.Errorf("after restart: %d of %d events in the sink", count("sink"), total)
		dumpStuck(t, pool, schema, second)
		t.FailNow()
	}
	var stats outbox.Stats
	var err error
	poll.Until(30*time.Second, func() bool {
		stats, err = st.Stats(ctx)
		return err != nil || stats.Pending == 0
	})
	if err != nil || stats.Pending != 0 || stats.Failed != 0 {
		t.Fatalf("stats %+v, %v; want nothing pending or failed", stats, err)
	}
	// Every stored event id (all published by now) is in the sink exactly
	// once (primary key), and nothing else is.
	var missing, extra int
	if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT
		(SELECT count(*) FROM %[1]s.eda_outbox_done o WHERE NOT EXISTS (SELECT 1 FROM %[1]s.sink s WHERE s.event_id = o.event_id)),
		(SELECT count(*) FROM %[1]s.sink s WHERE NOT EXISTS (SELECT 1 FROM %[1]s.eda_outbox_done o WHERE s.event_id = o.event_id))`, schema)).Scan(&missing, &extra); err != nil {
		t.Fatal(err)
	}
	if missing != 0 || extra != 0 || count("sink") != total {
		t.Fatalf("sink: %d missing, %d unknown, %d distinct; want 0, 0, %d", missing, extra, count("sink"), total)
	}
	deliveries := count("sink_log")
	t.Logf("%d deliveries for %d events: %d redelivered after the kill (at least once; the sink deduplicates)", deliveries, total, deliveries-total)
	// Per key, first deliveries are in order.
	rows, err := pool.Query(ctx, "SELECT key, n FROM (SELECT DISTINCT ON (event_id) event_id, key, n, seq FROM "+schema+".sink_log ORDER BY event_id, seq) f ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		if p, ok := last[k]; ok && n <= p {
			t.Errorf("key %s: %d first delivered after %d", k, n, p)
		}
		last[k] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// dumpStuck logs what a relay that stopped making progress left behind:
// the database's sessions, the records still pending per key, and the
// relay process's goroutines (SIGQUIT makes it print them to stderr).
func dumpStuck(t *testing.T, pool *pgxpool.Pool, schema string, relay *exec.Cmd) {
	t.Helper()
	ctx := context.Background()
	dump := func(q string) {
		rows, err := pool.Query(ctx, q)
		if err != nil {
			t.Logf("%s: %v", q, err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			v, _ := rows.Values()
			t.Logf("  %v", v)
		}
	}
	t.Log("sessions:")
	dump("SELECT pid, state, wait_event_type, wait_event, now() - xact_start, left(query, 100) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
	t.Log("pending per key (key, count, oldest id):")
	dump("SELECT ordering_key, count(*), min(id) FROM " + schema + ".eda_outbox GROUP BY 1 ORDER BY 1")
	t.Log("held:")
	dump("SELECT id, ordering_key, state, attempts, available_at, left(last_error, 80) FROM " + schema + ".eda_outbox_held ORDER BY id LIMIT 20")
	_ = relay.Process.Signal(syscall.SIGQUIT)
	_ = relay.Wait()
}
