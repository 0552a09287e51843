package transportprom_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
	"github.com/edaproject/eda/transport/transportprom"
)

// counting counts the readings the collector makes.
type counting struct {
	transport.Inspector
	calls atomic.Int64
}

func (c *counting) QueueDepth(ctx context.Context, q string) (transport.Depth, error) {
	c.calls.Add(1)
	return c.Inspector.QueueDepth(ctx, q)
}

func TestCollector(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	q := transport.Queue{Name: "orders", Topics: []string{"t"}, MaxReceiveCount: 3}
	if err := tr.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := tr.Publish("t", message.NewMessage(string(rune('a'+i)), nil)); err != nil {
			t.Fatal(err)
		}
	}
	published := time.Now()
	sub, stop := context.WithCancel(ctx)
	ch, err := tr.Subscribe(sub, q.Name)
	if err != nil {
		t.Fatal(err)
	}
	held := <-ch // in flight until the end
	stop()
	defer held.Ack()

	queues := transportprom.Queues([]transport.Queue{q})
	if got := strings.Join(queues, ","); got != "orders,orders-dlq" {
		t.Fatalf("Queues = %s, want orders,orders-dlq", got)
	}
	in := &counting{Inspector: tr}
	col, err := transportprom.New(transportprom.Config{Inspector: in, Queues: append(queues, "missing"), Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	done := make(chan error, 1)
	go func() { done <- col.Run(ctx) }()

	want := `
# HELP eda_queue_messages Messages in the queue by state (visible, inflight, delayed), at the last reading.
# TYPE eda_queue_messages gauge
eda_queue_messages{queue="orders",state="delayed"} 0
eda_queue_messages{queue="orders",state="inflight"} 1
eda_queue_messages{queue="orders",state="visible"} 2
eda_queue_messages{queue="orders-dlq",state="delayed"} 0
eda_queue_messages{queue="orders-dlq",state="inflight"} 0
eda_queue_messages{queue="orders-dlq",state="visible"} 0
# HELP eda_queue_read_errors_total Failed readings of the queue's depth.
# TYPE eda_queue_read_errors_total counter
eda_queue_read_errors_total{queue="missing"} 1
`
	var cmpErr error
	if !poll.Until(5*time.Second, func() bool {
		cmpErr = testutil.GatherAndCompare(reg, strings.NewReader(want), "eda_queue_messages", "eda_queue_read_errors_total")
		return cmpErr == nil
	}) {
		t.Fatalf("metrics: %v", cmpErr)
	}

	// The age grows between readings; wait for one taken 100ms after publishing.
	if !poll.Until(5*time.Second, func() bool {
		return gauge(t, reg, "eda_queue_oldest_message_age_seconds", "orders") >= 0.1
	}) {
		t.Fatal("oldest age never reached 0.1s")
	}
	if age := gauge(t, reg, "eda_queue_oldest_message_age_seconds", "orders"); age > time.Since(published).Seconds() {
		t.Errorf("oldest age %.3fs, published %s ago", age, time.Since(published))
	}
	if age := gauge(t, reg, "eda_queue_oldest_message_age_seconds", "orders-dlq"); age != 0 {
		t.Errorf("empty DLQ oldest age %v, want 0", age)
	}
	if at := gauge(t, reg, "eda_queue_last_read_timestamp_seconds", "orders"); time.Since(time.Unix(int64(at), 0)) > time.Minute {
		t.Errorf("last read timestamp %v", at)
	}

	// Scrapes read the cache: with the poller stopped, no scrape calls the
	// broker.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	before := in.calls.Load()
	for range 5 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	if after := in.calls.Load(); after != before {
		t.Errorf("5 scrapes made %d broker calls, want 0", after-before)
	}
}

// gauge returns the value of metric name for queue, -1 when absent.
func gauge(t *testing.T, reg prometheus.Gatherer, name, queue string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "queue" && l.GetValue() == queue {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

func TestConfigValidate(t *testing.T) {
	tr, err := memory.New(memory.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  transportprom.Config
	}{
		{"no inspector", transportprom.Config{Queues: []string{"q"}}},
		{"no queues", transportprom.Config{Inspector: tr}},
		{"empty queue", transportprom.Config{Inspector: tr, Queues: []string{""}}},
		{"duplicate", transportprom.Config{Inspector: tr, Queues: []string{"q", "q"}}},
		{"negative interval", transportprom.Config{Inspector: tr, Queues: []string{"q"}, Interval: -1}},
		{"negative timeout", transportprom.Config{Inspector: tr, Queues: []string{"q"}, Timeout: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := transportprom.New(tc.cfg); !errors.Is(err, transport.ErrInvalidConfig) {
				t.Fatalf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
}
