package outboxprom_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	_ "modernc.org/sqlite"

	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/outboxprom"
	"github.com/edaproject/eda/outbox/outboxtest"
	"github.com/edaproject/eda/outbox/sqlitestore"
)

func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

func TestCollector(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "o.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := sqlitestore.New(db, sqlitestore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	app := outboxtest.NewApp(t)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Write(ctx, tx, app, outboxtest.Event{Key: "a", N: 1}, outboxtest.Event{Key: "a", N: 2, Poison: true}, outboxtest.Event{N: 3}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	sink := outboxtest.NewSink()
	sink.SetReject(true)
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: st, Publisher: sink, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	col, err := outboxprom.New(outboxprom.Config{Store: st, Relays: []*outbox.Relay{relay}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)

	before := gather(t, reg)
	if before["eda_outbox_pending"] != 3 || before["eda_outbox_oldest_pending_age_seconds"] <= 0 || before["eda_outbox_published_total"] != 0 {
		t.Fatalf("before relaying: %v", before)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	defer func() { cancel(); <-done }()
	sink.WaitFor(t, 10*time.Second, "two healthy events", func(ds []outboxtest.Delivery) bool { return len(ds) == 2 })
	var after map[string]float64
	if !poll.Until(10*time.Second, func() bool {
		after = gather(t, reg)
		return after["eda_outbox_failed"] == 1 && after["eda_outbox_pending"] == 0
	}) {
		t.Fatalf("after relaying: %v", after)
	}
	if after["eda_outbox_published_total"] != 2 || after["eda_outbox_failures_total"] != 1 || after["eda_outbox_oldest_pending_age_seconds"] != 0 {
		t.Errorf("after relaying: %v", after)
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := outboxprom.New(outboxprom.Config{Relays: []*outbox.Relay{nil}, Timeout: -1})
	if !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("New(bad) = %v, want ErrInvalidConfig", err)
	}
}
