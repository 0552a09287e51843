// Command outboxbench measures the eda outbox against the stock Watermill
// outbox (watermill-sql v4 publisher on the caller's pgx transaction, wrapped
// by forwarder.NewPublisher, drained by forwarder.NewForwarder) on the same
// Postgres, with the same events and the same sink, in one run.
//
//	go run ./cmd/outboxbench -dsn postgres://postgres@127.0.0.1:5432/test
//
// Phases (-phases, comma separated):
//   - write: 8 writers (-writers) each run transactions that insert an order
//     row, for -duration per variant: bare insert, insert + eda outbox,
//     insert + stock outbox (DefaultPostgreSQLSchema and
//     PostgreSQLQueueSchema). Reports tx/s, p50 and p99 latency.
//   - relay: -drain events pre-written to each outbox are drained into a
//     no-op sink: the eda relay (1 and 4 workers) and the stock forwarder
//     (both schemas). Reports events/s.
//   - claim: the cost of one relay claim (lock 100 pending rows, publish to
//     a no-op sink, mark them) with 10^3 and with -claimrows published rows
//     in the table (two tables, their claims alternating), and behind a
//     pending backlog.
//   - rowcost (not in the default list): what the second row of a one-batch
//     transaction costs the Postgres backends (their CPU time per
//     transaction, from /proc, so Postgres must run on this host): a
//     2-column row, the outbox row, and the outbox row with one thing
//     changed each. EDA_ROWCOST_PERF=dir records the backends with perf
//     during the first round.
//
// Everything happens in a fresh schema, dropped at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"regexp"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsns "github.com/ThreeDotsLabs/watermill-aws/sns"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsmw "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssns "github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	smithymw "github.com/aws/smithy-go/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/memory"
)

// OrderPlaced is the benchmark's event.
type OrderPlaced struct {
	OrderID  int64  `json:"order_id"`
	Customer string `json:"customer"`
	Amount   int    `json:"amount"`
}

// EventName implements eda.Event.
func (OrderPlaced) EventName() string { return "bench.order_placed" }

// OrderingKey implements eda.Ordered.
func (e OrderPlaced) OrderingKey() string { return e.Customer }

type config struct {
	dsn          string
	writers      int
	duration     time.Duration
	drain        int
	claimRows    int
	phases       map[string]bool
	snsEndpoint  string
	claimPending int
	claimBacklog int
	snsEvents    int
	snsRounds    int            // interleaved slices of the sns phase; 0: 3
	snsOnly      *regexp.Regexp // sns variants to run; nil: all
	only         *regexp.Regexp // write variants to run; nil: all
	out          *os.File
}

func main() {
	var c config
	var phases string
	flag.StringVar(&c.dsn, "dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "Postgres DSN")
	flag.IntVar(&c.writers, "writers", 8, "concurrent writers")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "duration of each write variant")
	flag.IntVar(&c.drain, "drain", 20000, "events drained per relay variant")
	flag.IntVar(&c.claimRows, "claimrows", 1000000, "published rows in the large table of the claim phase")
	flag.StringVar(&phases, "phases", "write,relay,claim", "phases to run (write, relay, claim, sns, rowcost)")
	flag.StringVar(&c.snsEndpoint, "sns-endpoint", "http://127.0.0.1:4566", "SNS/SQS emulator for the sns phase (scripts/emulator.sh up)")
	flag.IntVar(&c.claimPending, "claimpending", 20000, "pending rows drained in the claim phase")
	flag.IntVar(&c.claimBacklog, "claimbacklog", 100000, "pending rows in front of them in the claim phase's backlog case")
	flag.IntVar(&c.snsEvents, "sns-events", 3000, "events relayed per variant in the sns phase")
	flag.IntVar(&c.snsRounds, "sns-rounds", 3, "interleaved slices of the sns phase (each variant relays sns-events/sns-rounds per slice)")
	flag.Func("sns-only", "run only the sns variants (relay, flood, stock forwarder) whose name matches this regexp", func(s string) (err error) {
		c.snsOnly, err = regexp.Compile(s)
		return err
	})
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the client to this file")
	flag.Func("only", "run only the write variants whose name matches this regexp (the ratios need them all)", func(s string) (err error) {
		c.only, err = regexp.Compile(s)
		return err
	})
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	c.phases = map[string]bool{}
	for _, p := range strings.Split(phases, ",") {
		c.phases[strings.TrimSpace(p)] = true
	}
	c.out = os.Stdout
	if err := run(context.Background(), c); err != nil {
		pprof.StopCPUProfile()
		log.Fatal(err)
	}
}

// Run is the whole benchmark; the smoke test calls it with small numbers.
func run(ctx context.Context, c config) error {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "outboxbench_" + hex.EncodeToString(b)
	pcfg, err := pgxpool.ParseConfig(c.dsn)
	if err != nil {
		return err
	}
	pcfg.MaxConns = int32(c.writers + 8)
	pcfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres at %s: %w (start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)", c.dsn, err)
	}
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+schema+`;
		CREATE TABLE `+schema+`.orders (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE `+schema+`.order_lines (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL);
		CREATE TABLE `+schema+`.order_lines_wide (id bigserial PRIMARY KEY, customer text NOT NULL, amount int NOT NULL, pad text NOT NULL)`); err != nil {
		return err
	}
	defer pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+schema+" CASCADE")

	tr, err := memory.New(memory.Config{})
	if err != nil {
		return err
	}
	defer tr.Close()
	app, err := eda.New(eda.Config{Transport: tr, Source: "outboxbench"})
	if err != nil {
		return err
	}
	if err := eda.Register[OrderPlaced](app, "orders"); err != nil {
		return err
	}
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: schema})
	if err != nil {
		return err
	}
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	stNoNotify, err := pgxstore.New(pool, pgxstore.Config{Schema: schema, DisableNotify: true})
	if err != nil {
		return err
	}
	b2 := &bench{c: c, pool: pool, app: app, store: st, schema: schema}
	fmt.Fprintf(c.out, "outboxbench: %d writers, schema %s, %s\n", c.writers, schema, time.Now().UTC().Format(time.RFC3339))
	for _, p := range []struct {
		name string
		run  func(context.Context) error
	}{
		{"write", func(ctx context.Context) error { return b2.writes(ctx, stNoNotify) }},
		{"relay", b2.relays},
		{"sns", b2.sns},
		{"claim", b2.claims},
		{"rowcost", b2.rowCost},
	} {
		if !c.phases[p.name] {
			continue
		}
		if err := b2.settle(ctx); err != nil {
			return err
		}
		if err := p.run(ctx); err != nil {
			return fmt.Errorf("%s phase: %w", p.name, err)
		}
	}
	return nil
}

// settle lets Postgres finish what earlier phases left it (dead rows,
// dirty buffers), so that it does not run during the next phase's
// measurement: a phase after the write phase otherwise shares the machine
// with the checkpoint of ~300k inserts.
func (b *bench) settle(ctx context.Context) error {
	rows, err := b.pool.Query(ctx, "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = $1", b.schema)
	if err != nil {
		return fmt.Errorf("settle: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("settle: %w", err)
	}
	if _, err := b.pool.Exec(ctx, "VACUUM ANALYZE "+strings.Join(tables, ", ")); err != nil {
		return fmt.Errorf("settle: %w", err)
	}
	if _, err := b.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" { // not allowed: the bench still runs, just noisier
			return fmt.Errorf("settle: %w", err)
		}
	}
	return nil
}

type bench struct {
	c      config
	pool   *pgxpool.Pool
	app    *eda.App
	store  *pgxstore.Store
	schema string
	seq    atomic.Int64
}

type stockSchema struct {
	name    string
	topic   string // forwarder topic: each schema gets its own table
	schema  wsql.SchemaAdapter
	offsets wsql.OffsetsAdapter
}

var stockSchemas = []stockSchema{
	{"DefaultPostgreSQLSchema", "forwarder", wsql.DefaultPostgreSQLSchema{}, wsql.DefaultPostgreSQLOffsetsAdapter{}},
	{"PostgreSQLQueueSchema", "forwarder_queue", wsql.PostgreSQLQueueSchema{}, wsql.PostgreSQLQueueOffsetsAdapter{}},
}

func (b *bench) event() OrderPlaced {
	n := b.seq.Add(1)
	return OrderPlaced{OrderID: n, Customer: fmt.Sprintf("customer-%d", n%500), Amount: int(n % 1000)}
}

// stockPublisher is the stock Watermill outbox write path on tx.
func stockPublisher(tx pgx.Tx, schema wsql.SchemaAdapter, topic string) (message.Publisher, error) {
	pub, err := wsql.NewPublisher(wsql.TxFromPgx(tx), wsql.PublisherConfig{SchemaAdapter: schema}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	return forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: topic}), nil
}

func (b *bench) initStock(ctx context.Context, schema wsql.SchemaAdapter, offsets wsql.OffsetsAdapter, topic string) error {
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(b.pool), wsql.SubscriberConfig{
		SchemaAdapter: schema, OffsetsAdapter: offsets, InitializeSchema: true,
	}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	defer sub.Close()
	return sub.SubscribeInitialize(topic)
}

func (b *bench) insertOrder(ctx context.Context, tx pgx.Tx, e OrderPlaced) error {
	_, err := tx.Exec(ctx, "INSERT INTO orders (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
	return err
}

type writeResult struct {
	lat      []time.Duration
	name     string
	txs      int
	perSec   float64
	p50, p99 time.Duration
}

func (b *bench) runWriters(ctx context.Context, name string, d time.Duration, fn func(ctx context.Context) error) (writeResult, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range b.c.writers {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := fn(ctx); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return writeResult{}, fmt.Errorf("%s: %w", name, firstErr)
	}
	slices.Sort(lat)
	r := writeResult{lat: lat, name: name, txs: len(lat), perSec: float64(len(lat)) / elapsed.Seconds()}
	if len(lat) > 0 {
		r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return r, nil
}

func (b *bench) writes(ctx context.Context, stNoNotify *pgxstore.Store) error {
	for _, s := range stockSchemas {
		if err := b.initStock(ctx, s.schema, s.offsets, s.topic); err != nil {
			return err
		}
	}
	inTx := func(fn func(ctx context.Context, tx pgx.Tx, e OrderPlaced) error) func(context.Context) error {
		return func(ctx context.Context) error {
			tx, err := b.pool.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(ctx)
			e := b.event()
			if err := b.insertOrder(ctx, tx, e); err != nil {
				return err
			}
			if err := fn(ctx, tx, e); err != nil {
				return err
			}
			return tx.Commit(ctx)
		}
	}
	bare := inTx(func(context.Context, pgx.Tx, OrderPlaced) error { return nil })
	edaWrite := func(st *pgxstore.Store) func(context.Context) error {
		return inTx(func(ctx context.Context, tx pgx.Tx, e OrderPlaced) error { return st.Write(ctx, tx, b.app, e) })
	}
	stock := func(schema wsql.SchemaAdapter, ftopic string) func(context.Context) error {
		return inTx(func(ctx context.Context, tx pgx.Tx, e OrderPlaced) error {
			pub, err := stockPublisher(tx, schema, ftopic)
			if err != nil {
				return err
			}
			topic, msg, err := b.app.NewMessage(ctx, e)
			if err != nil {
				return err
			}
			return pub.Publish(topic, msg)
		})
	}
	variants := []variant{
		{"bare", "bare insert (no outbox)", bare},
		{"write", "eda outbox (pgxstore, NOTIFY at most every 5ms)", edaWrite(b.store)},
		{"write-quiet", "eda outbox (pgxstore, DisableNotify)", edaWrite(stNoNotify)},
		// The floor for Write: the same transaction with the smallest
		// second row instead of the outbox record, one more round trip.
		{"write-floor", "bare insert + a 2-column row in BEGIN/.../COMMIT (Write's floor)", inTx(func(ctx context.Context, tx pgx.Tx, e OrderPlaced) error {
			_, err := tx.Exec(ctx, "INSERT INTO order_lines (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
			return err
		})},
		{"stock", "stock watermill-sql " + stockSchemas[0].name + " + forwarder", stock(stockSchemas[0].schema, stockSchemas[0].topic)},
		{"stock-queue", "stock watermill-sql " + stockSchemas[1].name + " + forwarder", stock(stockSchemas[1].schema, stockSchemas[1].topic)},
		{"bare-batch", "bare insert, one batch (implicit tx, 1 round trip)", func(ctx context.Context) error {
			e := b.event()
			bt := &pgx.Batch{}
			bt.Queue("INSERT INTO orders (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
			return b.pool.SendBatch(ctx, bt).Close()
		}},
		{"bare-begin", "bare insert via Store.Begin (BEGIN sent with it, 2 round trips)", func(ctx context.Context) error {
			return b.pipelined(ctx, false)
		}},
		{"begin", "eda outbox via Store.Begin (events sent with COMMIT, 2 round trips)", func(ctx context.Context) error {
			return b.pipelined(ctx, true)
		}},
		// The floor for any outbox written in the same round trip: the
		// order plus the smallest second row, in a second table.
		{"floor", "bare insert + a 2-column row in a 2nd table, one batch (floor)", func(ctx context.Context) error {
			e := b.event()
			bt := &pgx.Batch{}
			bt.Queue("INSERT INTO orders (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
			bt.Queue("INSERT INTO order_lines (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
			return b.pool.SendBatch(ctx, bt).Close()
		}},
		{"floor-wide", "floor with the 2nd row padded to the outbox row's size", func(ctx context.Context) error {
			e := b.event()
			bt := &pgx.Batch{}
			bt.Queue("INSERT INTO orders (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
			bt.Queue("INSERT INTO order_lines_wide (customer, amount, pad) VALUES ($1, $2, $3)", e.Customer, e.Amount, widePad)
			return b.pool.SendBatch(ctx, bt).Close()
		}},
		{"queue", "eda outbox via Store.Queue, one batch (implicit tx, 1 round trip)", func(ctx context.Context) error {
			e := b.event()
			bt := &pgx.Batch{}
			bt.Queue("INSERT INTO orders (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
			if err := b.store.Queue(ctx, bt, b.app, e); err != nil {
				return err
			}
			return b.pool.SendBatch(ctx, bt).Close()
		}},
		{"queue-quiet", "eda outbox via Store.Queue, DisableNotify", func(ctx context.Context) error {
			e := b.event()
			bt := &pgx.Batch{}
			bt.Queue("INSERT INTO orders (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount)
			if err := stNoNotify.Queue(ctx, bt, b.app, e); err != nil {
				return err
			}
			return b.pool.SendBatch(ctx, bt).Close()
		}},
	}
	if _, err := b.runWriters(ctx, "warm-up", time.Second, bare); err != nil {
		return err
	}
	// The variants take turns in short slices, so that load from elsewhere
	// on the machine hits them all alike.
	const rounds = 5
	fmt.Fprintf(b.c.out, "\n== insert+outbox transactions, %d writers, %s per variant in %d interleaved slices ==\n", b.c.writers, b.c.duration, rounds)
	fmt.Fprintf(b.c.out, "%-68s %8s %8s %9s %9s %9s\n", "variant", "tx", "tx/s", "p50", "p99", "CPU/tx")
	results := map[string]writeResult{}
	lats := map[string][]time.Duration{}
	elapsed := map[string]time.Duration{}
	cpu := map[string]time.Duration{}
	if b.c.only != nil {
		variants = slices.DeleteFunc(variants, func(v variant) bool { return !b.c.only.MatchString(v.name) })
	}
	for range rounds {
		for _, v := range variants {
			c0 := processCPU()
			t0 := time.Now()
			r, err := b.runWriters(ctx, v.name, b.c.duration/rounds, v.fn)
			if err != nil {
				return err
			}
			elapsed[v.key] += time.Since(t0)
			cpu[v.key] += processCPU() - c0
			lats[v.key] = append(lats[v.key], r.lat...)
		}
	}
	for _, v := range variants {
		lat := lats[v.key]
		slices.Sort(lat)
		r := writeResult{name: v.name, txs: len(lat), perSec: float64(len(lat)) / elapsed[v.key].Seconds()}
		if len(lat) > 0 {
			r.p50, r.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
		}
		results[v.key] = r
		fmt.Fprintf(b.c.out, "%-68s %8d %8.0f %9s %9s %9s\n", r.name, r.txs, r.perSec, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond),
			(cpu[v.key] / time.Duration(max(r.txs, 1))).Round(time.Microsecond))
	}
	fmt.Fprintln(b.c.out, "(CPU/tx: this process's CPU time, client side only)")
	ratios := func(label, key string, bare ...string) {
		eda, ok := results[key]
		_, ok1 := results["stock"]
		_, ok2 := results["stock-queue"]
		if !ok || !ok1 || !ok2 {
			return
		}
		fmt.Fprintf(b.c.out, "%-24s %.2fx best stock tx/s; p50", label, eda.perSec/max(results["stock"].perSec, results["stock-queue"].perSec))
		for _, k := range bare {
			if b2, ok := results[k]; ok {
				fmt.Fprintf(b.c.out, " %.2fx %s,", float64(eda.p50)/float64(b2.p50), b2.name[:strings.Index(b2.name, " (")])
			}
		}
		fmt.Fprintln(b.c.out)
	}
	ratios("eda Write in tx:", "write", "bare")
	ratios("eda Store.Begin:", "begin", "bare", "bare-begin")
	ratios("eda Store.Queue batch:", "queue", "bare", "bare-batch")
	if q, ok := results["queue"]; ok {
		if f, ok := results["floor"]; ok {
			fmt.Fprintf(b.c.out, "eda Store.Queue / floor:  %.2fx tx/s\n", q.perSec/f.perSec)
		}
	}
	fmt.Fprintf(b.c.out, "(targets: >= 1.5x stock tx/s, p50 <= 1.3x the same insert without outbox)\n")
	if q, f, w, bare := results["queue"], results["floor"], results["write"], results["bare"]; q.txs > 0 && f.txs > 0 && w.txs > 0 && bare.txs > 0 {
		fmt.Fprintf(b.c.out, "against the limits: Store.Queue / floor %.2fx tx/s (target >= 0.9x); Write p50 / bare insert p50 %.2fx (target <= 1.3x)\n",
			q.perSec/f.perSec, float64(w.p50)/float64(bare.p50))
	}
	if wf, bare := results["write-floor"], results["bare"]; wf.txs > 0 && bare.txs > 0 {
		fmt.Fprintf(b.c.out, "Write's floor (a 2-column row in its place) p50 / bare insert p50 %.2fx", float64(wf.p50)/float64(bare.p50))
		if w := results["write"]; w.txs > 0 {
			fmt.Fprintf(b.c.out, "; Write p50 / Write's floor p50 %.2fx", float64(w.p50)/float64(wf.p50))
		}
		fmt.Fprintln(b.c.out)
	}
	if fw, f := results["floor-wide"], results["floor"]; fw.txs > 0 && f.txs > 0 {
		fmt.Fprintf(b.c.out, "floor with a row of the outbox row's size / floor %.2fx tx/s\n", fw.perSec/f.perSec)
	}
	if qq, f := results["queue-quiet"], results["floor"]; qq.txs > 0 && f.txs > 0 {
		fmt.Fprintf(b.c.out, "Store.Queue (DisableNotify) / floor %.2fx tx/s\n", qq.perSec/f.perSec)
	}
	// Leave the outbox tables empty for the next phases.
	_, err := b.pool.Exec(ctx, "TRUNCATE "+strings.Join(b.store.Tables(), ", ")+`, orders, order_lines, order_lines_wide, watermill_forwarder, watermill_forwarder_queue`)
	return err
}

// forward drains the stock outbox table of s into out with Watermill's
// forwarder and returns how long sink took to count every message.
func (b *bench) forward(ctx context.Context, s stockSchema, out message.Publisher, sink *countingSink, timeout time.Duration) (time.Duration, error) {
	sub, err := wsql.NewSubscriber(wsql.BeginnerFromPgx(b.pool), wsql.SubscriberConfig{
		SchemaAdapter: s.schema, OffsetsAdapter: s.offsets, // no consumer group: PostgreSQLQueueSchema supports none
	}, watermill.NopLogger{})
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	fwd, err := forwarder.NewForwarder(sub, out, watermill.NopLogger{}, forwarder.Config{ForwarderTopic: s.topic})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	err = sink.wait(ctx, timeout)
	d := time.Since(start)
	_ = fwd.Close()
	<-done
	return d, err
}

// widePad makes a 2-column row as large as an outbox row (~530 bytes).
var widePad = strings.Repeat("x", 470)

type variant struct {
	key, name string
	fn        func(context.Context) error
}

// processCPU is the CPU time this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pipelined inserts an order through a pgxstore.Tx, with its event when
// withEvent: BEGIN goes with the insert, the event with COMMIT.
func (b *bench) pipelined(ctx context.Context, withEvent bool) error {
	tx, err := b.store.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	e := b.event()
	if _, err := tx.Exec(ctx, "INSERT INTO orders (customer, amount) VALUES ($1, $2)", e.Customer, e.Amount); err != nil {
		return err
	}
	if withEvent {
		if err := tx.Write(ctx, b.app, e); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// countingSink is the no-op sink: it counts and signals when want arrive.
type countingSink struct {
	n    atomic.Int64
	want int64
	done chan struct{}
	once sync.Once
}

func newSink(want int) *countingSink {
	return &countingSink{want: int64(want), done: make(chan struct{})}
}

func (s *countingSink) Publish(_ string, msgs ...*message.Message) error {
	if s.n.Add(int64(len(msgs))) >= s.want {
		s.once.Do(func() { close(s.done) })
	}
	return nil
}

func (s *countingSink) Close() error { return nil }

func (s *countingSink) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case <-s.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("sink got %d of %d within %s", s.n.Load(), s.want, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *bench) relays(ctx context.Context) error {
	n := b.c.drain
	fmt.Fprintf(b.c.out, "\n== relay %d pre-written events into a no-op sink ==\n", n)
	fmt.Fprintf(b.c.out, "%-68s %10s %12s\n", "variant", "time", "events/s")
	rates := map[string]float64{}
	stDelete, err := pgxstore.New(b.pool, pgxstore.Config{Schema: b.schema, DeletePublished: true})
	if err != nil {
		return err
	}
	for _, v := range []struct {
		name    string
		workers int
		batch   int
		store   *pgxstore.Store
	}{
		{"eda relay (1 worker, batch 200)", 1, 200, b.store},
		{"eda relay (defaults: 1 worker, batch 500)", 1, 0, b.store},
		{"eda relay (1 worker, batch 1000)", 1, 1000, b.store},
		{"eda relay (4 workers, batch 500)", 4, 500, b.store},
		{"eda relay (1 worker, batch 1000, DeletePublished)", 1, 1000, stDelete},
	} {
		if err := b.fillEda(ctx, n, "orders"); err != nil {
			return err
		}
		sink := newSink(n)
		r, err := outbox.NewRelay(outbox.RelayConfig{Store: v.store, Publisher: sink, Workers: v.workers, BatchSize: v.batch})
		if err != nil {
			return err
		}
		rctx, cancel := context.WithCancel(ctx)
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		err = sink.wait(ctx, 3*time.Minute)
		d := time.Since(start)
		cancel()
		<-done
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		rates[v.name] = float64(n) / d.Seconds()
		fmt.Fprintf(b.c.out, "%-68s %10s %12.0f\n", v.name, d.Round(time.Millisecond), rates[v.name])
	}
	for _, s := range stockSchemas {
		if err := b.initStock(ctx, s.schema, s.offsets, s.topic); err != nil {
			return err
		}
		if _, err := b.pool.Exec(ctx, "TRUNCATE watermill_"+s.topic); err != nil {
			return err
		}
		if err := b.fillStock(ctx, n, s.schema, s.topic, "orders"); err != nil {
			return err
		}
		sink := newSink(n)
		d, err := b.forward(ctx, s, sink, sink, 3*time.Minute)
		if err != nil {
			return fmt.Errorf("stock %s: %w", s.name, err)
		}
		name := "stock forwarder, " + s.name
		rates[name] = float64(n) / d.Seconds()
		fmt.Fprintf(b.c.out, "%-68s %10s %12.0f\n", name, d.Round(time.Millisecond), rates[name])
	}
	bestStock := max(rates["stock forwarder, DefaultPostgreSQLSchema"], rates["stock forwarder, PostgreSQLQueueSchema"])
	fmt.Fprintf(b.c.out, "eda relay / best stock forwarder: batch 200 %.2fx, defaults %.2fx, batch 1000 %.2fx, 4 workers %.2fx, DeletePublished %.2fx (target >= 2x)\n",
		rates["eda relay (1 worker, batch 200)"]/bestStock, rates["eda relay (defaults: 1 worker, batch 500)"]/bestStock, rates["eda relay (1 worker, batch 1000)"]/bestStock,
		rates["eda relay (4 workers, batch 500)"]/bestStock, rates["eda relay (1 worker, batch 1000, DeletePublished)"]/bestStock)
	return nil
}

func (b *bench) claims(ctx context.Context) error {
	fmt.Fprintf(b.c.out, "\n== claim cost (lock 100 pending rows, publish to a no-op sink, mark published) ==\n")
	// Published history must not slow claiming. The two tables, one with
	// 10^3 published rows and one with -claimrows, are filled, vacuumed and
	// checkpointed first; then their claims alternate, so that load from
	// elsewhere on the machine and Postgres's own background work hit both
	// alike.
	const batch = 100
	pending := b.c.claimPending
	type side struct {
		published int
		st        *pgxstore.Store
		sink      *countingSink
		lat       []time.Duration
		fill      time.Duration
	}
	sides := []*side{{published: 1000}, {published: b.c.claimRows}}
	for i, sd := range sides {
		st, err := pgxstore.New(b.pool, pgxstore.Config{Schema: b.schema, Table: fmt.Sprintf("claim_%d", i), DisableNotify: true})
		if err != nil {
			return err
		}
		if err := st.Migrate(ctx); err != nil {
			return err
		}
		defer b.pool.Exec(context.WithoutCancel(ctx), "DROP TABLE "+strings.Join(st.Tables(), ", ")+", "+st.Table()+"_migrations")
		sd.st, sd.sink = st, newSink(pending)
		t0 := time.Now()
		if err := b.fillPublished(ctx, st, sd.published); err != nil {
			return err
		}
		sd.fill = time.Since(t0)
	}
	if err := b.settle(ctx); err != nil {
		return err
	}
	for _, sd := range sides {
		if err := b.fillStore(ctx, sd.st, pending, "orders"); err != nil {
			return err
		}
	}
	claim := func(sd *side) error {
		t := time.Now()
		n, err := sd.st.Claim(ctx, batch, noopPublish(sd.sink))
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("claim returned nothing with %d of %d published", sd.sink.n.Load(), pending)
		}
		sd.lat = append(sd.lat, time.Since(t))
		return nil
	}
	for i := 0; sides[0].sink.n.Load() < int64(pending) || sides[1].sink.n.Load() < int64(pending); i++ {
		// alternate which side goes first
		for j := range sides {
			sd := sides[(i+j)%len(sides)]
			if sd.sink.n.Load() < int64(pending) {
				if err := claim(sd); err != nil {
					return err
				}
			}
		}
	}
	report := func(published, backlog int, fill time.Duration, lat []time.Duration) time.Duration {
		slices.Sort(lat)
		var sum time.Duration
		for _, l := range lat {
			sum += l
		}
		fmt.Fprintf(b.c.out, "%8d published, %7d pending rows in the table (filled in %s): %d claims, mean %s, p50 %s, p99 %s per claim of %d\n",
			published, backlog+pending, fill.Round(time.Millisecond), len(lat), (sum / time.Duration(len(lat))).Round(time.Microsecond),
			lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), batch)
		return lat[len(lat)/2]
	}
	p50s := make([]time.Duration, len(sides))
	for i, sd := range sides {
		p50s[i] = report(sd.published, 0, sd.fill, sd.lat)
	}
	fmt.Fprintf(b.c.out, "claim p50 with %d / with 1000 published rows: %.2fx (target <= 1.1x; the two tables' claims alternate)\n", b.c.claimRows, float64(p50s[1])/float64(p50s[0]))

	// A pending backlog that the statistics do not know of (analyzed while
	// the table was empty, as after a drain): claims at the head of an
	// outage's backlog.
	if _, err := b.pool.Exec(ctx, "TRUNCATE "+strings.Join(b.store.Tables(), ", ")); err != nil {
		return err
	}
	if _, err := b.pool.Exec(ctx, "VACUUM ANALYZE "+strings.Join(b.store.Tables(), ", ")); err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := b.pool.Exec(ctx, `INSERT INTO `+b.store.Table()+` (event_id, topic, payload, metadata, ordering_key)
		SELECT gen_random_uuid()::text, 'orders', '{"order_id":1}'::bytea, '{"ce_type":"bench.order_placed"}'::jsonb, 'customer-' || (g % 500)
		FROM generate_series(1, $1) g`, b.c.claimBacklog); err != nil {
		return err
	}
	fill := time.Since(t0)
	if err := b.fillEda(ctx, pending, "orders"); err != nil {
		return err
	}
	bl := &side{sink: newSink(pending), st: b.store}
	for bl.sink.n.Load() < int64(pending) {
		if err := claim(bl); err != nil {
			return err
		}
	}
	report(0, b.c.claimBacklog, fill, bl.lat)
	return nil
}

// fillPublished writes n published rows into st's done table in one
// statement.
func (b *bench) fillPublished(ctx context.Context, st *pgxstore.Store, n int) error {
	_, err := b.pool.Exec(ctx, `INSERT INTO `+st.Table()+`_done (id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, state, attempts, last_error, published_at)
		SELECT nextval(pg_get_serial_sequence($2, 'id')), gen_random_uuid()::text, 'orders', '{"order_id":1}'::bytea, '{"ce_type":"bench.order_placed"}'::jsonb, 'customer-' || (g % 500), '', now(), 1, 1, '', now()
		FROM generate_series(1, $1) g`, n, st.Table())
	return err
}

// noopPublish is a claim's publish into sink: every record published.
func noopPublish(sink *countingSink) func(context.Context, []outbox.Record) []outbox.Result {
	return func(_ context.Context, recs []outbox.Record) []outbox.Result {
		res := make([]outbox.Result, len(recs))
		msgs := make([]*message.Message, len(recs))
		for i, r := range recs {
			res[i] = outbox.Result{Seq: r.Seq, Outcome: outbox.OutcomePublished}
			msgs[i] = r.Message()
		}
		_ = sink.Publish("orders", msgs...)
		return res
	}
}

// sns relays events into SNS on the emulator: the eda relay through the
// eda AWS transport (PublishBatch) against the stock forwarder through
// watermill-aws's SNS publisher. A queue is subscribed to the topic in both
// cases.
func (b *bench) sns(ctx context.Context) error {
	n := b.c.snsEvents
	awsCfg := awssdk.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")}
	// Every PublishBatch, the relay's (through the transport) and the
	// flood's (the same SNS client), is timed on the wire side of the SDK.
	calls := &callTimer{}
	awsCfg.APIOptions = append(awsCfg.APIOptions, calls.install)
	const account = "000000000000"
	tr, err := edaaws.New(edaaws.Config{AWS: awsCfg, Endpoint: b.c.snsEndpoint, AutoCreate: true, AccountID: account, PublishConcurrency: 16}.ForFauxqs())
	if err != nil {
		return err
	}
	defer tr.Close()
	topic := "outboxbench-" + b.schema[len("outboxbench_"):]
	if err := tr.Declare(ctx, transport.Queue{Name: topic + "-q", Topics: []string{topic}}); err != nil {
		return fmt.Errorf("declare on the emulator at %s (start it with scripts/emulator.sh up): %w", b.c.snsEndpoint, err)
	}
	// Every variant starts with an empty queue: the emulator keeps what it
	// receives in memory and slows down as it grows.
	qurl, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: awssdk.String(topic + "-q")})
	if err != nil {
		return err
	}
	purge := func() error {
		_, err := tr.SQS().PurgeQueue(ctx, &sqs.PurgeQueueInput{QueueUrl: qurl.QueueUrl})
		return err
	}
	// Leave nothing behind: the emulator would keep the last variant's
	// messages, and a fuller emulator slows the next run down.
	defer func() {
		ctx := context.WithoutCancel(ctx)
		_, _ = tr.SQS().DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: qurl.QueueUrl})
		_, _ = tr.SNS().DeleteTopic(ctx, &awssns.DeleteTopicInput{TopicArn: awssdk.String("arn:aws:sns:" + awsCfg.Region + ":" + account + ":" + topic)})
	}()
	rounds := b.c.snsRounds
	if rounds <= 0 {
		rounds = 3
	}
	fmt.Fprintf(b.c.out, "\n== relay %d events into SNS on the emulator (%s), 1 queue subscribed, in %d interleaved slices ==\n", n, b.c.snsEndpoint, rounds)
	fmt.Fprintf(b.c.out, "%-68s %10s %12s\n", "variant", "time", "events/s")
	rates := map[string]float64{}
	// eda relays the events written for topic; the limit is the emulator's
	// own capacity for the same fan-out: the same messages, encoded as the
	// eda transport sends them, flooded with PublishBatch straight from the
	// SDK by g goroutines. The variants take turns in slices of n/rounds
	// events, so that the emulator's slowing down as it fills and load
	// from elsewhere on the machine hit them alike.
	arn := "arn:aws:sns:" + awsCfg.Region + ":" + account + ":" + topic
	relay := func(workers, batch int) func(context.Context, int) (time.Duration, error) {
		return func(ctx context.Context, n int) (time.Duration, error) {
			if _, err := b.pool.Exec(ctx, "TRUNCATE "+strings.Join(b.store.Tables(), ", ")); err != nil {
				return 0, err
			}
			if err := b.fillEda(ctx, n, topic); err != nil {
				return 0, err
			}
			counted := &countingPublisher{next: tr, sink: newSink(n)}
			r, err := outbox.NewRelay(outbox.RelayConfig{Store: b.store, Publisher: counted, Workers: workers, BatchSize: batch})
			if err != nil {
				return 0, err
			}
			rctx, cancel := context.WithCancel(ctx)
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- r.Run(rctx) }()
			err = counted.sink.wait(ctx, 5*time.Minute)
			d := time.Since(start)
			cancel()
			<-done
			return d, err
		}
	}
	raw := func(g int) func(context.Context, int) (time.Duration, error) {
		return func(ctx context.Context, n int) (time.Duration, error) {
			batches, err := b.floodBatches(ctx, n, arn)
			if err != nil {
				return 0, err
			}
			return flood(ctx, tr.SNS(), batches, g)
		}
	}
	type variant struct {
		name, group string
		run         func(context.Context, int) (time.Duration, error)
	}
	snsVariants := []variant{
		{"eda relay (1 worker, batch 200) -> eda aws transport", "eda", relay(1, 200)},
		{"eda relay (defaults: 1 worker, batch 500) -> eda aws transport", "eda", relay(1, 0)},
		{"eda relay (1 worker, batch 1000) -> eda aws transport", "eda", relay(1, 1000)},
		{"eda relay (2 workers, batch 1000) -> eda aws transport", "eda", relay(2, 1000)},
		{"eda relay (4 workers, batch 500) -> eda aws transport", "eda", relay(4, 500)},
		{"raw SDK PublishBatch flood, 8 goroutines", "flood", raw(8)},
		{"raw SDK PublishBatch flood, 16 goroutines", "flood", raw(16)},
		{"raw SDK PublishBatch flood, 32 goroutines", "flood", raw(32)},
	}
	if b.c.snsOnly != nil {
		snsVariants = slices.DeleteFunc(snsVariants, func(v variant) bool { return !b.c.snsOnly.MatchString(v.name) })
	}
	took := map[string]time.Duration{}
	busy := map[string]time.Duration{}
	lats := map[string][]time.Duration{}
	for round := range rounds {
		m := n / rounds
		if round == 0 {
			m += n % rounds
		}
		for _, v := range snsVariants {
			if err := purge(); err != nil {
				return err
			}
			calls.take()
			d, err := v.run(ctx, m)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			took[v.name] += d
			bz, l := calls.take()
			busy[v.name] += bz
			lats[v.name] = append(lats[v.name], l...)
		}
	}
	for _, v := range snsVariants {
		rates[v.name] = float64(n) / took[v.name].Seconds()
		rates[v.group] = max(rates[v.group], rates[v.name])
		fmt.Fprintf(b.c.out, "%-68s %10s %12.0f\n", v.name, took[v.name].Round(time.Millisecond), rates[v.name])
	}
	fmt.Fprintf(b.c.out, "PublishBatch calls per variant: count, p50, p99, and the share of the variant's time with at least one in flight\n")
	for _, v := range snsVariants {
		l := lats[v.name]
		if len(l) == 0 {
			continue
		}
		slices.Sort(l)
		fmt.Fprintf(b.c.out, "  %-66s %6d %9s %9s %5.1f%%\n", v.name, len(l), l[len(l)/2].Round(10*time.Microsecond), l[len(l)*99/100].Round(10*time.Microsecond),
			100*busy[v.name].Seconds()/took[v.name].Seconds())
	}

	// stock: forwarder -> watermill-aws SNS publisher.
	const stockName = "stock forwarder (DefaultPostgreSQLSchema) -> watermill-aws SNS publisher"
	if b.c.snsOnly != nil && !b.c.snsOnly.MatchString(stockName) {
		fmt.Fprintf(b.c.out, "best eda relay / best raw SDK flood into SNS: %.2fx (target >= 0.8x)\n", rates["eda"]/rates["flood"])
		return nil
	}
	s := stockSchemas[0]
	if err := b.initStock(ctx, s.schema, s.offsets, s.topic); err != nil {
		return err
	}
	if _, err := b.pool.Exec(ctx, "TRUNCATE watermill_"+s.topic); err != nil {
		return err
	}
	if err := purge(); err != nil {
		return err
	}
	if err := b.fillStock(ctx, n, s.schema, s.topic, topic); err != nil {
		return err
	}
	resolver, err := wsns.NewGenerateArnTopicResolver(account, awsCfg.Region)
	if err != nil {
		return err
	}
	ep := b.c.snsEndpoint
	snsPub, err := wsns.NewPublisher(wsns.PublisherConfig{
		AWSConfig:     awsCfg,
		OptFns:        []func(*awssns.Options){func(o *awssns.Options) { o.BaseEndpoint = &ep }},
		TopicResolver: resolver,
		Marshaler:     topicArnMarshaler{},
	}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	stockOut := &countingPublisher{next: snsPub, sink: newSink(n)}
	d, err := b.forward(ctx, s, stockOut, stockOut.sink, 10*time.Minute)
	if err != nil {
		return fmt.Errorf("stock forwarder into SNS: %w", err)
	}
	rates["stock"] = float64(n) / d.Seconds()
	fmt.Fprintf(b.c.out, "%-68s %10s %12.0f\n", "stock forwarder ("+s.name+") -> watermill-aws SNS publisher", d.Round(time.Millisecond), rates["stock"])
	fmt.Fprintf(b.c.out, "best eda relay / stock forwarder into SNS: %.2fx (target >= 5x)\n", rates["eda"]/rates["stock"])
	fmt.Fprintf(b.c.out, "best eda relay / best raw SDK flood into SNS: %.2fx (target >= 0.8x)\n", rates["eda"]/rates["flood"])
	return nil
}

// floodBatches builds n events as PublishBatch inputs of 10 for the topic
// arn, in the eda transport's wire form with its default attributes: the
// body is the payload; ce_id, ce_source, ce_specversion, ce_type and
// ce_time are attributes; the rest of the metadata is one JSON object in
// eda_md. The messages are those the relay would publish (through an
// outbox record).
func (b *bench) floodBatches(ctx context.Context, n int, arn string) ([]*awssns.PublishBatchInput, error) {
	attrs := []string{"ce_id", "ce_source", "ce_specversion", "ce_type", "ce_time"}
	var out []*awssns.PublishBatchInput
	for i := 0; i < n; i += 10 {
		in := &awssns.PublishBatchInput{TopicArn: awssdk.String(arn)}
		for j := i; j < min(i+10, n); j++ {
			_, msg, err := b.app.NewMessage(ctx, b.event())
			if err != nil {
				return nil, err
			}
			rec, err := outbox.NewRecord("x", msg)
			if err != nil {
				return nil, err
			}
			msg = rec.Message()
			ma := map[string]snstypes.MessageAttributeValue{}
			rest := map[string]string{}
			for k, v := range msg.Metadata {
				if slices.Contains(attrs, k) {
					ma[k] = snstypes.MessageAttributeValue{DataType: awssdk.String("String"), StringValue: awssdk.String(v)}
				} else {
					rest[k] = v
				}
			}
			if len(rest) > 0 {
				js, err := json.Marshal(rest)
				if err != nil {
					return nil, err
				}
				ma["eda_md"] = snstypes.MessageAttributeValue{DataType: awssdk.String("String"), StringValue: awssdk.String(string(js))}
			}
			in.PublishBatchRequestEntries = append(in.PublishBatchRequestEntries, snstypes.PublishBatchRequestEntry{
				Id: awssdk.String(strconv.Itoa(j - i)), Message: awssdk.String(string(msg.Payload)), MessageAttributes: ma,
			})
		}
		out = append(out, in)
	}
	return out, nil
}

// flood sends batches with g goroutines and returns how long it took.
func flood(ctx context.Context, client *awssns.Client, batches []*awssns.PublishBatchInput, g int) (time.Duration, error) {
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	var wg sync.WaitGroup
	for range g {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(batches) {
					return
				}
				res, err := client.PublishBatch(ctx, batches[i])
				if err == nil && len(res.Failed) > 0 {
					err = fmt.Errorf("PublishBatch: %d failed: %s", len(res.Failed), awssdk.ToString(res.Failed[0].Message))
				}
				if err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), firstErr
}

// callTimer times SNS PublishBatch calls (an SDK finalize middleware, after
// signing and retries: one attempt on the wire) and how long at least one
// was in flight.
type callTimer struct {
	mu        sync.Mutex
	inflight  int
	busySince time.Time
	busy      time.Duration
	lat       []time.Duration
}

func (c *callTimer) install(st *smithymw.Stack) error {
	return st.Finalize.Add(smithymw.FinalizeMiddlewareFunc("outboxbench-call-timer",
		func(ctx context.Context, in smithymw.FinalizeInput, next smithymw.FinalizeHandler) (smithymw.FinalizeOutput, smithymw.Metadata, error) {
			if awsmw.GetOperationName(ctx) != "PublishBatch" {
				return next.HandleFinalize(ctx, in)
			}
			t0 := c.start()
			defer c.end(t0)
			return next.HandleFinalize(ctx, in)
		}), smithymw.After)
}

func (c *callTimer) start() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.inflight == 0 {
		c.busySince = now
	}
	c.inflight++
	return now
}

func (c *callTimer) end(t0 time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.inflight--
	if c.inflight == 0 {
		c.busy += now.Sub(c.busySince)
	}
	c.lat = append(c.lat, now.Sub(t0))
}

// take returns the busy time and the call latencies since the last take.
func (c *callTimer) take() (time.Duration, []time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, l := c.busy, c.lat
	c.busy, c.lat = 0, nil
	return b, l
}

// countingPublisher forwards to next and counts what next accepted.
type countingPublisher struct {
	next message.Publisher
	sink *countingSink
}

func (p *countingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.next.Publish(topic, msgs...); err != nil {
		return err
	}
	return p.sink.Publish(topic, msgs...)
}

func (p *countingPublisher) Close() error { return nil }

func (b *bench) fillEda(ctx context.Context, n int, topic string) error {
	return b.fillStore(ctx, b.store, n, topic)
}

// fillStore writes n events for topic into st, 100 per transaction.
func (b *bench) fillStore(ctx context.Context, st *pgxstore.Store, n int, topic string) error {
	for i := 0; i < n; i += 100 {
		var recs []outbox.Record
		for j := i; j < min(i+100, n); j++ {
			_, msg, err := b.app.NewMessage(ctx, b.event())
			if err != nil {
				return err
			}
			rec, err := outbox.NewRecord(topic, msg)
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		if err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { return st.WriteRecords(ctx, tx, recs...) }); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) fillStock(ctx context.Context, n int, schema wsql.SchemaAdapter, ftopic, topic string) error {
	for i := 0; i < n; i += 100 {
		err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			pub, err := stockPublisher(tx, schema, ftopic)
			if err != nil {
				return err
			}
			msgs := make([]*message.Message, 0, 100)
			for j := i; j < min(i+100, n); j++ {
				_, msg, err := b.app.NewMessage(ctx, b.event())
				if err != nil {
					return err
				}
				msgs = append(msgs, msg)
			}
			return pub.Publish(topic, msgs...)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// topicArnMarshaler is watermill-aws's default marshaler with the ARN sent
// as TopicArn instead of TargetArn: the emulator (fauxqs) requires TopicArn
// (AWS accepts either). Nothing else changes.
type topicArnMarshaler struct {
	wsns.DefaultMarshalerUnmarshaler
}

func (m topicArnMarshaler) Marshal(arn wsns.TopicArn, msg *message.Message) *awssns.PublishInput {
	in := m.DefaultMarshalerUnmarshaler.Marshal(arn, msg)
	in.TopicArn, in.TargetArn = in.TargetArn, nil
	return in
}
