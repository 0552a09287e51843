package console_test

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/console"
	"github.com/edaproject/eda/outbox/pgxstore"
)

// BenchmarkPages times the console's pages, server side (the handler's
// time for one request), on a Postgres transport whose poison queue holds
// 10,000 dead letters (published through the transport) and an outbox of
// 100,000 records (99,000 pending, 1,000 failed):
//
//	go test -run '^$' -bench Pages -benchtime 20x ./console/
func BenchmarkPages(b *testing.B) {
	const dead, records, failed = 10_000, 100_000, 1_000
	s := newPGSystem(b)
	s.poison(b, dead)
	ctx := testContext(b)
	store, err := pgxstore.New(s.pool, pgxstore.Config{Schema: s.schema})
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	// Pending records in the outbox's main table, failed ones in its held
	// table (pgxstore schema v4).
	table := pgx.Identifier{s.schema, "eda_outbox"}.Sanitize()
	held := pgx.Identifier{s.schema, "eda_outbox_held"}.Sanitize()
	if _, err := s.pool.Exec(ctx, `INSERT INTO `+held+` (id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, state, attempts, last_error)
SELECT nextval('`+s.schema+`.eda_outbox_id_seq'), 'ev-' || i, 'orders', '{"order_id":"o"}'::bytea, '{"ce_type":"orders.OrderCreated"}'::jsonb,
	'', '', now(), 2, 3, 'aws: SNS topic does not exist'
FROM generate_series(1, $1) i`, failed); err != nil {
		b.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO `+table+` (event_id, topic, payload, metadata)
SELECT 'ev-' || i, 'orders', '{"order_id":"o"}'::bytea, '{"ce_type":"orders.OrderCreated"}'::jsonb
FROM generate_series($2 + 1, $1) i`, records, failed); err != nil {
		b.Fatal(err)
	}
	for _, t := range []string{table, held} {
		if _, err := s.pool.Exec(ctx, `ANALYZE `+t); err != nil {
			b.Fatal(err)
		}
	}
	h, err := console.New(ctx, console.Config{Postgres: &console.PostgresConfig{Pool: s.pool, Schema: s.schema}, Outbox: store})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	get := func(b *testing.B, path string) string {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != http.StatusOK {
			b.Fatalf("GET %s: %d\n%.2000s", path, w.Code, w.Body.String())
		}
		return w.Body.String()
	}
	// The id of a message deep in the queue, for the 180th page.
	var deep string
	if err := s.pool.QueryRow(ctx, `SELECT id::text FROM `+pgx.Identifier{s.schema}.Sanitize()+`.messages WHERE queue = 'poison' ORDER BY id OFFSET 9000 LIMIT 1`).Scan(&deep); err != nil {
		b.Fatal(err)
	}
	if n := len(regexp.MustCompile(`class="message"`).FindAllString(get(b, "/dlq?queue=poison"), -1)); n != console.DefaultPageSize {
		b.Fatalf("first page: %d messages", n)
	}
	for _, p := range []struct{ name, path string }{
		{"overview", "/"},
		{"overview-live", "/overview/live"},
		{"dlq-first-page", "/dlq?queue=poison"},
		{"dlq-page-180", "/dlq?queue=poison&after=" + deep},
		{"outbox", "/outbox"},
	} {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				get(b, p.path)
			}
		})
	}
}
