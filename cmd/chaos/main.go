package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	edaaws "github.com/edaproject/eda/transport/aws"
)

// ErrInvalidConfig: a flag is out of range.
var ErrInvalidConfig = errors.New("chaos: invalid config")

// errViolations: the checker found broken invariants.
var errViolations = errors.New("chaos: invariants violated")

// config is the run, from the flags.
type config struct {
	Orders    int           // orders over all modes
	Modes     []string      // "standard", "fifo"
	Seed      uint64        // fault schedule and orders; 0: drawn and printed
	Clients   int           // concurrent HTTP clients
	Customers int           // customers the orders are spread over
	Poison    int           // poison messages injected per mode
	Backlog   int           // accepted orders not yet final at most
	Drain     time.Duration // how long the system may take to finish after the load
	GiveUp    time.Duration // how long a client retries one order
	PG        string        // Postgres the services use (through the proxies)
	Root      string        // the repository (the example is built from it)
	Results   string        // markdown file to write the report to
	Keep      bool          // keep the schemas, logs and emulator data
	NoFaults  bool          // no nemesis (a baseline)
	Kinds     []string      // fault kinds played (default all)
	Verbose   bool          // the services log what they do (-v)
	Timeout   time.Duration // the whole run
}

// Defaults.
const (
	DefaultClients   = 16
	DefaultCustomers = 256
	DefaultPoison    = 3
	DefaultBacklog   = 200
	DefaultDrain     = 5 * time.Minute
	DefaultGiveUp    = 2 * time.Minute
	DefaultPG        = "postgres://postgres@127.0.0.1:5432/test"
)

// Validate reports every problem with c, joined.
func (c config) Validate() error {
	var errs []error
	if c.Orders < 1 {
		errs = append(errs, fmt.Errorf("%w: -orders %d: want at least 1", ErrInvalidConfig, c.Orders))
	}
	if len(c.Modes) == 0 {
		errs = append(errs, fmt.Errorf("%w: -modes: want standard, fifo or both", ErrInvalidConfig))
	}
	for _, m := range c.Modes {
		if m != "standard" && m != "fifo" {
			errs = append(errs, fmt.Errorf("%w: -modes: unknown mode %q (standard, fifo)", ErrInvalidConfig, m))
		}
	}
	if c.Clients < 1 || c.Customers < c.Clients {
		errs = append(errs, fmt.Errorf("%w: -clients %d, -customers %d: want 1 <= clients <= customers", ErrInvalidConfig, c.Clients, c.Customers))
	}
	for _, k := range c.Kinds {
		known := false
		for _, l := range lanes {
			for _, w := range laneKinds[l] {
				known = known || w.kind == k
			}
		}
		if !known {
			errs = append(errs, fmt.Errorf("%w: -faults: unknown kind %q", ErrInvalidConfig, k))
		}
	}
	if c.Backlog < 1 {
		errs = append(errs, fmt.Errorf("%w: -backlog %d: want at least 1", ErrInvalidConfig, c.Backlog))
	}
	if c.Poison < 0 {
		errs = append(errs, fmt.Errorf("%w: -poison %d: want 0 or more", ErrInvalidConfig, c.Poison))
	}
	if c.Drain <= 0 || c.GiveUp <= 0 || c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("%w: -drain, -give-up and -timeout must be positive", ErrInvalidConfig))
	}
	return errors.Join(errs...)
}

func main() {
	c := config{}
	var modes string
	flag.IntVar(&c.Orders, "orders", 3000, "orders to place, split over the modes")
	flag.StringVar(&modes, "modes", "standard,fifo", "queue modes, run one after the other: standard, fifo")
	flag.Uint64Var(&c.Seed, "seed", 0, "seed of the orders and the fault schedule (0: draw one; it is printed)")
	flag.IntVar(&c.Clients, "clients", DefaultClients, "concurrent HTTP clients")
	flag.IntVar(&c.Customers, "customers", DefaultCustomers, "customers the orders are spread over")
	flag.IntVar(&c.Backlog, "backlog", DefaultBacklog, "accepted orders not yet final at most: clients wait while more are open")
	flag.IntVar(&c.Poison, "poison", DefaultPoison, "undecodable messages injected per mode")
	flag.DurationVar(&c.Drain, "drain", DefaultDrain, "how long the system may take to finish after the load")
	flag.DurationVar(&c.GiveUp, "give-up", DefaultGiveUp, "how long a client retries one order")
	flag.StringVar(&c.PG, "pg", DefaultPG, "Postgres (the services reach it through Toxiproxy)")
	flag.StringVar(&c.Root, "root", ".", "the repository root (examples/orders is built from it; .tools/emulator holds fauxqs)")
	flag.StringVar(&c.Results, "results", "", "write the report as markdown to this file")
	flag.BoolVar(&c.Keep, "keep", false, "keep the schemas, the logs and the emulator's data")
	var kinds string
	flag.StringVar(&kinds, "faults", "", "play only these fault kinds, comma-separated (kill, pg-terminate, emulator-pause, emulator-restart, cut, latency, stall, bandwidth, duplicates); the others of the schedule are skipped")
	flag.BoolVar(&c.Verbose, "service-log", false, "run the services with -v (their logs are in the run's directory)")
	flag.BoolVar(&c.NoFaults, "no-faults", false, "run without the nemesis (a baseline)")
	flag.DurationVar(&c.Timeout, "timeout", 4*time.Hour, "the whole run")
	flag.Parse()
	for _, m := range strings.Split(modes, ",") {
		if m = strings.TrimSpace(m); m != "" {
			c.Modes = append(c.Modes, m)
		}
	}
	// Toxiproxy's toxics log through zerolog's global logger.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	for _, k := range strings.Split(kinds, ",") {
		if k = strings.TrimSpace(k); k != "" {
			c.Kinds = append(c.Kinds, k)
		}
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64() >> 12
	}
	if err := c.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	err := run(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	runID := "x" + strings.ReplaceAll(uuid.NewString()[:6], "-", "")
	dir, err := os.MkdirTemp("", "eda-chaos-")
	if err != nil {
		return err
	}
	fmt.Printf("chaos: seed %d, %d orders over %s, run %s, logs in %s\n", c.Seed, c.Orders, strings.Join(c.Modes, "+"), runID, dir)
	fmt.Printf("chaos: reproduce with: go run ./cmd/chaos -seed %d -orders %d -modes %s\n", c.Seed, c.Orders, strings.Join(c.Modes, ","))
	bin := filepath.Join(dir, "orders")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/orders")
	build.Dir = c.Root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./examples/orders: %v\n%s", err, out)
	}
	emu, err := newEmulator(c.Root, dir)
	if err != nil {
		return err
	}
	if err := emu.start(); err != nil {
		return err
	}
	defer emu.stop()
	px := newProxies()
	defer px.close()
	broker, sqsc, err := newBroker(emu.url())
	if err != nil {
		return err
	}
	defer broker.Close()

	var results []*result
	failed := false
	began := time.Now()
	for i, mode := range c.Modes {
		n := c.Orders / len(c.Modes)
		if i == len(c.Modes)-1 {
			n = c.Orders - n*(len(c.Modes)-1)
		}
		res, err := runPhase(ctx, c, i, mode, n, runID, dir, bin, emu, px, broker, sqsc)
		if res != nil {
			results = append(results, res)
			if len(res.Violations) > 0 {
				failed = true
			}
		}
		if err != nil {
			return err
		}
	}
	rep := report(c, results, time.Since(began))
	fmt.Print(rep)
	if c.Results != "" {
		if err := os.WriteFile(c.Results, []byte(rep), 0o644); err != nil {
			return err
		}
	}
	if failed {
		for _, r := range results {
			printFailure(r)
		}
		fmt.Printf("chaos: FAILED; logs kept in %s; reproduce with -seed %d -orders %d -modes %s\n", dir, c.Seed, c.Orders, strings.Join(c.Modes, ","))
		return errViolations
	}
	if !c.Keep {
		os.RemoveAll(dir)
	}
	fmt.Println("chaos: every invariant held")
	return nil
}

func runPhase(ctx context.Context, c config, index int, mode string, n int, runID, dir, bin string, emu *emulator, px *proxies, broker *edaaws.Transport, sqsc *sqs.Client) (*result, error) {
	tag := "s"
	if mode == "fifo" {
		tag = "f"
	}
	p := &phase{cfg: c, index: index, mode: mode, fifo: mode == "fifo", run: runID + tag,
		schema: "chaos_" + runID + "_" + tag, prefix: "chaos" + runID + tag + "-", emu: emu, px: px, broker: broker, sqs: sqsc,
		began: time.Now()}
	p.dir = filepath.Join(dir, mode)
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(c.PG)
	if err != nil {
		return nil, fmt.Errorf("-pg: %w", err)
	}
	pcfg.ConnConfig.RuntimeParams["search_path"] = p.schema
	pcfg.ConnConfig.RuntimeParams["application_name"] = "chaos_" + runID + "_harness"
	if p.admin, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, err
	}
	defer p.admin.Close()
	if err := p.admin.Ping(ctx); err != nil {
		return nil, fmt.Errorf("postgres at %s is not reachable (start it: scripts/postgres.sh): %w", c.PG, err)
	}
	p.orders = makeOrders(c.Seed+uint64(index), p.run, n, c.Customers)
	slots := []string{"inventory-1", "inventory-2", "notification-1", "notification-2", "orders-1", "orders-2"}
	fmt.Printf("\n== %s: %d orders, schema %s, prefix %s\n", mode, n, p.schema, p.prefix)
	fmt.Printf("fault schedule (seed %d, phase %d), first entries of each lane; the run draws on from the same stream:\n", c.Seed, index)
	if c.NoFaults {
		fmt.Println("  (none: -no-faults)")
	} else {
		for _, f := range preview(c.Seed, index, slots, 12) {
			fmt.Println("  " + f.String())
		}
	}
	var res *result
	defer func() {
		p.stopAll()
		switch {
		case res != nil && len(res.Violations) > 0:
			fmt.Printf("schema %s kept for the post-mortem (drop it with: DROP SCHEMA %s CASCADE)\n", p.schema, p.schema)
		case !c.Keep:
			p.cleanup(context.WithoutCancel(ctx))
		}
	}()
	if err := p.setup(ctx, bin); err != nil {
		return nil, err
	}
	if strings.Join(p.slots, ",") != strings.Join(slots, ",") {
		return nil, fmt.Errorf("internal: slots %v, preview drew for %v", p.slots, slots)
	}
	p.began = time.Now()
	res, err = p.execute(ctx)
	return res, err
}
