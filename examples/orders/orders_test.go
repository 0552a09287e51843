package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/transport"
)

const pgDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func awsEndpoint() string {
	if e := os.Getenv("EDA_AWS_ENDPOINT"); e != "" {
		return e
	}
	return "http://127.0.0.1:4566"
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// scenario returns options for one isolated run on the named transport:
// the harness's Env (a schema on Postgres, a name prefix on SNS/SQS),
// removed when the test ends.
func scenario(t *testing.T, kind edatest.Kind) options {
	t.Helper()
	env := edatest.NewEnv(t, kind, edatest.Config{Postgres: edatest.PostgresConfig{DSN: pgDSN}, AWS: edatest.AWSConfig{Endpoint: awsEndpoint()}})
	o := options{Role: "all", Addr: "127.0.0.1:0", Prefix: env.Prefix, Schema: "eda_orders_e2e_" + randomID(), Transport: string(kind),
		DB: filepath.Join(t.TempDir(), "orders.db"), AWSEndpoint: env.AWSEndpoint, MaxDelivery: 3, Visibility: 5 * time.Second}
	if kind == edatest.Postgres { // the services' tables and the transport in the Env's schemas
		o.DB, o.Schema = env.PostgresDSN, env.Schema
	}
	return o
}

func requirePostgres(t *testing.T) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgDSN)
	if err == nil {
		err = pool.Ping(context.Background())
		pool.Close()
	}
	if err != nil {
		t.Fatalf("Postgres at 127.0.0.1:5432 is not reachable (start it: scripts/postgres.sh): %v", err)
	}
}

func dropSchemas(names ...string) {
	pool, err := pgxpool.New(context.Background(), pgDSN)
	if err != nil {
		return
	}
	defer pool.Close()
	for _, n := range names {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+n+" CASCADE")
	}
}

// duplicating publishes every batch twice: each event reaches its queues
// twice, as at-least-once brokers may deliver it.
type duplicating struct {
	message.Publisher
	sent atomic.Int64
}

func (d *duplicating) Publish(topic string, msgs ...*message.Message) error {
	if err := d.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	copies := make([]*message.Message, len(msgs))
	for i, m := range msgs {
		copies[i] = m.Copy()
		copies[i].Metadata.Set(transport.MetadataDedupID, m.UUID+"-dup") // a FIFO queue must not drop it either
	}
	d.sent.Add(int64(len(msgs)))
	return d.Publisher.Publish(topic, copies...)
}

// The whole system on each stack: every order reaches its final state, each
// effect happens once although every event is delivered twice, and the
// poison message ends in the poison queue with its reason.
func TestOrdersEndToEnd(t *testing.T) {
	edatest.Each(t, func(t *testing.T, kind edatest.Kind) {
		t.Parallel()
		for _, fifo := range []bool{false, true} {
			t.Run(map[bool]string{false: "standard", true: "fifo"}[fifo], func(t *testing.T) {
				t.Parallel()
				o := scenario(t, kind)
				o.FIFO = fifo
				dup := &duplicating{}
				o.WrapPublisher = func(p message.Publisher) message.Publisher { dup.Publisher = p; return dup }
				s, err := start(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				defer s.stop()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				const n = 30
				sum, err := s.demo(ctx, n, testWriter{t})
				if err != nil {
					t.Fatal(err)
				}
				if sum.Placed != n || sum.Reserved+sum.Rejected != n || sum.Pending != 0 || sum.Refused != 4 {
					t.Fatalf("summary %+v: want %d placed, all final, 4 refused", sum, n)
				}
				if sum.Rejected == 0 || sum.Reserved == 0 {
					t.Fatalf("summary %+v: the demo stock should reject some orders and reserve others", sum)
				}
				if dup.sent.Load() == 0 {
					t.Fatal("no event went through the duplicating publisher")
				}
				assertEffectsOnce(t, s, n)
				assertPoisoned(t, sum)
				assertStillInBroker(t, s)
			})
		}
	})
}

// assertEffectsOnce checks that duplicates changed nothing: one notification
// per order, one reservation per order, and stock reduced by exactly the
// reserved orders' quantities.
func assertEffectsOnce(t *testing.T, s *system, n int) {
	t.Helper()
	ctx := context.Background()
	mine := s.run + "-%"
	var notes, reservations int
	must(t, s.db.QueryRowContext(ctx, s.db.q(`SELECT COUNT(*) FROM notifications n JOIN orders o ON o.id = n.order_id WHERE o.customer_id LIKE ?`), mine).Scan(&notes))
	must(t, s.db.QueryRowContext(ctx, s.db.q(`SELECT COUNT(*) FROM reservations r JOIN orders o ON o.id = r.order_id WHERE o.customer_id LIKE ?`), mine).Scan(&reservations))
	if notes != n || reservations != n {
		t.Errorf("%d notifications and %d reservations for %d orders: a duplicate was applied", notes, reservations, n)
	}
	reserved := map[string]int{}
	rows, err := s.db.QueryContext(ctx, s.db.q(`SELECT items FROM orders WHERE status = 'reserved' AND customer_id LIKE ?`), mine)
	must(t, err)
	for rows.Next() {
		var raw string
		must(t, rows.Scan(&raw))
		var items []Item
		must(t, json.Unmarshal([]byte(raw), &items))
		for _, it := range items {
			reserved[it.SKU] += it.Qty
		}
	}
	must(t, rows.Err())
	rows.Close()
	for sku, initial := range catalogue {
		var stock int
		must(t, s.db.QueryRowContext(ctx, s.db.q(`SELECT stock FROM products WHERE sku = ?`), sku).Scan(&stock))
		if stock != initial-reserved[sku] {
			t.Errorf("%s: stock %d, want %d - %d reserved", sku, stock, initial, reserved[sku])
		}
	}
}

func assertPoisoned(t *testing.T, sum *summary) {
	t.Helper()
	queues := map[string]bool{}
	for _, d := range sum.DeadLettered {
		queues[d.Queue[strings.LastIndex(d.Queue, "-")+1:]] = true
	}
	if len(sum.DeadLettered) != 2 || !queues[queueInventory] || !queues[queueNotification] {
		t.Fatalf("dead-lettered %+v, want the poison message from inventory and notification", sum.DeadLettered)
	}
	for _, d := range sum.DeadLettered {
		if d.Reason != "permanent" || !strings.Contains(d.Error, "cannot decode payload") || d.Type != "orders.OrderCreated" {
			t.Errorf("dead letter %+v: want reason permanent, a decode error, type orders.OrderCreated", d)
		}
	}
}

// assertStillInBroker checks that nothing consumed the poison queue: the
// two poisoned copies are still there for the operator, and the DLQs, which
// nothing moved to, are empty but for what is there.
func assertStillInBroker(t *testing.T, s *system) {
	t.Helper()
	ctx := context.Background()
	n, err := s.dead.depth(ctx, s.opts.name(queuePoison))
	must(t, err)
	if n != 2 {
		t.Errorf("the poison queue holds %d message(s) after the run, want the 2 poisoned copies: something consumed it", n)
	}
	// Reading it again for the summary finds them again.
	sum, err := s.dead.snapshot(ctx)
	must(t, err)
	if len(sum) != 2 {
		t.Errorf("a second look at the dead letters finds %+v, want the same 2", sum)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
