package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"

	"github.com/edaproject/eda/internal/poll"
)

type listedQueue struct {
	Queue    string   `json:"queue"`
	Kind     string   `json:"kind"`
	Sources  []string `json:"sources"`
	Messages int64    `json:"messages"`
	InFlight int64    `json:"inFlight"`
}

func dlqList(t *testing.T, args ...string) map[string]listedQueue {
	t.Helper()
	var qs []listedQueue
	out := mustRun(t, append([]string{"dlq", "list", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	m := map[string]listedQueue{}
	for _, q := range qs {
		m[q.Queue] = q
	}
	return m
}

func dlqShow(t *testing.T, args ...string) []deadMessage {
	t.Helper()
	var msgs []deadMessage
	out := mustRun(t, append([]string{"dlq", "show", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &msgs); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	return msgs
}

// waitShow polls dlq show until it lists n messages (on SQS each show also
// waits up to a second for messages).
func waitShow(t *testing.T, n int, args ...string) []deadMessage {
	t.Helper()
	var msgs []deadMessage
	if !poll.Until(30*time.Second, func() bool { msgs = dlqShow(t, args...); return len(msgs) >= n }) {
		t.Fatalf("dlq show %v: %d message(s) after 30s, want %d", args, len(msgs), n)
	}
	return msgs
}

// poisonAndRedrive runs the dead-letter scenario on a transport: a message
// the handler rejects lands in the poison queue; dlq list and show report it
// with its reason without consuming it; dlq redrive sends it back to its
// queue, where the (now fixed) handler consumes it.
func poisonAndRedrive(t *testing.T, s *scenario, conn []string) {
	ctx := testContext(t)
	if err := s.app.Publish(ctx, Reserve{OrderID: "o-1", SKU: "no-such-sku"}); err != nil {
		t.Fatal(err)
	}
	show := append([]string{"-queue", s.poisonQueue}, conn...)
	msgs := waitShow(t, 1, show...)
	m := msgs[0]
	if m.Reason != "permanent" || !strings.Contains(m.Error, "unknown sku no-such-sku") || m.Type != "test.Reserve" ||
		m.RedriveTo != "queue "+s.queue || m.EventID == "" || !strings.Contains(m.Payload, "o-1") || m.Handler == "" {
		t.Errorf("dlq show: %+v", m)
	}
	// show did not consume it: it is still there, and list counts it.
	if again := dlqShow(t, show...); len(again) != 1 || again[0].EventID != m.EventID {
		t.Errorf("second dlq show: %+v", again)
	}
	list := dlqList(t, append([]string{"-prefix", strings.TrimSuffix(s.poisonQueue, "poison")}, conn...)...)
	if q := list[s.poisonQueue]; q.Kind != kindPoison || q.Messages != 1 {
		t.Errorf("dlq list: poison queue %+v (all: %+v)", q, list)
	}
	if q := list[s.queue+"-dlq"]; q.Kind != kindDeadLetter || len(q.Sources) != 1 || q.Sources[0] != s.queue {
		t.Errorf("dlq list: dead-letter queue %+v (all: %+v)", q, list)
	}
	table := mustRun(t, append([]string{"dlq", "show"}, show...)...)
	for _, want := range []string{"reason:", "permanent", "unknown sku no-such-sku", "redrive to:"} {
		if !strings.Contains(table, want) {
			t.Errorf("dlq show table lacks %q:\n%s", want, table)
		}
	}

	// An id that matches nothing moves nothing and says so.
	if _, errs, code := edactl(t, append([]string{"dlq", "redrive", "-id", "no-such-id"}, show...)...); code != exitError || !strings.Contains(errs, "matched") {
		t.Errorf("redrive of an unknown id: exit %d, %s", code, errs)
	}

	s.failing.Store(false) // the bug is fixed
	out := mustRun(t, append([]string{"dlq", "redrive", m.EventID}, show...)...)
	if !strings.Contains(out, "redrove 1 message(s)") || !strings.Contains(out, "queue "+s.queue) {
		t.Errorf("redrive:\n%s", out)
	}
	select {
	case id := <-s.handled:
		if id != m.EventID {
			t.Errorf("handled %s, want the redriven %s", id, m.EventID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the redriven message did not reach its handler")
	}
	if left := dlqShow(t, show...); len(left) != 0 {
		t.Errorf("poison queue after redrive: %+v", left)
	}
}

func TestDLQPostgres(t *testing.T) {
	t.Parallel()
	tr, _, schema := pgTransport(t)
	s := startScenario(t, tr, "p-")
	poisonAndRedrive(t, s, []string{"-transport", "postgres", "-db", testDSN(), "-schema", schema})
}

func TestDLQAWS(t *testing.T) {
	t.Parallel()
	tr := awsTransport(t)
	s := startScenario(t, tr, uniq("d")+"-")
	poisonAndRedrive(t, s, []string{"-transport", "aws", "-aws-endpoint", endpoint()})
}

// A message the broker moved to a queue's dead-letter queue (max receive
// count) goes back to that queue, without the transport's bookkeeping.
func TestDLQRedriveMaxReceivePostgres(t *testing.T) {
	t.Parallel()
	tr, _, schema := pgTransport(t)
	maxReceiveRedrive(t, tr, "", false, []string{"-transport", "postgres", "-db", testDSN(), "-schema", schema})
}

func TestDLQRedriveMaxReceiveFIFOPostgres(t *testing.T) {
	t.Parallel()
	tr, _, schema := pgTransport(t)
	maxReceiveRedrive(t, tr, "", true, []string{"-transport", "postgres", "-db", testDSN(), "-schema", schema})
}

// On a FIFO queue the redriven copy keeps its group and gets a fresh
// deduplication id: the original's is still within SQS's 5-minute window.
func TestDLQRedriveMaxReceiveFIFOAWS(t *testing.T) {
	t.Parallel()
	maxReceiveRedrive(t, awsTransport(t), uniq("f")+"-", true, []string{"-transport", "aws", "-aws-endpoint", endpoint()})
}

func TestDLQRedriveMaxReceiveAWS(t *testing.T) {
	t.Parallel()
	maxReceiveRedrive(t, awsTransport(t), uniq("m")+"-", false, []string{"-transport", "aws", "-aws-endpoint", endpoint()})
}

func maxReceiveRedrive(t *testing.T, tr transport.Transport, prefix string, fifo bool, conn []string) {
	ctx := testContext(t)
	billing, dlq := prefix+"billing", prefix+"billing-dlq"
	q := transport.Queue{Name: billing, Topics: []string{prefix + "invoices"}, MaxReceiveCount: 1, VisibilityTimeout: time.Minute, FIFO: fifo}
	if err := tr.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage("ev-1", []byte(`{"invoice":1}`))
	msg.Metadata.Set(eda.MetadataID, "ev-1")
	msg.Metadata.Set(eda.MetadataType, "billing.Invoice")
	if fifo {
		msg.Metadata.Set(transport.MetadataGroupID, "customer-7")
	}
	if err := tr.Publish(prefix+"invoices", msg); err != nil {
		t.Fatal(err)
	}
	subCtx, cancel := context.WithCancel(ctx)
	ch, err := tr.Subscribe(subCtx, billing)
	if err != nil {
		t.Fatal(err)
	}
	(<-ch).Nack() // its one allowed receive; the next moves it to billing-dlq
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			m.Nack()
		}
	}()
	msgs := waitShow(t, 1, append([]string{"-queue", dlq}, conn...)...)
	cancel()
	<-done
	if m := msgs[0]; m.Reason != "max_receive_count" || m.RedriveTo != "queue "+billing || m.EventID != "ev-1" {
		t.Errorf("dlq show: %+v", m)
	}
	// -to a queue that does not exist: rolled back, nothing moved.
	if out, errs, code := edactl(t, append([]string{"dlq", "redrive", "-queue", dlq, "-to", "nowhere"}, conn...)...); code != exitError ||
		!strings.Contains(out+errs, `nowhere`) || !strings.Contains(out+errs, "unknown queue") {
		t.Errorf("redrive -to nowhere: exit %d, %s%s", code, out, errs)
	}
	if left := dlqShow(t, append([]string{"-queue", dlq}, conn...)...); len(left) != 1 {
		t.Errorf("after a failed redrive the DLQ holds %d message(s), want 1", len(left))
	}
	var res redriveResult
	out := mustRun(t, append([]string{"dlq", "redrive", "-queue", dlq, "-o", "json"}, conn...)...)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Moved) != 1 || res.Moved[0].To != "queue "+billing || len(res.Failed) != 0 {
		t.Fatalf("redrive: %s", out)
	}
	ch, err = tr.Subscribe(ctx, billing)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		got.Ack()
		if got.UUID != "ev-1" || got.Metadata.Get(transport.MetadataReceiveCount) != "1" || got.Metadata.Get(transport.MetadataDeadLetterSource) != "" ||
			(fifo && got.Metadata.Get(transport.MetadataGroupID) != "customer-7") {
			t.Errorf("redriven message: %s %v", got.UUID, got.Metadata)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the redriven message is not in %s", billing)
	}
}
