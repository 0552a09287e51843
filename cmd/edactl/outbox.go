package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	_ "modernc.org/sqlite" // SQLite outboxes

	"github.com/edaproject/eda/internal/ops"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
	"github.com/edaproject/eda/outbox/sqlitestore"
)

// outboxStore is the part of outbox.Store edactl uses.
type outboxStore interface {
	Stats(ctx context.Context) (outbox.Stats, error)
	Failed(ctx context.Context, limit int) ([]outbox.Record, error)
	Retry(ctx context.Context, seqs ...int64) (int64, error)
	Discard(ctx context.Context, seqs ...int64) (int64, error)
}

var _ outboxStore = outbox.Store(nil)

func runOutbox(ctx context.Context, c *cli, args []string) error {
	sub, args, err := subcommand(args, "status", "failed", "retry", "discard")
	if err != nil {
		return err
	}
	usage := "-db DSN-or-path [flags]"
	if sub == "retry" || sub == "discard" {
		usage = "-db DSN-or-path [-all | seq...]"
	}
	fs := c.flagSet("outbox "+sub, usage)
	dsn := fs.String("db", os.Getenv("EDA_OUTBOX_DB"), "the outbox database: postgres:// URL (pgxstore) or SQLite file path (sqlitestore) (env EDA_OUTBOX_DB)")
	schema := fs.String("schema", pgxstore.DefaultSchema, "Postgres: schema of the outbox table")
	table := fs.String("table", pgxstore.DefaultTable, "table of the outbox")
	limit := fs.Int("n", 100, "failed: how many records to list at most")
	all := fs.Bool("all", false, "retry, discard: every failed record")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	var seqs []int64
	switch sub {
	case "status", "failed":
		if len(pos) > 0 {
			return usagef("unexpected arguments %q", pos)
		}
	default:
		for _, p := range pos {
			n, err := strconv.ParseInt(p, 10, 64)
			if err != nil || n <= 0 {
				return usagef("%q is not a record sequence number (see edactl outbox failed)", p)
			}
			seqs = append(seqs, n)
		}
		slices.Sort(seqs)
		seqs = slices.Compact(seqs)
		if len(seqs) == 0 && !*all {
			return usagef("name the records to %s (seq...) or pass -all", sub)
		}
		if len(seqs) > 0 && *all {
			return usagef("pass either seq... or -all, not both")
		}
	}
	if *limit <= 0 {
		return usagef("-n %d: want a positive count", *limit)
	}
	store, closeStore, err := openOutbox(ctx, *dsn, *schema, *table)
	if err != nil {
		return err
	}
	defer closeStore()

	switch sub {
	case "status":
		st, err := store.Stats(ctx)
		if err != nil {
			return err
		}
		lag := st.Lag(time.Now())
		if c.json {
			out := struct {
				Pending       int64      `json:"pending"`
				OldestPending *time.Time `json:"oldestPending,omitempty"`
				LagSeconds    float64    `json:"lagSeconds"`
				Failed        int64      `json:"failed"`
			}{Pending: st.Pending, LagSeconds: lag.Seconds(), Failed: st.Failed}
			if !st.OldestPending.IsZero() {
				out.OldestPending = &st.OldestPending
			}
			return c.printJSON(out)
		}
		oldest := "-"
		if !st.OldestPending.IsZero() {
			oldest = fmt.Sprintf("%s (%s ago)", st.OldestPending.UTC().Format(time.RFC3339), lag.Round(time.Millisecond))
		}
		c.table([]string{"PENDING", "OLDEST PENDING", "FAILED"},
			[][]string{{strconv.FormatInt(st.Pending, 10), oldest, strconv.FormatInt(st.Failed, 10)}})
		if st.Failed > 0 {
			fmt.Fprintln(c.stdout, "edactl outbox failed lists the failed records; retry or discard them by seq")
		}
		return nil
	case "failed":
		recs, err := store.Failed(ctx, *limit)
		if err != nil {
			return err
		}
		return c.printRecords(recs)
	}

	op, verb := store.Retry, "retried"
	if sub == "discard" {
		op, verb = store.Discard, "discarded"
	}
	if *all {
		n, err := ops.OutboxAll(ctx, store, op)
		if err != nil {
			return fmt.Errorf("%s: %w", verb, err)
		}
		return c.printCount(verb, n, 0)
	}
	n, err := op(ctx, seqs...)
	if err != nil && !errors.Is(err, outbox.ErrNotFailed) {
		return err
	}
	if err := c.printCount(verb, n, int64(len(seqs))-n); err != nil {
		return err
	}
	if n < int64(len(seqs)) {
		return fmt.Errorf("%w: %d of %d record(s) were not failed (or do not exist)", outbox.ErrNotFailed, int64(len(seqs))-n, len(seqs))
	}
	return nil
}

func (c *cli) printCount(verb string, n, skipped int64) error {
	if c.json {
		return c.printJSON(map[string]int64{verb: n, "skipped": skipped})
	}
	fmt.Fprintf(c.stdout, "%s %d record(s)\n", verb, n)
	return nil
}

func (c *cli) printRecords(recs []outbox.Record) error {
	if c.json {
		type record struct {
			Seq         int64             `json:"seq"`
			EventID     string            `json:"eventId"`
			Topic       string            `json:"topic"`
			Type        string            `json:"type"`
			OrderingKey string            `json:"orderingKey,omitempty"`
			CreatedAt   time.Time         `json:"createdAt"`
			Attempts    int               `json:"attempts"`
			Error       string            `json:"error"`
			Metadata    map[string]string `json:"metadata"`
			Payload     string            `json:"payload"`
		}
		out := make([]record, 0, len(recs))
		for _, r := range recs {
			out = append(out, record{r.Seq, r.EventID, r.Topic, r.Metadata.Get("ce_type"), r.OrderingKey, r.CreatedAt,
				r.Attempts, r.LastError, r.Metadata, string(r.Payload)})
		}
		return c.printJSON(out)
	}
	if len(recs) == 0 {
		fmt.Fprintln(c.stdout, "no failed records")
		return nil
	}
	rows := make([][]string, 0, len(recs))
	for _, r := range recs {
		rows = append(rows, []string{strconv.FormatInt(r.Seq, 10), r.EventID, r.Topic, r.Metadata.Get("ce_type"),
			r.CreatedAt.UTC().Format(time.RFC3339), strconv.Itoa(r.Attempts), excerpt(r.LastError, 100)})
	}
	c.table([]string{"SEQ", "EVENT ID", "TOPIC", "TYPE", "CREATED", "ATTEMPTS", "ERROR"}, rows)
	return nil
}

// openOutbox opens the outbox store a -db value names.
func openOutbox(ctx context.Context, dsn, schema, table string) (outboxStore, func(), error) {
	if dsn == "" {
		return nil, nil, usagef("-db is required: a postgres:// URL or a SQLite file path")
	}
	if isPostgres(dsn) {
		pool, err := connectPostgres(ctx, dsn)
		if err != nil {
			return nil, nil, err
		}
		store, err := pgxstore.New(pool, pgxstore.Config{Schema: schema, Table: table})
		if err != nil {
			pool.Close()
			return nil, nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		return store, pool.Close, nil
	}
	// SQLite: never create a database by mistyping its path.
	if _, err := os.Stat(dsn); err != nil {
		return nil, nil, usagef("-db %q: not a postgres:// URL, and not a SQLite file: %v", dsn, err)
	}
	db, err := sql.Open("sqlite", "file:"+dsn+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, nil, fmt.Errorf("sqlite %s: %w", dsn, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("sqlite %s: %w", dsn, err)
	}
	store, err := sqlitestore.New(db, sqlitestore.Config{Table: table})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return store, func() { db.Close() }, nil
}
