package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"

	"github.com/edaproject/eda/internal/ops"
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

func dlqShow(t *testing.T, args ...string) []ops.DeadMessage {
	t.Helper()
	var msgs []ops.DeadMessage
	out := mustRun(t, append([]string{"dlq", "show", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &msgs); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	return msgs
}

// waitShow polls dlq show until it lists n messages (on SQS each show also
// waits up to a second for messages).
func waitShow(t *testing.T, n int, args ...string) []ops.DeadMessage {
	t.Helper()
	var msgs []ops.DeadMessage
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
	if q := list[s.poisonQueue]; q.Kind != ops.KindPoison || q.Messages != 1 {
		t.Errorf("dlq list: poison queue %+v (all: %+v)", q, list)
	}
	if q := list[s.queue+"-dlq"]; q.Kind != ops.KindDeadLetter || len(q.Sources) != 1 || q.Sources[0] != s.queue {
		t.Errorf("dlq list: dead-letter queue %+v (all: %+v)", q, list)
	}
	table := mustRun(t, append([]string{"dlq", "show"}, show...)...)
	for _, want := range []string{"reason:", "permanent", "unknown sku no-such-sku", "redrive to:"} {
		if !strings.Contains(table, want) {
			t.Errorf("dlq show table lacks %q:\n%s", want, table)
		}
	}

	// An id that matches nothing moves nothing and says so.
	if out := mustRun(t, append([]string{"dlq", "redrive", "-id", "no-such-id"}, show...)...); !strings.Contains(out, "0 moved from "+s.poisonQueue+": no message matched") {
		t.Errorf("redrive of an unknown id:\n%s", out)
	}

	s.failing.Store(false) // the bug is fixed
	out := mustRun(t, append([]string{"dlq", "redrive", m.EventID}, show...)...)
	if !strings.Contains(out, "1 moved from "+s.poisonQueue+": 1 to queue "+s.queue) {
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

// redriveRepoisoned is the regression test of a redrive that never ended:
// the handler poisons every message again, and dlq redrive, without -n,
// moves the message once and returns; the message is back in the poison
// queue exactly once more, with its history: the first failure unchanged,
// deliveries added up, one redrive. On the way: filters that match nothing
// move nothing, say "0 moved", exit 0 and leave the message visible at
// once; -dry-run moves nothing; -to a queue that does not exist fails.
func redriveRepoisoned(t *testing.T, s *scenario, conn []string) {
	ctx := testContext(t)
	if err := s.app.Publish(ctx, Reserve{OrderID: "o-2", SKU: "no-such-sku"}); err != nil {
		t.Fatal(err)
	}
	show := append([]string{"-queue", s.poisonQueue}, conn...)
	before := waitShow(t, 1, show...)[0]
	if before.Redrives != 0 || before.TotalDeliveries != 1 || before.FirstFailure == "" {
		t.Fatalf("first poisoning: %+v", before)
	}
	redrive := func(args ...string) (string, string, int) {
		return edactl(t, append(append([]string{"dlq", "redrive"}, show...), args...)...)
	}
	for _, filter := range [][]string{
		{"-type", "test.Other"},
		{"-reason", "retries_exhausted"},
		{"-until", "1h"}, // failed before an hour ago
		{"-since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)},
		{"no-such-event"},
	} {
		out, errs, code := redrive(filter...)
		if code != exitOK || !strings.Contains(out, "0 moved from "+s.poisonQueue) {
			t.Errorf("redrive %v: exit %d\n%s%s", filter, code, out, errs)
		}
		// Not selected: visible again at once, not after -visibility.
		if got := dlqShow(t, show...); len(got) != 1 {
			t.Fatalf("after redrive %v, show lists %d message(s) at once, want 1", filter, len(got))
		}
	}
	out, errs, code := redrive("-dry-run", "-type", "test.Reserve", "-reason", "permanent", "-since", "1h")
	if code != exitOK || !strings.Contains(out, "1 would move from "+s.poisonQueue+": 1 to queue "+s.queue) || !strings.Contains(out, before.EventID) {
		t.Errorf("redrive -dry-run: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = redrive("-to", "nowhere")
	if code != exitError || !strings.Contains(errs, "nowhere") || !strings.Contains(errs, "unknown queue") {
		t.Errorf("redrive -to nowhere: exit %d\n%s%s", code, out, errs)
	}
	if got := dlqShow(t, show...); len(got) != 1 || s.calls.Load() != 1 {
		t.Fatalf("after -dry-run and -to nowhere: %d message(s) in the poison queue, %d handler call(s); want 1, 1", len(got), s.calls.Load())
	}

	// The redrive itself, while the handler still fails: it returns.
	out, errs, code = redrive("-o", "json")
	if code != exitOK {
		t.Fatalf("redrive: exit %d\n%s%s", code, out, errs)
	}
	var res ops.RedriveResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Moved) != 1 || res.ByTarget["queue "+s.queue] != 1 || res.Moved[0].Redrives != 1 || res.DryRun {
		t.Fatalf("redrive: %s", out)
	}
	var after []ops.DeadMessage
	if !poll.Until(30*time.Second, func() bool {
		after = dlqShow(t, show...)
		return len(after) == 1 && after[0].Redrives == 1
	}) {
		t.Fatalf("the message is not back in the poison queue with one redrive: %+v", after)
	}
	m := after[0]
	if m.EventID != before.EventID || m.FirstFailure != before.FirstFailure || m.TotalDeliveries != 2 || m.LastFailure <= before.LastFailure {
		t.Errorf("history after redrive and a second poisoning: %+v\nbefore: %+v", m, before)
	}
	if n := s.calls.Load(); n != 2 {
		t.Errorf("%d handler calls, want 2: the redrive moved the message more than once", n)
	}
	table := mustRun(t, append([]string{"dlq", "show"}, show...)...)
	for _, want := range []string{fmt.Sprintf("%-17s 2", "total deliveries:"), fmt.Sprintf("%-17s 1", "redrives:"),
		fmt.Sprintf("%-17s %s", "first failure:", before.FirstFailure)} {
		if !strings.Contains(table, want) {
			t.Errorf("dlq show lacks %q:\n%s", want, table)
		}
	}
}

func TestDLQRedriveRepoisonedPostgres(t *testing.T) {
	t.Parallel()
	tr, _, schema := pgTransport(t)
	s := startScenario(t, tr, "p-")
	redriveRepoisoned(t, s, []string{"-transport", "postgres", "-db", testDSN(), "-schema", schema})
}

func TestDLQRedriveRepoisonedAWS(t *testing.T) {
	t.Parallel()
	s := startScenario(t, awsTransport(t), uniq("r")+"-")
	redriveRepoisoned(t, s, []string{"-transport", "aws", "-aws-endpoint", endpoint()})
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
	if m := msgs[0]; m.Reason != "max_receive_count" || m.RedriveTo != "queue "+billing || m.EventID != "ev-1" ||
		m.TotalDeliveries != 1 || m.Redrives != 0 { // the source queue's max receive count

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
	var res ops.RedriveResult
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
			(fifo && got.Metadata.Get(transport.MetadataGroupID) != "customer-7") ||
			got.Metadata.Get(middleware.MetadataPoisonRedrives) != "1" || got.Metadata.Get(middleware.MetadataPoisonTotalDeliveries) != "1" {
			t.Errorf("redriven message: %s %v", got.UUID, got.Metadata)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the redriven message is not in %s", billing)
	}
}
