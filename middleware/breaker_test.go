package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
)

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	must(t, l.Close())
	return addr
}

func TestIsUnavailable(t *testing.T) {
	ctx := context.Background()
	_, refused := pgx.Connect(ctx, "postgres://postgres@"+closedAddr(t)+"/test?connect_timeout=2")
	if refused == nil {
		t.Fatal("connecting to a closed port succeeded")
	}

	// A backend terminated by an operator: SQLSTATE 57P01 on the next query.
	pc, err := pgxpool.ParseConfig(pgDSN())
	must(t, err)
	conn, err := pgx.ConnectConfig(ctx, pc.ConnConfig)
	if err != nil {
		t.Fatalf("Postgres at %s is not reachable (%v); start it with: %s", pgDSN(), err, startPostgres)
	}
	defer conn.Close(ctx)
	admin, err := pgx.ConnectConfig(ctx, pc.ConnConfig)
	must(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "SELECT pg_terminate_backend($1)", conn.PgConn().PID())
	must(t, err)
	var terminated error
	for range 50 { // the termination reaches the backend asynchronously
		if _, terminated = conn.Exec(ctx, "SELECT 1"); terminated != nil {
			break
		}
	}
	_, closed := conn.Exec(ctx, "SELECT 1") // on the closed connection
	_, syntax := admin.Exec(ctx, "SELEC 1")

	deadline, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-deadline.Done()
	_, timedOut := admin.Exec(deadline, "SELECT 1")

	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"wrapped refused", fmt.Errorf("inbox: store failed: sqlstore: begin: %w", refused), true},
		{"terminated backend", terminated, true},
		{"closed connection", closed, true},
		{"broker unavailable", fmt.Errorf("publish: %w", transport.ErrUnavailable), true},
		{"syntax error", syntax, false},
		{"handler deadline", timedOut, false},
		{"permanent", eda.Permanent(refused), false},
		{"plain", errors.New("out of stock"), false},
		{"nil", nil, false},
	} {
		if got := middleware.IsUnavailable(c.err); got != c.want {
			t.Errorf("%s: IsUnavailable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

func TestBreakerConfigValidate(t *testing.T) {
	if err := (middleware.BreakerConfig{}).Validate(); err != nil {
		t.Fatal(err)
	}
	err := middleware.BreakerConfig{MaxHold: -1, ProbeInitial: time.Second, ProbeInterval: time.Millisecond}.Validate()
	if !errors.Is(err, middleware.ErrInvalidConfig) || !strings.Contains(err.Error(), "negative") || !strings.Contains(err.Error(), "ProbeInterval") {
		t.Fatalf("Validate: %v", err)
	}
}

// TestBreakerHoldsMessagesThroughDatabaseOutage cuts the handler's link to
// its database (a Toxiproxy proxy in front of Postgres) while events
// arrive, with two deliveries allowed before the poison queue and
// immediate redelivery: without the breaker every event is poisoned within
// milliseconds; with it each is held, still leased, and handled on its
// first delivery once the link is back, none poisoned.
func TestBreakerHoldsMessagesThroughDatabaseOutage(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("off=%v", off), func(t *testing.T) {
			poisoned, handled, failures := breakerOutage(t, middleware.BreakerConfig{Off: off, ProbeInitial: 20 * time.Millisecond, ProbeInterval: 100 * time.Millisecond})
			if off {
				if poisoned == 0 {
					t.Fatalf("without the breaker nothing was poisoned (%d handled, %d failures): the test does not cut the link", handled, failures)
				}
				return
			}
			if poisoned != 0 {
				t.Fatalf("%d events poisoned during a database outage (%d handled, %d failed calls)", poisoned, handled, failures)
			}
		})
	}
}

const breakerEvents = 8

// breakerOutage runs breakerEvents events through a handler whose database
// link is down until the circuit has been probed a few times, and returns
// how many were poisoned, how many handled, and the failed calls.
func breakerOutage(t *testing.T, bc middleware.BreakerConfig) (poisoned, handled, failures int) {
	e := newPGEnv(t)
	ctx := context.Background()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	u, err := url.Parse(pgDSN())
	must(t, err)
	px := toxiproxy.NewProxy(srv, "pg", "127.0.0.1:0", u.Host)
	must(t, srv.Collection.Add(px, true))
	t.Cleanup(func() { _ = srv.Collection.Clear() })
	u.Host = px.Listen
	q := u.Query()
	q.Set("pool_max_conns", "4")
	q.Set("connect_timeout", "2")
	u.RawQuery = q.Encode()
	db, err := pgxpool.New(ctx, u.String())
	must(t, err)
	t.Cleanup(db.Close)
	_, err = e.pool.Exec(ctx, fmt.Sprintf("CREATE TABLE %s.effects (id text PRIMARY KEY, receive_count text NOT NULL)", e.schema))
	must(t, err)

	var npoisoned atomic.Int64
	poisonedCh := subscribe(t, e.tr, poisonQueue, poisonTopic)
	go func() {
		for msg := range poisonedCh {
			npoisoned.Add(1)
			msg.Ack()
		}
	}()
	pub, err := middleware.NewPublisher(e.tr, middleware.TracingConfig{})
	must(t, err)
	stack, err := middleware.Default(middleware.Config{
		Retry:   middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond},
		Poison:  &middleware.PoisonConfig{Publisher: e.tr, Topic: poisonTopic, MaxDeliveries: 2},
		Breaker: bc,
	})
	must(t, err)
	app := newApp(t, e.tr, pub, stack...)
	var failed atomic.Int64
	must(t, eda.Handle(app, "stock", func(ctx context.Context, ev placed) error {
		msg, _ := eda.MessageFromContext(ctx)
		_, err := db.Exec(ctx, fmt.Sprintf("INSERT INTO %s.effects VALUES ($1, $2)", e.schema), ev.ID,
			msg.Metadata.Get(transport.MetadataReceiveCount))
		if err != nil {
			failed.Add(1)
		}
		return err
	}))
	px.Stop() // the outage: the handler's database is unreachable
	start(t, app)
	for i := range breakerEvents {
		must(t, app.Publish(ctx, placed{ID: fmt.Sprint(i)}))
	}
	// Down until every event had its chance to fail: with the breaker, a
	// few probes of the held messages; without it, every event poisoned.
	eventually(t, "calls failing during the outage", func() bool {
		n := failed.Load()
		if bc.Off {
			return npoisoned.Load() >= breakerEvents
		}
		return n >= 6
	})
	must(t, px.Start())
	e.drained(t, "stock")
	e.drained(t, poisonQueue)
	poisoned = int(npoisoned.Load())
	must(t, e.pool.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s.effects", e.schema)).Scan(&handled))
	if !bc.Off {
		var late int
		must(t, e.pool.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s.effects WHERE receive_count <> '1'", e.schema)).Scan(&late))
		if handled != breakerEvents || late != 0 {
			t.Errorf("%d of %d events handled after the outage, %d of them on a later delivery", handled, breakerEvents, late)
		}
	}
	return poisoned, handled, int(failed.Load())
}

// TestBreakerMaxHold: a dependency that never comes back holds a delivery
// for MaxHold, probing it a few times, and then the message goes on as
// without the breaker: poisoned on its last delivery with the failure.
func TestBreakerMaxHold(t *testing.T) {
	tr := newTransport(t)
	pub, err := middleware.NewPublisher(tr, middleware.TracingConfig{})
	must(t, err)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	stack, err := middleware.Default(middleware.Config{
		Retry:   middleware.RetryConfig{MaxAttempts: 1},
		Poison:  &middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: 1},
		Breaker: middleware.BreakerConfig{MaxHold: 300 * time.Millisecond, ProbeInitial: 20 * time.Millisecond, ProbeInterval: 80 * time.Millisecond},
	})
	must(t, err)
	app := newApp(t, tr, pub, stack...)
	addr := closedAddr(t)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = conn.Close()
		}
		return c.add(ctx, err)
	}))
	start(t, app)
	before := time.Now()
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	msg := receive(t, poisoned)
	held := time.Since(before)
	if md := msg.Metadata; md.Get(middleware.MetadataPoisonReason) != string(middleware.ReasonRetriesExhausted) ||
		!strings.Contains(md.Get(middleware.MetadataPoisonError), "connection refused") || md.Get(middleware.MetadataPoisonDeliveries) != "1" {
		t.Errorf("poisoned with %v", md)
	}
	// 1 call, then probes after 20, 40, 80, 80 ms... within 300 ms: about 5.
	if n := c.n(); held < 300*time.Millisecond || n < 3 || n > 10 {
		t.Errorf("held %s with %d calls, want at least MaxHold (300ms) with a few probes", held, n)
	}
}
