// Command e2ebench measures the orders flow end to end, on Postgres and the
// SNS/SQS emulator, built twice in one run: with eda, and from stock
// Watermill components (stock.go says which, and where each one's limits
// come from).
//
// The flow: POST /orders → the order row and its OrderCreated event in one
// transaction → the outbox relay → SNS topic "orders" → the "inventory"
// and "notification" queues → the inventory handler reserves stock and
// publishes StockReserved or StockReservationFailed (through the outbox, in
// its transaction) → SNS "inventory-events" → the "order-status" queue →
// the order-status handler sets the order's final state. Every handler's
// effects commit with its idempotency mark. An order is done when the
// order-status handler has committed its final state.
//
// An open-loop load generator offers each rate of -rates for -step: the
// requests go out on a fixed schedule whatever the system does, and each
// latency runs from the request's scheduled send time (not from when it was
// actually sent) to the commit of its final state, so that a slow system
// cannot hide its queueing delay (coordinated omission). The builds take
// turns at each rate. A build's step is sustained when every order was
// done within -drain after the step, the completion rate was at least 95%
// of the offered rate and p99 was within -p99-bound; a build stops at its
// first step that is not, after -retries more tries of it. Its saturation
// point is its highest sustained offered rate.
//
//	go run ./cmd/e2ebench                         # make bench-e2e
//	go run ./cmd/e2ebench -rates 25,50 -step 5s   # make bench-e2e-short
//
// -stages adds, per step, when orders reached each handler, the worst
// latency per second and the outbox's SNS publish calls; -cpuprofile and
// -emulator-pid (the emulator's CPU per order) say where the time goes.
//
// Each run uses its own Postgres schemas and topic and queue names (a
// random prefix) and removes them at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// account is the emulator's account id.
const account = "000000000000"

type config struct {
	dsn          string
	endpoint     string
	rates        []float64
	step         time.Duration
	drain        time.Duration
	p99Bound     time.Duration
	concurrency  int
	relayWorkers int
	stockWorkers int
	stockSchema  string
	relayPoll    time.Duration
	builds       []string
	emulatorPID  int
	stages       bool
	retries      int
	out          io.Writer
}

func main() {
	c := config{out: os.Stdout}
	flag.StringVar(&c.dsn, "dsn", envOr("EDA_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "Postgres DSN")
	flag.StringVar(&c.endpoint, "aws-endpoint", envOr("EDA_AWS_ENDPOINT", "http://127.0.0.1:4566"), "SNS/SQS emulator (scripts/emulator.sh up)")
	rates := flag.String("rates", "50,100,150,200,250,300,350,400,500,600,700,800,900,1000,1100,1200", "offered rates in orders/s, rising")
	flag.DurationVar(&c.step, "step", 15*time.Second, "how long each rate is offered")
	flag.DurationVar(&c.drain, "drain", 30*time.Second, "how long a step's orders may take to finish after the step")
	flag.DurationVar(&c.p99Bound, "p99-bound", time.Second, "a sustained step's p99 latency bound")
	flag.IntVar(&c.concurrency, "concurrency", 16, "messages in flight per queue, in both builds")
	flag.IntVar(&c.stockWorkers, "stock-workers", 2, "stock build: watermill-aws receive workers (ConsumeWorkers) per queue")
	flag.StringVar(&c.stockSchema, "stock-schema", "default", "stock build: watermill-sql schema of the outbox, queue (PostgreSQLQueueSchema) or default (DefaultPostgreSQLSchema)")
	flag.DurationVar(&c.relayPoll, "relay-poll", 0, "eda outbox relay PollInterval (0: its default)")
	flag.IntVar(&c.relayWorkers, "relay-workers", 1, "eda outbox relay workers")
	flag.IntVar(&c.retries, "retries", 1, "times a step that is not sustained is run again before the build stops (the machine is shared: a stall elsewhere can sink one step)")
	builds := flag.String("builds", "eda,stock", "builds to run")
	flag.IntVar(&c.emulatorPID, "emulator-pid", 0, "pid of the emulator process, to report its CPU time per order")
	flag.BoolVar(&c.stages, "stages", false, "also report when orders reach each handler (p50, p99 from the scheduled send)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the bench process to this file")
	flag.Parse()
	var err error
	if c.rates, err = parseRates(*rates); err != nil {
		log.Fatal(err)
	}
	c.builds = strings.Split(*builds, ",")
	if c.stockSchema != "queue" && c.stockSchema != "default" {
		log.Fatalf("-stock-schema %q: queue or default", c.stockSchema)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
	}
	err = run(context.Background(), c)
	pprof.StopCPUProfile()
	if err != nil {
		log.Fatal(err)
	}
}

func parseRates(s string) ([]float64, error) {
	var rates []float64
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("-rates: %q is not a positive number", f)
		}
		if len(rates) > 0 && r <= rates[len(rates)-1] {
			return nil, fmt.Errorf("-rates must rise: %v after %v", r, rates[len(rates)-1])
		}
		rates = append(rates, r)
	}
	return rates, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// newPrefix names this run's schemas, topics and queues.
func newPrefix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "e2eb" + hex.EncodeToString(b)
}

func awsConfig() awssdk.Config {
	return awssdk.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")}
}
