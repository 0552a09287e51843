package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
)

func TestPoisonPermanentErrorAtOnce(t *testing.T) {
	tr := newTransport(t)
	pub, err := middleware.NewPublisher(tr, middleware.TracingConfig{}) // records the topic
	must(t, err)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	poison := mustMW(t)(middleware.Poison(middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic}))
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 5, InitialInterval: time.Millisecond}))
	app := newApp(t, tr, pub, poison, retry)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		return c.add(ctx, eda.Permanent(errors.New("customer "+e.ID+" does not exist")))
	}))
	start(t, app)
	before := time.Now()
	must(t, app.Publish(context.Background(), placed{ID: "c-9"}))
	msg := receive(t, poisoned)
	drained(t, tr, "q") // the original was acked
	if c.n() != 1 {
		t.Errorf("%d calls, want 1", c.n())
	}
	md := msg.Metadata
	want := map[string]string{
		middleware.MetadataPoisonReason:     string(middleware.ReasonPermanent),
		middleware.MetadataPoisonError:      "customer c-9 does not exist",
		middleware.MetadataPoisonAttempts:   "1",
		middleware.MetadataPoisonDeliveries: "1",
		middleware.MetadataPoisonHandler:    "q",
		middleware.MetadataPoisonQueue:      "q",
		middleware.MetadataPoisonTopic:      placedTopic,
		eda.MetadataType:                    "test.Placed",
	}
	for k, v := range want {
		if md.Get(k) != v {
			t.Errorf("metadata %s = %q, want %q", k, md.Get(k), v)
		}
	}
	if md.Get(eda.MetadataID) == "" || msg.UUID != md.Get(eda.MetadataID) {
		t.Errorf("event id %q, uuid %q: the poisoned copy keeps the event id", md.Get(eda.MetadataID), msg.UUID)
	}
	if string(msg.Payload) != `{"id":"c-9"}` {
		t.Errorf("payload %s", msg.Payload)
	}
	first, err1 := time.Parse(time.RFC3339Nano, md.Get(middleware.MetadataPoisonFirstFailure))
	last, err2 := time.Parse(time.RFC3339Nano, md.Get(middleware.MetadataPoisonLastFailure))
	if err1 != nil || err2 != nil || first.Before(before) || last.Before(first) || time.Since(last) > time.Minute {
		t.Errorf("failure times %v %v (%v %v)", first, last, err1, err2)
	}
}

func TestPoisonAfterMaxDeliveries(t *testing.T) {
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	poison := mustMW(t)(middleware.Poison(middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: 2}))
	retry := mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 3, InitialInterval: time.Millisecond, NoJitter: true}))
	app := newApp(t, tr, nil, poison, retry)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		return c.add(ctx, errFlaky)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	msg := receive(t, poisoned)
	drained(t, tr, "q")
	var counts []string
	for _, cl := range c.all() {
		counts = append(counts, cl.ReceiveCount)
	}
	if want := []string{"1", "1", "1", "2", "2", "2"}; strings.Join(counts, ",") != strings.Join(want, ",") {
		t.Errorf("calls by receive count %v, want %v", counts, want)
	}
	md := msg.Metadata
	if md.Get(middleware.MetadataPoisonReason) != string(middleware.ReasonRetriesExhausted) ||
		md.Get(middleware.MetadataPoisonAttempts) != "3" || md.Get(middleware.MetadataPoisonDeliveries) != "2" ||
		md.Get(middleware.MetadataPoisonError) != "flaky" || md.Get(transport.MetadataReceiveCount) != "1" {
		t.Errorf("poison metadata %v", md)
	}
}

func TestPoisonDecodeErrorAndUnknownEvent(t *testing.T) {
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	poison := mustMW(t)(middleware.Poison(middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic}))
	app := newApp(t, tr, nil, poison, mustMW(t)(middleware.Retry(middleware.RetryConfig{})))
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error { return nil }))
	start(t, app)
	bad := message.NewMessage("bad-1", []byte("{not json"))
	bad.Metadata = message.Metadata{eda.MetadataID: "bad-1", eda.MetadataType: "test.Placed", eda.MetadataSchemaVersion: "1"}
	must(t, tr.Publish(placedTopic, bad))
	msg := receive(t, poisoned)
	if msg.Metadata.Get(middleware.MetadataPoisonReason) != "permanent" || !strings.Contains(msg.Metadata.Get(middleware.MetadataPoisonError), "cannot decode") {
		t.Errorf("decode error poisoned with %v", msg.Metadata)
	}
	unknown := message.NewMessage("u-1", []byte("{}"))
	unknown.Metadata = message.Metadata{eda.MetadataID: "u-1", eda.MetadataType: "test.Unknown", eda.MetadataSchemaVersion: "1"}
	must(t, tr.Publish(placedTopic, unknown))
	msg = receive(t, poisoned)
	if msg.UUID != "u-1" || !strings.Contains(msg.Metadata.Get(middleware.MetadataPoisonError), "unknown event type") {
		t.Errorf("unknown event poisoned with %v", msg.Metadata)
	}
	drained(t, tr, "q")
}

// failingPublisher fails while failing is set, then publishes through next.
type failingPublisher struct {
	next    message.Publisher
	failing atomic.Bool
	tries   atomic.Int32
}

var errBrokerDown = errors.New("broker down")

func (p *failingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.tries.Add(1)
	if p.failing.Load() {
		return errBrokerDown
	}
	return p.next.Publish(topic, msgs...)
}

func (p *failingPublisher) Close() error { return nil }

func TestPoisonPublishFailureNacks(t *testing.T) {
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	fp := &failingPublisher{next: tr}
	fp.failing.Store(true)
	poison := mustMW(t)(middleware.Poison(middleware.PoisonConfig{Publisher: fp, Topic: poisonTopic}))
	var errs strlog
	seeErr := func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err != nil {
				errs.add(err.Error())
				if !errors.Is(err, middleware.ErrPoisonPublish) || !errors.Is(err, errBrokerDown) || !eda.IsPermanent(err) {
					t.Errorf("error %v: want the handler's error joined with ErrPoisonPublish", err)
				}
			}
			return out, err
		}
	}
	app := newApp(t, tr, nil, seeErr, poison)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		return c.add(ctx, eda.Permanent(errors.New("bad")))
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	// While the poison topic cannot be reached the message is nacked and
	// redelivered, never acked.
	eventually(t, "three failed poison publishes", func() bool { return fp.tries.Load() >= 3 })
	if v, f, _ := tr.Depth("q"); v+f != 1 {
		t.Fatalf("queue depth %d+%d, want the message kept", v, f)
	}
	fp.failing.Store(false)
	msg := receive(t, poisoned)
	drained(t, tr, "q")
	if d := msg.Metadata.Get(middleware.MetadataPoisonDeliveries); d == "1" || d == "" {
		t.Errorf("poisoned on delivery %q, want a later one", d)
	}
}

func TestPoisonNeverLeavesTransientFailuresToTheDLQ(t *testing.T) {
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	poison := mustMW(t)(middleware.Poison(middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: -1}))
	app := newApp(t, tr, nil, poison, mustMW(t)(middleware.Retry(middleware.RetryConfig{MaxAttempts: 1})))
	must(t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: "q", MaxReceiveCount: 3}}))
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error { return c.add(ctx, errFlaky) }))
	start(t, app)
	dlq, err := tr.Subscribe(t.Context(), "q-dlq")
	must(t, err)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	msg := receive(t, dlq)
	if msg.Metadata.Get(transport.MetadataDeadLetterSource) != "q" || c.n() != 3 {
		t.Errorf("dead-lettered after %d calls with %v", c.n(), msg.Metadata)
	}
	select {
	case m := <-poisoned:
		t.Errorf("transient failure poisoned with MaxDeliveries -1: %v", m.Metadata)
	default:
	}
}

func TestPoisonTruncatesErrorText(t *testing.T) {
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	poison := mustMW(t)(middleware.Poison(middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxErrorLen: 10}))
	app := newApp(t, tr, nil, poison)
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		return eda.Permanent(errors.New("ééééééééééé"))
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	msg := receive(t, poisoned)
	if got := msg.Metadata.Get(middleware.MetadataPoisonError); got != "ééé…" /* 10 bytes at most, whole runes */ {
		t.Errorf("error text %q", got)
	}
}

func TestPoisonConfigValidate(t *testing.T) {
	err := middleware.PoisonConfig{MaxDeliveries: -2, MaxErrorLen: -1}.Validate()
	for _, want := range []string{"Publisher", "Topic", "MaxDeliveries", "MaxErrorLen"} {
		if !strings.Contains(fmtErr(err), want) {
			t.Errorf("Validate error %q does not name %s", err, want)
		}
	}
	if _, err := middleware.Poison(middleware.PoisonConfig{}); !errors.Is(err, middleware.ErrInvalidConfig) {
		t.Errorf("Poison: %v", err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

type waitErr struct{}

func (waitErr) Error() string  { return "wait" }
func (waitErr) Deferred() bool { return true }

func TestPoisonNeverPoisonsDeferredErrors(t *testing.T) {
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	poison := mustMW(t)(middleware.Poison(middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: 1}))
	app := newApp(t, tr, nil, poison)
	c := newCalls()
	must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error {
		if c.n() < 2 {
			return c.add(ctx, fmt.Errorf("inbox: %w", waitErr{}))
		}
		return c.add(ctx, nil)
	}))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	drained(t, tr, "q")
	if c.n() != 3 {
		t.Errorf("%d calls, want 3 (two deferred deliveries redelivered)", c.n())
	}
	select {
	case m := <-poisoned:
		t.Errorf("deferred error poisoned: %v", m.Metadata)
	default:
	}
}

// A message poisoned before, redriven and failing again keeps its history:
// the earliest first failure, deliveries added up over the rounds, and the
// redrive count carried over.
func TestPoisonKeepsHistoryOfEarlierRounds(t *testing.T) {
	earlier := "2020-01-02T03:04:05.5Z"
	cases := []struct {
		name                   string
		carried                message.Metadata
		wantFirst              string // "" means this round's
		wantTotal, wantRedrive string
	}{
		{"first round", nil, "", "1", ""},
		{"redriven, with a total", message.Metadata{middleware.MetadataPoisonFirstFailure: earlier,
			middleware.MetadataPoisonTotalDeliveries: "5", middleware.MetadataPoisonRedrives: "2"}, earlier, "6", "2"},
		{"an earlier round's deliveries only", message.Metadata{middleware.MetadataPoisonFirstFailure: earlier,
			middleware.MetadataPoisonDeliveries: "3", middleware.MetadataPoisonRedrives: "1"}, earlier, "4", "1"},
		{"a first failure after this round's is not kept", message.Metadata{middleware.MetadataPoisonFirstFailure: "2999-01-01T00:00:00Z",
			middleware.MetadataPoisonRedrives: "1"}, "", "1", "1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newTransport(t)
			poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
			poison := mustMW(t)(middleware.Poison(middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic}))
			app := newApp(t, tr, nil, poison)
			must(t, eda.Handle(app, "q", func(ctx context.Context, e placed) error { return eda.Permanent(errors.New("no")) }))
			start(t, app)
			before := time.Now()
			msg := message.NewMessage("h-1", []byte(`{"id":"1"}`))
			msg.Metadata = message.Metadata{eda.MetadataID: "h-1", eda.MetadataType: "test.Placed", eda.MetadataSchemaVersion: "1"}
			for k, v := range c.carried {
				msg.Metadata[k] = v
			}
			must(t, tr.Publish(placedTopic, msg))
			md := receive(t, poisoned).Metadata
			first := md.Get(middleware.MetadataPoisonFirstFailure)
			if c.wantFirst != "" && first != c.wantFirst {
				t.Errorf("first failure %s, want the earlier round's %s", first, c.wantFirst)
			}
			if at, err := time.Parse(time.RFC3339Nano, first); c.wantFirst == "" && (err != nil || at.Before(before) || time.Since(at) > time.Minute) {
				t.Errorf("first failure %s (%v), want this round's", first, err)
			}
			if got := md.Get(middleware.MetadataPoisonTotalDeliveries); got != c.wantTotal {
				t.Errorf("total deliveries %s, want %s", got, c.wantTotal)
			}
			if got := md.Get(middleware.MetadataPoisonDeliveries); got != "1" {
				t.Errorf("deliveries of this round %s, want 1", got)
			}
			if got := md.Get(middleware.MetadataPoisonRedrives); got != c.wantRedrive {
				t.Errorf("redrives %s, want %s", got, c.wantRedrive)
			}
		})
	}
}
