package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
)

// rowVariant is one kind of second row in the rowcost phase: the table it
// goes into (setup, run once) and how it is queued after the order row.
type rowVariant struct {
	name  string
	setup string
	queue func(ctx context.Context, b *pgx.Batch, e OrderPlaced) error
}

// rowCost measures what the second row of a one-batch transaction costs
// Postgres: 8 connections each send the order insert and one row in one
// implicit transaction; the variants take turns in rounds; the figure is
// the backends' own CPU time (utime+stime from /proc) per transaction, and
// this process's. Unlike tx/s it does not move with load from elsewhere
// on the machine (only with cache and lock effects).
func (b *bench) rowCost(ctx context.Context) error {
	mkStore := func(table string) (*pgxstore.Store, error) {
		st, err := pgxstore.New(b.pool, pgxstore.Config{Schema: b.schema, Table: table, DisableNotify: true})
		if err != nil {
			return nil, err
		}
		return st, st.Migrate(ctx)
	}
	cur, err := mkStore("rc_current")
	if err != nil {
		return err
	}
	record := func(ctx context.Context, e OrderPlaced) (outbox.Record, error) {
		recs, err := outbox.Encode(ctx, b.app, e)
		if err != nil {
			return outbox.Record{}, err
		}
		return recs[0], nil
	}
	variants := []rowVariant{
		{name: "2-column row (floor)", queue: func(_ context.Context, bt *pgx.Batch, e OrderPlaced) error {
			bt.Queue("INSERT INTO order_lines (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
			return nil
		}},
		{name: "outbox row, Store.Queue (current schema)", queue: func(ctx context.Context, bt *pgx.Batch, e OrderPlaced) error {
			return cur.Queue(ctx, bt, b.app, e)
		}},
	}
	variants = append(variants, rowCostExtra(b.schema, record)...)
	if b.c.only != nil {
		variants = slices.DeleteFunc(variants, func(v rowVariant) bool { return !b.c.only.MatchString(v.name) })
	}
	for _, v := range variants {
		if v.setup == "" {
			continue
		}
		if _, err := b.pool.Exec(ctx, v.setup); err != nil {
			return fmt.Errorf("rowcost %s: %w", v.name, err)
		}
	}
	conns := make([]*pgxpool.Conn, b.c.writers)
	pids := make([]uint32, len(conns))
	for i := range conns {
		if conns[i], err = b.pool.Acquire(ctx); err != nil {
			return err
		}
		defer conns[i].Release()
		pids[i] = conns[i].Conn().PgConn().PID()
	}
	const rounds, perSlice = 5, 1000 // transactions per connection per slice
	server := make([]time.Duration, len(variants))
	client := make([]time.Duration, len(variants))
	wall := make([]time.Duration, len(variants))
	txs := make([]int, len(variants))
	fmt.Fprintf(b.c.out, "\n== second row cost: %d connections, order row + one row per implicit-transaction batch, %d rounds of %d tx per connection ==\n",
		len(conns), rounds, perSlice)
	for r := range rounds {
		for i, v := range variants {
			// warm the statement caches outside the measurement
			if r == 0 {
				if err := b.rowSlice(ctx, conns, v, 20); err != nil {
					return fmt.Errorf("rowcost %s: %w", v.name, err)
				}
			}
			stop := perfStart(r, i, pids)
			s0, err := backendCPU(pids)
			if err != nil {
				return err
			}
			c0, t0 := processCPU(), time.Now()
			if err := b.rowSlice(ctx, conns, v, perSlice); err != nil {
				return fmt.Errorf("rowcost %s: %w", v.name, err)
			}
			wall[i] += time.Since(t0)
			client[i] += processCPU() - c0
			s1, err := backendCPU(pids)
			if err != nil {
				return err
			}
			stop()
			server[i] += s1 - s0
			txs[i] += perSlice * len(conns)
		}
	}
	fmt.Fprintf(b.c.out, "%-68s %12s %12s %8s\n", "second row", "server/tx", "client/tx", "tx/s")
	for i, v := range variants {
		fmt.Fprintf(b.c.out, "%-68s %12s %12s %8.0f\n", v.name, (server[i] / time.Duration(txs[i])).Round(100*time.Nanosecond),
			(client[i] / time.Duration(txs[i])).Round(100*time.Nanosecond), float64(txs[i])/wall[i].Seconds())
	}
	return nil
}

func (b *bench) rowSlice(ctx context.Context, conns []*pgxpool.Conn, v rowVariant, n int) error {
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			for range n {
				e := b.event()
				bt := &pgx.Batch{}
				bt.Queue("INSERT INTO orders (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
				if err := v.queue(ctx, bt, e); err != nil {
					errs[i] = err
					return
				}
				if err := c.SendBatch(ctx, bt).Close(); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// backendCPU sums utime+stime of the given Postgres backends (same host).
func backendCPU(pids []uint32) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
		if err != nil {
			return 0, fmt.Errorf("backend cpu (Postgres must run on this host): %w", err)
		}
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 on
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
	}
	return total, nil
}

// perfStart records the backends with perf during round 0 of variant i when
// EDA_ROWCOST_PERF names a directory (a profiling aid, off by default).
func perfStart(round, i int, pids []uint32) func() {
	dir := os.Getenv("EDA_ROWCOST_PERF")
	if dir == "" || round != 0 {
		return func() {}
	}
	ps := make([]string, len(pids))
	for j, p := range pids {
		ps[j] = strconv.Itoa(int(p))
	}
	cmd := exec.Command("perf", "record", "-q", "-g", "-o", fmt.Sprintf("%s/%d.data", dir, i), "-p", strings.Join(ps, ","))
	if err := cmd.Start(); err != nil {
		return func() {}
	}
	time.Sleep(300 * time.Millisecond) // let perf attach
	return func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
}
