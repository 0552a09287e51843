package eda_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
	"github.com/edaproject/eda/transport/postgres"
)

// probe GETs path from h and decodes the JSON body.
func probe(t *testing.T, h http.Handler, path string) (int, map[string]any, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("GET %s: body %q: %v", path, rec.Body.String(), err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	return rec.Code, body, rec.Body.String()
}

func result(rep eda.HealthReport, name string) (eda.CheckResult, bool) {
	i := slices.IndexFunc(rep.Checks, func(c eda.CheckResult) bool { return c.Name == name })
	if i < 0 {
		return eda.CheckResult{}, false
	}
	return rep.Checks[i], true
}

func newHealthApp(t *testing.T, tr transport.Transport) *eda.App {
	t.Helper()
	app, err := eda.New(eda.Config{Transport: tr, CloseTimeout: 5 * time.Second})
	must(t, err)
	must(t, eda.Register[orderPlaced](app, "orders-"+t.Name()))
	must(t, eda.Handle(app, "warehouse-"+strings.ReplaceAll(t.Name(), "/", "-"), func(context.Context, orderPlaced) error { return nil }))
	return app
}

// Readiness follows Run: not ready before it, ready once subscribed, not
// ready (and not live) after it returns; an extra check that fails (an
// outbox lag over its bound) makes the app not ready with its reason.
func TestHealthLifecycle(t *testing.T) {
	tr, err := memory.New(memory.Config{})
	must(t, err)
	defer tr.Close()
	app := newHealthApp(t, tr)
	var lag atomic.Int64 // seconds
	h, err := eda.HealthHandler(app, eda.HealthConfig{Checks: []eda.HealthCheck{{
		Name: "outbox",
		Check: func(context.Context) error {
			if l := lag.Load(); l > 5 {
				return eda.Unhealthy("outbox lag %ds over 5s", l)
			}
			return nil
		},
	}}})
	must(t, err)

	code, body, raw := probe(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || body["ready"] != false || !strings.Contains(raw, `"name":"subscriptions","ok":false,"reason":"not subscribed yet"`) {
		t.Fatalf("before Run: /readyz %d %s", code, raw)
	}
	if code, _, raw := probe(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("before Run: /healthz %d %s", code, raw)
	}

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	code, body, raw = probe(t, h, "/readyz")
	if code != http.StatusOK || body["ready"] != true {
		t.Fatalf("running: /readyz %d %s", code, raw)
	}
	var rep eda.HealthReport
	must(t, json.Unmarshal([]byte(raw), &rep))
	for _, name := range []string{eda.CheckSubscriptions, eda.CheckTransport, "outbox"} {
		if c, ok := result(rep, name); !ok || !c.OK || c.Reason != "" {
			t.Errorf("running: check %q = %+v (present %v), want ok", name, c, ok)
		}
	}

	lag.Store(12)
	code, _, raw = probe(t, h, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(raw, `{"name":"outbox","ok":false,"reason":"outbox lag 12s over 5s"}`) ||
		!strings.Contains(raw, `{"name":"subscriptions","ok":true}`) {
		t.Fatalf("lagging: /readyz %d %s", code, raw)
	}
	lag.Store(0)
	if code, _, raw := probe(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("lag back under the bound: /readyz %d %s", code, raw)
	}

	stop()
	must(t, <-done)
	if code, body, raw := probe(t, h, "/healthz"); code != http.StatusServiceUnavailable || body["live"] != false {
		t.Fatalf("after Run: /healthz %d %s", code, raw)
	}
	rep = app.Ready(context.Background(), eda.HealthConfig{})
	if c, _ := result(rep, eda.CheckSubscriptions); rep.Ready || c.OK {
		t.Fatalf("after Run: %+v", rep)
	}
}

// noPing hides the transport's Ping.
type noPing struct{ transport.Transport }

// Subscriptions that end (the transport closed under them) make the app
// not ready, whether or not the transport can be pinged.
func TestHealthSubscriptionEnded(t *testing.T) {
	tr, err := memory.New(memory.Config{})
	must(t, err)
	app := newHealthApp(t, noPing{tr})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { _ = app.Run(ctx) }()
	<-app.Running()
	if rep := app.Ready(ctx, eda.HealthConfig{}); !rep.Ready {
		t.Fatalf("running: %+v", rep)
	}
	must(t, tr.Close())
	var rep eda.HealthReport
	if !poll.Until(5*time.Second, func() bool { rep = app.Ready(ctx, eda.HealthConfig{}); return !rep.Ready }) {
		t.Fatalf("transport closed: still ready: %+v", rep)
	}
	if got := rep.Failing(); !slices.Equal(got, []string{eda.CheckSubscriptions}) {
		t.Errorf("failing %v, want [%s]", got, eda.CheckSubscriptions)
	}
	if _, ok := result(rep, eda.CheckTransport); ok {
		t.Errorf("a transport without Ping has a %s check: %+v", eda.CheckTransport, rep)
	}
}

// An unreachable database makes the app not ready, with a classified
// reason and no driver text in the body: the postgres transport's pool goes
// through a TCP proxy the test then closes.
func TestHealthTransportUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := os.Getenv("EDA_TEST_POSTGRES_DSN")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	direct, err := pgxpool.New(ctx, dsn)
	must(t, err)
	defer direct.Close()
	if err := direct.Ping(ctx); err != nil {
		t.Fatalf("Postgres at %s: %v; start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", dsn, err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	schema := "eda_healthtest_" + hex.EncodeToString(b)
	must(t, postgres.Migrate(ctx, postgres.Config{Pool: direct, Schema: schema}))
	t.Cleanup(func() {
		_, _ = direct.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})

	cfg, err := pgxpool.ParseConfig(dsn)
	must(t, err)
	px := newProxy(t, fmt.Sprintf("%s:%d", cfg.ConnConfig.Host, cfg.ConnConfig.Port))
	host, port, _ := net.SplitHostPort(px.addr())
	cfg.ConnConfig.Host = host
	_, err = fmt.Sscan(port, &cfg.ConnConfig.Port)
	must(t, err)
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	must(t, err)
	defer pool.Close()
	tr, err := postgres.New(ctx, postgres.Config{Pool: pool, Schema: schema, PollInterval: 50 * time.Millisecond})
	must(t, err)
	defer tr.Close()

	app := newHealthApp(t, tr)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = app.Run(runCtx) }()
	<-app.Running()
	h, err := eda.HealthHandler(app, eda.HealthConfig{Timeout: 2 * time.Second})
	must(t, err)
	if code, _, raw := probe(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("reachable: /readyz %d %s", code, raw)
	}

	px.close()
	var (
		code int
		raw  string
	)
	if !poll.Until(10*time.Second, func() bool {
		code, _, raw = probe(t, h, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(raw, `{"name":"transport","ok":false,"reason":"unavailable"}`)
	}) {
		t.Fatalf("unreachable: /readyz %d %s", code, raw)
	}
	for _, leak := range []string{host, port, "dial", "connect", "postgres:"} {
		if strings.Contains(raw, leak) {
			t.Errorf("readiness body %s shows %q", raw, leak)
		}
	}
}

func TestHealthConfigValidate(t *testing.T) {
	tr, err := memory.New(memory.Config{})
	must(t, err)
	defer tr.Close()
	app := newHealthApp(t, tr)
	ok := func(context.Context) error { return nil }
	for _, tc := range []struct {
		name string
		cfg  eda.HealthConfig
	}{
		{"no name", eda.HealthConfig{Checks: []eda.HealthCheck{{Check: ok}}}},
		{"nil check", eda.HealthConfig{Checks: []eda.HealthCheck{{Name: "x"}}}},
		{"duplicate", eda.HealthConfig{Checks: []eda.HealthCheck{{Name: "x", Check: ok}, {Name: "x", Check: ok}}}},
		{"built-in name", eda.HealthConfig{Checks: []eda.HealthCheck{{Name: eda.CheckTransport, Check: ok}}}},
		{"negative timeout", eda.HealthConfig{Timeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := eda.HealthHandler(app, tc.cfg); !errors.Is(err, eda.ErrInvalidConfig) {
				t.Fatalf("HealthHandler: %v, want ErrInvalidConfig", err)
			}
		})
	}
	if _, err := eda.HealthHandler(nil, eda.HealthConfig{}); !errors.Is(err, eda.ErrInvalidConfig) {
		t.Fatalf("HealthHandler(nil): %v", err)
	}
}

// proxy forwards TCP connections to a target until closed; close also cuts
// the connections it carries, as a network partition would.
type proxy struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &proxy{ln: ln}
	t.Cleanup(p.close)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.closed { // accepted while close ran: cut it too
				p.mu.Unlock()
				c.Close()
				u.Close()
				return
			}
			p.conns = append(p.conns, c, u)
			p.wg.Add(2)
			p.mu.Unlock()
			go func() { defer p.wg.Done(); _, _ = io.Copy(u, c); u.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
