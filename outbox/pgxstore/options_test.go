package pgxstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/internal/pgtest"
	"github.com/edaproject/eda/outbox/outboxtest"
	"github.com/edaproject/eda/outbox/pgxstore"
)

func TestDeletePublished(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, 6)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: pgtest.Schema(t, pool), DeletePublished: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	app := outboxtest.NewApp(t)
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return st.Write(ctx, tx, app, outboxtest.Event{Key: "a", N: 1}, outboxtest.Event{Key: "a", N: 2, Poison: true})
	}); err != nil {
		t.Fatal(err)
	}
	sink := outboxtest.NewSink()
	sink.SetReject(true)
	r, err := outbox.NewRelay(outbox.RelayConfig{Store: st, Publisher: sink, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() { cancel(); <-done }()
	sink.WaitFor(t, 10*time.Second, "the healthy event", func(ds []outboxtest.Delivery) bool { return len(ds) == 1 })
	deadline := time.Now().Add(10 * time.Second)
	for {
		var rows, failed int
		if err := pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE state = 2) FROM "+st.Table()).Scan(&rows, &failed); err != nil {
			t.Fatal(err)
		}
		if rows == 1 && failed == 1 {
			break // the published row is gone, the failed one kept
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows, %d failed; want only the failed row left", rows, failed)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNotMigrated(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, 2)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: pgtest.Schema(t, pool)})
	if err != nil {
		t.Fatal(err)
	}
	app := outboxtest.NewApp(t)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return st.Write(ctx, tx, app, outboxtest.Event{N: 1}) })
	if !errors.Is(err, outbox.ErrNotMigrated) {
		t.Errorf("Write before Migrate = %v, want ErrNotMigrated", err)
	}
	if _, err := st.Stats(ctx); !errors.Is(err, outbox.ErrNotMigrated) {
		t.Errorf("Stats before Migrate = %v, want ErrNotMigrated", err)
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := pgxstore.New(nil, pgxstore.Config{Schema: "Bad-Schema", Table: "x; DROP"})
	if !errors.Is(err, outbox.ErrInvalidConfig) {
		t.Fatalf("New(bad) = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{"nil pool", "Schema", "Table"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
