package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/middleware/inbox/sqlstore"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/memory"
	"github.com/edaproject/eda/transport/postgres"
)

// options select what runs and on what.
type options struct {
	DB          string // SQLite file path (default: a temp file) or postgres:// URL
	Transport   string // memory | postgres | aws
	TransportDB string // postgres transport DSN (default: DB when it is Postgres)
	AWSEndpoint string // SNS/SQS endpoint override (the emulator); empty = AWS
	Role        string // all | orders | inventory | notification
	Addr        string // HTTP listen address of the order service
	FIFO        bool   // FIFO queues: a customer's orders in order
	Prefix      string // prefix of topic and queue names (tests isolate runs with it)
	Schema      string // Postgres schema of the services' tables and outbox; the transport uses Schema+"_transport"
	// WrapPublisher, when set, wraps the publisher the outbox relay
	// publishes through (the tests inject duplicates and outages with it).
	WrapPublisher func(message.Publisher) message.Publisher
	// NoRelay runs no outbox relay in this process: another process drains
	// the shared outbox (and needs publish rights on every topic).
	NoRelay bool
	// NoAutoCreate runs the AWS transport with AutoCreate off: the topology
	// was applied beforehand (edactl topology apply), as in production.
	NoAutoCreate bool
	// AWSConfig, when set, edits the SDK configuration of the AWS transport
	// (the tests record its calls with it).
	AWSConfig   func(*awssdk.Config)
	Logger      *slog.Logger // nil: quiet
	MaxDelivery int          // deliveries before a failing message is poisoned
	// Redelivery delays the redelivery of a message whose handler failed
	// (nil: at once); main sets the default schedule, which rides out a
	// 2-minute outage within MaxDelivery 3.
	Redelivery *middleware.RedeliveryConfig
	Visibility time.Duration // queue visibility timeout

	MaxOutboxLag  time.Duration // readiness fails over this outbox lag; default defaultMaxOutboxLag (ops.go)
	DepthInterval time.Duration // how often /metrics' queue depths are read; default defaultDepthInterval
}

func (o options) has(role string) bool { return o.Role == "all" || o.Role == role }

// system is the running orders system (or one service of it).
type system struct {
	opts  options
	db    *db
	tr    transport.Transport
	app   *eda.App
	relay *outbox.Relay
	dead  *deadLetters
	addr  string // where the order service listens
	run   string // the demo's run id, prefix of its customer ids

	orders *orderService

	stop func() // stops everything started
}

func (o options) name(s string) string { return o.Prefix + s }

// start opens the database, builds the transport, binds the handlers and
// starts the app, the outbox relay and the HTTP server.
func start(ctx context.Context, o options) (*system, error) {
	s := &system{opts: o}
	var closers []func()
	s.stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*system, error) { s.stop(); return nil, err }

	d, err := openDB(ctx, o.DB, o.Schema)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { d.Close() })
	s.db = d
	dialect := sqlstore.SQLite
	if d.postgres {
		dialect = sqlstore.Postgres
	}
	inbox, err := sqlstore.New(d.DB, sqlstore.Config{Dialect: dialect, Table: "inbox"})
	if err != nil {
		return fail(err)
	}
	if err := d.migrate(ctx, inbox.Migrate); err != nil {
		return fail(err)
	}

	tr, err := newTransport(ctx, o, d)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { tr.Close() })
	s.tr = tr
	if s.dead, err = newDeadLetters(ctx, o, tr, d); err != nil {
		return fail(err)
	}
	closers = append(closers, s.dead.close)

	stack, err := middleware.Default(middleware.Config{
		Logger: o.Logger,
		Retry:  middleware.RetryConfig{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Redelivery: o.Redelivery},
		Poison: &middleware.PoisonConfig{Publisher: s.dead.publisher(tr), Topic: o.name(topicPoison), MaxDeliveries: o.MaxDelivery},
	})
	if err != nil {
		return fail(err)
	}
	app, err := eda.New(eda.Config{Transport: tr, Source: "orders-example/" + o.Role, Logger: o.Logger, Middleware: stack})
	if err != nil {
		return fail(err)
	}
	s.app = app
	s.orders = &orderService{db: d, app: app}
	inv := &inventoryService{db: d, app: app}
	notes := &notificationService{db: d}

	queue := func(name string) eda.QueueConfig {
		return eda.QueueConfig{Queue: transport.Queue{Name: o.name(name), FIFO: o.FIFO, VisibilityTimeout: o.Visibility,
			MaxReceiveCount: o.MaxDelivery + 2}, Concurrency: 2} // the redrive DLQ is a backstop behind the poison middleware
	}
	err = errors.Join(
		eda.Register[OrderCreated](app, o.name(topicOrders)),
		eda.Register[StockReserved](app, o.name(topicInventory)),
		eda.Register[StockReservationFailed](app, o.name(topicInventory)),
	)
	// With AutoCreate every process declares the poison queue, so the poison
	// topic is subscribed whichever starts first; without, the topology was
	// applied and only the order service, which reads it, verifies it.
	if o.has("orders") || !o.NoAutoCreate {
		err = errors.Join(err, app.DeclareQueue(middleware.PoisonQueue(o.name(queuePoison), o.name(topicPoison))))
	}
	if o.has("inventory") {
		err = errors.Join(err, app.DeclareQueue(queue(queueInventory)),
			eda.Handle(app, o.name(queueInventory), sqlstore.Tx(inbox, "inventory", inv.onOrderCreated)))
	}
	if o.has("notification") {
		err = errors.Join(err, app.DeclareQueue(queue(queueNotification)),
			eda.Handle(app, o.name(queueNotification), sqlstore.Tx(inbox, "notification", notes.onOrderCreated)))
	}
	if o.has("orders") {
		err = errors.Join(err, app.DeclareQueue(queue(queueOrderStatus)),
			eda.Handle(app, o.name(queueOrderStatus), sqlstore.Tx(inbox, "orders", s.orders.onReserved)),
			eda.Handle(app, o.name(queueOrderStatus), sqlstore.Tx(inbox, "orders", s.orders.onRejected)))
	}
	if err != nil {
		return fail(err)
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	closers = append(closers, func() { cancel(); wg.Wait() })
	appErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); appErr <- app.Run(runCtx) }()
	select {
	case <-app.Running():
	case err := <-appErr:
		return fail(fmt.Errorf("app: %w", err))
	}

	// Every service publishes through its outbox; one relay per process
	// drains it (several processes on one Postgres share the work).
	if !o.NoRelay {
		var pub message.Publisher = tr
		if o.WrapPublisher != nil {
			pub = o.WrapPublisher(tr)
		}
		relay, err := newRelay(d, pub, o.Logger)
		if err != nil {
			return fail(err)
		}
		s.relay = relay
		wg.Add(1)
		go func() { defer wg.Done(); _ = relay.Run(runCtx) }()
	}

	// The order service's process reports what the poison queue and the
	// DLQs hold, reading them without consuming: they belong to the
	// operator (edactl dlq list|show|redrive), and a message stays there
	// until an operator redrives it.
	if o.has("orders") {
		s.dead.watch(o.name(queuePoison), app.Queues())
	}

	if o.has("orders") {
		ln, err := net.Listen("tcp", o.Addr)
		if err != nil {
			return fail(err)
		}
		mux := http.NewServeMux()
		s.orders.routes(mux)
		if err := s.ops(runCtx, mux, &wg); err != nil {
			return fail(err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		s.addr = ln.Addr().String()
		wg.Add(1)
		go func() { defer wg.Done(); _ = srv.Serve(ln) }()
		closers = append(closers, func() {
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			_ = srv.Shutdown(sctx)
		})
	}
	return s, nil
}

// newRelay returns the relay that drains the outbox of d into pub.
func newRelay(d *db, pub message.Publisher, log *slog.Logger) (*outbox.Relay, error) {
	return outbox.NewRelay(outbox.RelayConfig{Store: d.outbox, Publisher: pub, Logger: log,
		PollInterval: 200 * time.Millisecond, MaxBackoff: 2 * time.Second})
}

func newTransport(ctx context.Context, o options, d *db) (transport.Transport, error) {
	switch o.Transport {
	case "memory":
		if o.Role != "all" {
			return nil, fmt.Errorf("-transport memory runs every service in one process: use -role all, or -transport postgres|aws")
		}
		return memory.New(memory.Config{})
	case "postgres":
		cfg := postgres.Config{DSN: o.TransportDB, Schema: o.Schema + "_transport"}
		if cfg.DSN == "" {
			if !d.postgres {
				return nil, fmt.Errorf("-transport postgres needs -transport-db postgres://... (or -db on Postgres)")
			}
			cfg.DSN, cfg.Pool = "", d.pool
		}
		if err := postgres.Migrate(ctx, cfg); err != nil {
			return nil, err
		}
		return postgres.New(ctx, cfg)
	case "aws":
		awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil {
			return nil, err
		}
		if o.AWSEndpoint != "" { // the emulator takes any credentials
			if awsCfg.Region == "" {
				awsCfg.Region = "us-east-1"
			}
			if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
				awsCfg.Credentials = credentials.NewStaticCredentialsProvider("test", "test", "")
			}
		}
		if o.AWSConfig != nil {
			o.AWSConfig(&awsCfg)
		}
		return edaaws.New(edaaws.Config{AWS: awsCfg, Endpoint: o.AWSEndpoint, AutoCreate: !o.NoAutoCreate, Logger: o.Logger})
	}
	return nil, fmt.Errorf("unknown -transport %q: memory, postgres or aws", o.Transport)
}
