package edatest_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/eda/edatest"
	"github.com/edaproject/eda/middleware"
)

// The poison middleware publishing on h.Publisher: its messages are
// published records and count as dead-lettered from the queue they failed
// on.
func TestPoisonedCountsAsDeadLettered(t *testing.T) {
	h := edatest.New(t, edatest.Config{})
	must(t, eda.Register[OrderCreated](h.App, "orders"))
	must(t, h.App.DeclareQueue(middleware.PoisonQueue("poison", "poison-topic")))
	poison, err := middleware.Poison(middleware.PoisonConfig{Publisher: h.Publisher, Topic: "poison-topic"})
	must(t, err)
	h.Use(poison)
	must(t, eda.Handle(h.App, "inventory", func(ctx context.Context, e OrderCreated) error {
		return eda.Permanent(errors.New("no such product"))
	}))
	h.Start()
	h.Publish(OrderCreated{ID: "o-1"})
	dead := h.WaitDeadLettered("inventory", 1)
	if got := dead[0].Message.Metadata.Get(middleware.MetadataPoisonReason); got != string(middleware.ReasonPermanent) {
		t.Fatalf("poison reason %q", got)
	}
	if got := dead[0].Envelope.Type; got != "orders.OrderCreated" {
		t.Fatalf("dead-lettered %q", got)
	}
	if n := len(h.Failed("inventory")); n != 0 {
		t.Fatalf("%d failed attempts: poisoning acks the message", n)
	}
}

// Two harnesses at once with the same names see only their own messages.
func TestHarnessesAreIsolated(t *testing.T) {
	a := edatest.New(t, edatest.Config{})
	b := edatest.New(t, edatest.Config{})
	for _, h := range []*edatest.Harness{a, b} {
		must(t, eda.Register[OrderCreated](h.App, "orders"))
		must(t, eda.Handle(h.App, "inventory", func(ctx context.Context, e OrderCreated) error { return nil }))
		h.Start()
	}
	a.Publish(OrderCreated{ID: "a"})
	b.Publish(OrderCreated{ID: "b"})
	for name, h := range map[string]*edatest.Harness{"a": a, "b": b} {
		got := h.WaitHandled("inventory", 1)
		var e OrderCreated
		must(t, eda.JSON{}.Unmarshal(got[0].Message.Payload, &e))
		if e.ID != name {
			t.Errorf("harness %s handled order %q", name, e.ID)
		}
	}
	// Each harness handled exactly its own: publish a marker after, wait for it.
	a.Publish(OrderCreated{ID: "a2"})
	if n := len(a.WaitHandled("inventory", 2)); n != 2 {
		t.Errorf("harness a handled %d, want 2", n)
	}
	if n := len(b.Handled("inventory")); n != 1 {
		t.Errorf("harness b handled %d, want 1", n)
	}
}

// What a harness creates on the server is gone once its test ended.
func TestIsolationRemovedAtCleanup(t *testing.T) {
	var env edatest.Env
	err := edatest.Standalone(func(st edatest.TB) {
		h := edatest.New(st, edatest.Config{})
		env = h.Env
		must(t, eda.Register[OrderCreated](h.App, "orders"))
		must(t, eda.Handle(h.App, "inventory", func(ctx context.Context, e OrderCreated) error { return nil }))
		h.Start()
		h.Publish(OrderCreated{ID: "o-1"})
		h.WaitHandled("inventory", 1)
		if n := leftovers(t, env); n == 0 {
			st.Errorf("nothing of the test found on the %s server while it runs", env.Kind)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := leftovers(t, env); n > 0 {
		t.Fatalf("%d schemas or queues of the test left on the %s server", n, env.Kind)
	}
}

// leftovers counts the schemas (Postgres) or queues (SNS/SQS) of env; -1 on
// memory, which has nothing to leave.
func leftovers(t *testing.T, env edatest.Env) int {
	t.Helper()
	ctx := context.Background()
	switch env.Kind {
	case edatest.Postgres:
		conn, err := pgx.Connect(ctx, env.PostgresDSN)
		must(t, err)
		defer conn.Close(ctx)
		var n int
		must(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE starts_with(nspname, $1)`, env.Schema).Scan(&n))
		return n
	case edatest.AWS:
		c := sqs.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")},
			func(o *sqs.Options) { o.BaseEndpoint = &env.AWSEndpoint })
		out, err := c.ListQueues(ctx, &sqs.ListQueuesInput{QueueNamePrefix: &env.Prefix})
		must(t, err)
		return len(out.QueueUrls)
	}
	return -1
}

// An absent server fails the test with the command that starts it.
func TestAbsentServerNamesTheCommand(t *testing.T) {
	unused := "127.0.0.1:1" // nothing listens on port 1
	if resp, err := http.Get("http://" + unused); err == nil {
		resp.Body.Close()
		t.Fatalf("something answers on %s", unused)
	}
	for _, c := range []struct {
		cfg  edatest.Config
		want string
	}{
		{edatest.Config{Transport: edatest.Postgres, Postgres: edatest.PostgresConfig{DSN: "postgres://postgres@" + unused + "/test"}}, edatest.StartPostgres},
		{edatest.Config{Transport: edatest.AWS, AWS: edatest.AWSConfig{Endpoint: "http://" + unused}}, edatest.StartEmulator},
		{edatest.Config{Transport: "kafka"}, "unknown transport"},
	} {
		t.Run(string(c.cfg.Transport), func(t *testing.T) {
			err := edatest.Standalone(func(st edatest.TB) {
				edatest.New(st, c.cfg)
				st.Errorf("New returned")
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a failure quoting %q", err, c.want)
			}
		})
	}
}

func TestStandalone(t *testing.T) {
	var order []string
	err := edatest.Standalone(func(st edatest.TB) {
		st.Cleanup(func() { order = append(order, "first registered") })
		st.Cleanup(func() { order = append(order, "second registered") })
		st.Fatalf("stop %d", 1)
		order = append(order, "after Fatalf")
	})
	if err == nil || err.Error() != "stop 1" {
		t.Fatalf("err %v, want stop 1", err)
	}
	if strings.Join(order, ",") != "second registered,first registered" {
		t.Fatalf("ran %v", order)
	}
	if err := edatest.Standalone(func(edatest.TB) {}); err != nil {
		t.Fatalf("empty body: %v", err)
	}
}

func TestEach(t *testing.T) {
	t.Setenv(edatest.EnvTransport, "memory")
	var ran []edatest.Kind
	edatest.Each(t, func(t *testing.T, kind edatest.Kind) {
		ran = append(ran, kind)
		if h := edatest.New(t, edatest.Config{Transport: kind}); h.Kind != kind {
			t.Errorf("harness on %s, want %s", h.Kind, kind)
		}
	})
	if len(ran) != 1 || ran[0] != edatest.Memory {
		t.Fatalf("ran %v, want only memory (narrowed by %s)", ran, edatest.EnvTransport)
	}
}
