// Command orders runs the orders system: an order service takes orders over
// HTTP and writes each order and its OrderCreated event in one transaction
// (outbox); a relay publishes the event to the "orders" topic, which fans out
// to the "inventory" and "notification" queues. The inventory service
// reserves stock (or rejects the order) and publishes the outcome, which the
// order service turns into the order's final state. Every consumer runs with
// retries, a same-transaction inbox and a poison queue.
//
// The poison queue and the queues' dead-letter queues belong to the
// operator: the example reads them for its summary (what they hold, with the
// reasons) and never acknowledges them, so a poisoned message stays in the
// broker until someone inspects and redrives it with edactl dlq show and
// edactl dlq redrive.
//
// With no flags it runs all three services in one process on an embedded
// SQLite database and the in-memory transport, places a demo batch of orders
// over HTTP, shows progress and prints a summary:
//
//	go run ./examples/orders
//
// The same code runs on Postgres and SNS/SQS:
//
//	go run ./examples/orders -db postgres://postgres@127.0.0.1:5432/test -transport postgres
//	go run ./examples/orders -transport aws -aws-endpoint http://127.0.0.1:4566   # scripts/emulator.sh up
//
// and as separate processes, one per service (-role orders|inventory|
// notification) sharing a Postgres or SNS/SQS transport. Start the consumers
// first (or apply the topology with edactl): a topic delivers only to the
// queues subscribed when a message is published, as SNS does.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/edaproject/eda/middleware"
)

func main() {
	o := options{}
	var orders int
	var serve, verbose bool
	var timeout time.Duration
	flag.StringVar(&o.DB, "db", os.Getenv("EDA_ORDERS_DB"), "database: a SQLite file path, or a postgres:// URL (default: a new SQLite file in a temp dir)")
	flag.StringVar(&o.Transport, "transport", envOr("EDA_ORDERS_TRANSPORT", "memory"), "transport: memory, postgres or aws")
	flag.StringVar(&o.TransportDB, "transport-db", os.Getenv("EDA_ORDERS_TRANSPORT_DB"), "postgres transport DSN (default: -db when it is Postgres)")
	flag.StringVar(&o.AWSEndpoint, "aws-endpoint", os.Getenv("EDA_AWS_ENDPOINT"), "SNS/SQS endpoint override, e.g. the emulator's http://127.0.0.1:4566; empty: AWS from the standard config chain")
	flag.StringVar(&o.Role, "role", "all", "which service this process runs: all, orders, inventory or notification")
	flag.StringVar(&o.Addr, "addr", "", "HTTP address of the order service (default 127.0.0.1:8080 with -serve, else a free port)")
	autoCreate := flag.Bool("autocreate", true, "aws: create the topics, queues and subscriptions; false: only verify them (apply the topology first with edactl topology apply, as in production)")
	flag.BoolVar(&o.FIFO, "fifo", false, "FIFO queues: each customer's orders are handled in order")
	flag.StringVar(&o.Schema, "schema", "eda_orders", "Postgres schema of the services' tables and outbox (the transport uses <schema>_transport)")
	flag.StringVar(&o.Prefix, "prefix", "", "prefix of every topic and queue name (environments sharing a broker)")
	flag.IntVar(&orders, "orders", 40, "demo orders to place (orders role); 0 places none")
	flag.BoolVar(&serve, "serve", false, "keep serving HTTP after the demo, until interrupted")
	flag.BoolVar(&verbose, "v", false, "log what the services do")
	flag.DurationVar(&timeout, "timeout", 2*time.Minute, "how long the demo may take")
	flag.DurationVar(&o.MaxOutboxLag, "max-outbox-lag", defaultMaxOutboxLag, "readiness (/readyz) fails while the oldest unpublished outbox record is older")
	flag.Parse()
	o.NoAutoCreate = !*autoCreate
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
		if serve {
			o.Addr = "127.0.0.1:8080"
		}
	}
	if verbose {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, orders, serve, timeout, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, orders int, serve bool, timeout time.Duration, out io.Writer) error {
	if o.DB == "" {
		dir, err := os.MkdirTemp("", "eda-orders-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.DB = filepath.Join(dir, "orders.db")
	}
	o.MaxDelivery, o.Visibility = 3, 30*time.Second
	o.Redelivery = &middleware.RedeliveryConfig{} // the default schedule: 1m, 2m... then the poison queue
	s, err := start(ctx, o)
	if err != nil {
		return err
	}
	defer s.stop()
	fmt.Fprintf(out, "orders example: role %s, db %s, transport %s, fifo %v\n", o.Role, redact(o.DB), o.Transport, o.FIFO)
	if o.has("orders") {
		fmt.Fprintf(out, "order service on http://%s (POST /orders, GET /orders/{id}; /healthz, /readyz, /metrics)\n", s.addr)
		if orders > 0 {
			dctx, cancel := context.WithTimeout(ctx, timeout)
			sum, err := s.demo(dctx, orders, out)
			cancel()
			if sum != nil {
				sum.print(out)
			}
			if err != nil {
				return err
			}
		}
	}
	if serve || !o.has("orders") {
		fmt.Fprintln(out, "serving; Ctrl-C stops")
		<-ctx.Done()
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
