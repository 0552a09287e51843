package postgres_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// sideStats counts what one side of a benchmark costs: its own pool, whose
// connections carry a unique application_name (so their backends, and the
// listener's, can be found in pg_stat_activity) and a tracer that counts
// round trips and statements.
type sideStats struct {
	app        string
	pool       *pgxpool.Pool
	roundTrips atomic.Int64
	statements atomic.Int64

	backend, client time.Duration // summed over measured slices
	wal             int64         // bytes, the whole server's (noisy if others write)
	trips, stmts    int64
}

func (s *sideStats) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	s.roundTrips.Add(1) // queries in a batch are not traced here
	s.statements.Add(1)
	return ctx
}
func (s *sideStats) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (s *sideStats) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	s.roundTrips.Add(1)
	return ctx
}
func (s *sideStats) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	s.statements.Add(1)
}
func (s *sideStats) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// benchPool returns a pool of its own for one side of a benchmark, on the
// run's migrated schema.
func benchPool(b *testing.B, side string) (*sideStats, string) {
	b.Helper()
	_, schema := testPool(b)
	cfg, err := pgxpool.ParseConfig(testDSN())
	if err != nil {
		b.Fatal(err)
	}
	s := &sideStats{app: "edabench_" + side + "_" + randomHex(4)}
	cfg.ConnConfig.RuntimeParams["application_name"] = s.app
	cfg.ConnConfig.Tracer = s
	s.pool, err = pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.pool.Close)
	return s, schema
}

type snapshot struct {
	backend map[int]time.Duration
	client  time.Duration
	lsn     string
	trips   int64
	stmts   int64
}

func (s *sideStats) snap(b *testing.B, admin *pgxpool.Pool) snapshot {
	ctx := context.Background()
	sn := snapshot{backend: map[int]time.Duration{}, trips: s.roundTrips.Load(), stmts: s.statements.Load()}
	rows, err := admin.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, s.app)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	for _, pid := range pids {
		sn.backend[int(pid)] = schedTime(int(pid))
	}
	if err := admin.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&sn.lsn); err != nil {
		b.Fatal(err)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	sn.client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return sn
}

// add accumulates the difference between two snapshots.
func (s *sideStats) add(b *testing.B, admin *pgxpool.Pool, from, to snapshot) {
	for pid, t := range to.backend {
		s.backend += t - from.backend[pid] // a backend that started during the slice counts whole
	}
	s.client += to.client - from.client
	s.trips += to.trips - from.trips
	s.stmts += to.stmts - from.stmts
	var d int64
	if err := admin.QueryRow(context.Background(), `SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint`, to.lsn, from.lsn).Scan(&d); err != nil {
		b.Fatal(err)
	}
	s.wal += d
}

func (s *sideStats) report(b *testing.B, side string, n int) {
	f := float64(n)
	b.ReportMetric(float64(s.backend.Nanoseconds())/1e3/f, side+"-be-us/msg")
	b.ReportMetric(float64(s.client.Nanoseconds())/1e3/f, side+"-go-us/msg")
	b.ReportMetric(float64(s.wal)/f, side+"-wal-B/msg")
	b.ReportMetric(float64(s.trips)/f, side+"-rt/msg")
	b.ReportMetric(float64(s.stmts)/f, side+"-stmt/msg")
}

// schedTime is the CPU time a process has run (/proc/pid/schedstat, ns).
func schedTime(pid int) time.Duration {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/schedstat")
	if err != nil {
		return 0
	}
	ns, _ := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
	return time.Duration(ns)
}
