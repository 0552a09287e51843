package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/internal/ops"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/postgres"
)

// The tests run edactl in-process against the real Postgres (a schema per
// test) and the fauxqs SNS/SQS emulator (unique names per test).

const startPostgres = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

func testDSN() string {
	if d := os.Getenv("EDA_TEST_POSTGRES"); d != "" {
		return d
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func endpoint() string {
	if e := os.Getenv("EDA_AWS_ENDPOINT"); e != "" {
		return e
	}
	return "http://127.0.0.1:4566"
}

func uniq(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	if hook, ok := configHooks.Load(t); ok { // the commands of t record their AWS calls
		ctx = context.WithValue(ctx, configHookKey{}, hook)
	}
	return ctx
}

// configHooks holds, per test, the hook every edactl command that test runs
// applies to its SDK configuration (see recordCalls).
var configHooks sync.Map // *testing.T → func(*awssdk.Config)

// requireEmulator fails the test when the emulator does not answer.
func requireEmulator(t *testing.T) string {
	t.Helper()
	ep := endpoint()
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(ep + "/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = errors.New(resp.Status)
		}
	}
	if err != nil {
		t.Fatalf("SNS/SQS emulator not reachable at %s (EDA_AWS_ENDPOINT): %v; start it with: scripts/emulator.sh up", ep, err)
	}
	return ep
}

// pgSchema returns a pool and a fresh schema name, dropped when t ends.
func pgSchema(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, testDSN())
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("Postgres at %s is not reachable (%v); start it with: %s", testDSN(), err, startPostgres)
	}
	schema := uniq("edactl_")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		pool.Close()
	})
	return pool, schema
}

// syncBuffer is a buffer written by a running command and read by the test;
// changed fires after every write.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.b.Write(p)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the buffer contains sub.
func (s *syncBuffer) waitFor(t *testing.T, sub string, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !strings.Contains(s.String(), sub) {
		select {
		case <-s.changed:
		case <-deadline.C:
			t.Fatalf("no %q within %s; output so far:\n%s", sub, timeout, s.String())
		}
	}
}

// edactl runs a command in-process.
func edactl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(testContext(t), args, &out, &errb)
	return out.String(), errb.String(), code
}

// mustRun runs a command that must succeed and returns its stdout.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := edactl(t, args...)
	if code != exitOK {
		t.Fatalf("edactl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// awsTransport returns an AWS transport on the emulator.
func awsTransport(t *testing.T) *edaaws.Transport {
	t.Helper()
	tr, err := edaaws.New(edaaws.Config{
		AWS:      awssdk.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")},
		Endpoint: requireEmulator(t), AutoCreate: true, AccountID: "000000000000", WaitTime: time.Second,
	}.ForFauxqs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// pgTransport returns a Postgres transport on a fresh schema.
func pgTransport(t *testing.T) (*postgres.Transport, *pgxpool.Pool, string) {
	t.Helper()
	pool, schema := pgSchema(t)
	ctx := testContext(t)
	cfg := postgres.Config{Pool: pool, Schema: schema, PollInterval: 100 * time.Millisecond}
	if err := postgres.Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	tr, err := postgres.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr, pool, schema
}

// Reserve is the event of the dead-letter scenario.
type Reserve struct {
	OrderID string `json:"order_id"`
	SKU     string `json:"sku"`
}

func (Reserve) EventName() string { return "test.Reserve" }

// scenario is a service whose handler fails permanently while failing is
// set, so the poison middleware moves its messages to the poison queue.
type scenario struct {
	app                                    *eda.App
	topic, queue, poisonTopic, poisonQueue string
	failing                                atomic.Bool
	calls                                  atomic.Int32 // handler calls
	handled                                chan string  // event ids handled successfully
}

func startScenario(t *testing.T, tr transport.Transport, prefix string) *scenario {
	t.Helper()
	s := &scenario{
		topic: prefix + "orders", queue: prefix + "inventory",
		poisonTopic: prefix + "poison", poisonQueue: prefix + "poison",
		handled: make(chan string, 10),
	}
	s.failing.Store(true)
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 1},
		Poison: &middleware.PoisonConfig{Publisher: tr, Topic: s.poisonTopic},
	})
	if err != nil {
		t.Fatal(err)
	}
	app, err := eda.New(eda.Config{Transport: tr, Source: "edactl-test", Middleware: stack})
	if err != nil {
		t.Fatal(err)
	}
	s.app = app
	err = errors.Join(
		eda.Register[Reserve](app, s.topic),
		app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: s.queue, Topics: []string{s.topic}, MaxReceiveCount: 5}}),
		app.DeclareQueue(middleware.PoisonQueue(s.poisonQueue, s.poisonTopic)),
		eda.Handle(app, s.queue, func(ctx context.Context, e Reserve) error {
			s.calls.Add(1)
			if s.failing.Load() {
				return eda.Permanent(errors.New("unknown sku " + e.SKU))
			}
			msg, _ := eda.MessageFromContext(ctx)
			for k := range msg.Metadata {
				if ops.IsRedriveKey(k) && k != transport.MetadataReceiveCount {
					t.Errorf("the redriven message still has %s=%q", k, msg.Metadata[k])
				}
			}
			if r := msg.Metadata.Get(middleware.MetadataPoisonRedrives); r != "1" {
				t.Errorf("the redriven message has %s=%q, want 1", middleware.MetadataPoisonRedrives, r)
			}
			s.handled <- msg.Metadata.Get(eda.MetadataID)
			return nil
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	edatest.Run(t, app)
	return s
}
