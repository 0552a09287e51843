package postgres_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
)

const wait = 10 * time.Second

func receive(t *testing.T, ch <-chan *message.Message, what string) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatalf("%s: subscription closed", what)
		}
		return m
	case <-time.After(wait):
		t.Fatalf("%s: nothing received within %s", what, wait)
	}
	return nil
}

// waitEmpty polls until queue holds no message (acks are settled by the
// consumer after Ack returns).
func waitEmpty(t *testing.T, tr *postgres.Transport, queue string) {
	t.Helper()
	var visible, inFlight int
	if !poll.Until(wait, func() bool {
		var err error
		visible, inFlight, err = tr.Depth(context.Background(), queue)
		if errors.Is(err, transport.ErrUnavailable) {
			return false // e.g. a pooled connection that TestConnectionsKilled terminated: the next call takes a new one
		}
		if err != nil {
			t.Fatalf("Depth: %v", err)
		}
		return visible+inFlight == 0
	}) {
		t.Fatalf("queue %s still holds %d visible and %d in-flight messages after %s", queue, visible, inFlight, wait)
	}
}

func names(t *testing.T) (topic, queue string) {
	s := randomHex(4)
	return "topic-" + s, "queue-" + s
}

func msg(payload string) *message.Message {
	m := message.NewMessage(randomHex(16), []byte(payload))
	m.Metadata.Set(transport.MetadataEventID, m.UUID)
	return m
}

// Messages survive the transport: a new transport on the same schema (a
// restarted process) delivers what was published and not acked, including
// the message that was in a handler when the first one closed.
func TestRestartKeepsMessages(t *testing.T) {
	ctx := context.Background()
	topic, queue := names(t)
	first := newTransport(t, postgres.Config{})
	if err := first.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := first.Publish(topic, msg("acked"), msg("in handler at close"), msg("never received")); err != nil {
		t.Fatal(err)
	}
	ch, err := first.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, "first")
	if string(m.Payload) != "acked" {
		t.Fatalf("first message %q", m.Payload)
	}
	m.Ack()
	held := receive(t, ch, "second")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	held.Ack() // too late: the transport is closed, the message stays leased

	second := newTransport(t, postgres.Config{})
	ch2, err := second.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for range 2 {
		m := receive(t, ch2, "after restart")
		got[string(m.Payload)] = m.Metadata.Get(transport.MetadataReceiveCount)
		m.Ack()
	}
	want := map[string]string{"in handler at close": "2", "never received": "1"}
	for p, rc := range want {
		if got[p] != rc {
			t.Errorf("after restart: %q received with count %q, want %q (got %v)", p, got[p], rc, got)
		}
	}
	waitEmpty(t, second, queue)
}

// Messages published in the caller's transaction are delivered if and only
// if it commits.
func TestPublishTx(t *testing.T) {
	ctx := context.Background()
	pool, _ := testPool(t)
	tr := newTransport(t, postgres.Config{})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.PublishTx(ctx, tx, topic, msg("commit="+strconv.FormatBool(commit))); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// Delivery is in publish order: had the rolled-back message been
	// stored, it would come first.
	m := receive(t, ch, "committed message")
	if string(m.Payload) != "commit=true" {
		t.Fatalf("received %q, want the committed message only", m.Payload)
	}
	m.Ack()
	waitEmpty(t, tr, queue)
}

// Metadata comes back byte for byte, including what JSON or text columns
// would change or reject.
func TestMetadataExact(t *testing.T) {
	ctx := context.Background()
	tr := newTransport(t, postgres.Config{})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	sent := msg("\x00binary\xff payload")
	md := map[string]string{"nul": "a\x00b", "invalid-utf8": "\xff\xfe", "empty": "", "": "empty key", "long": strings.Repeat("é", 1000)}
	for k, v := range md {
		sent.Metadata.Set(k, v)
	}
	if err := tr.Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch, "message")
	defer got.Ack()
	if string(got.Payload) != string(sent.Payload) || got.UUID != sent.UUID {
		t.Errorf("got %q (uuid %s), sent %q (uuid %s)", got.Payload, got.UUID, sent.Payload, sent.UUID)
	}
	for k, v := range sent.Metadata {
		if g, ok := got.Metadata[k]; !ok || g != v {
			t.Errorf("metadata %q: got %q (present %t), want %q", k, g, ok, v)
		}
	}
}

// A consumer that stops gives back the messages it received in a batch but
// did not hand out, at once and with their receive count restored.
func TestStoppedConsumerGivesBackItsBatch(t *testing.T) {
	ctx := context.Background()
	tr := newTransport(t, postgres.Config{BatchSize: 10})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	for i := range 5 {
		msgs = append(msgs, msg(strconv.Itoa(i)))
	}
	if err := tr.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	subCtx, stop := context.WithCancel(ctx)
	ch, err := tr.Subscribe(subCtx, queue)
	if err != nil {
		t.Fatal(err)
	}
	receive(t, ch, "first").Ack()
	// The consumer holds the other four in its batch, leased for an hour.
	stop()
	for range ch {
	}
	ch2, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 5; i++ {
		m := receive(t, ch2, "given back message")
		if string(m.Payload) != strconv.Itoa(i) || m.Metadata.Get(transport.MetadataReceiveCount) != "1" {
			t.Errorf("got %q with receive count %s, want %d with 1", m.Payload, m.Metadata.Get(transport.MetadataReceiveCount), i)
		}
		m.Ack()
	}
}

// A dead-lettered message says where it came from, and a FIFO queue's
// dead-letter queue is FIFO too.
func TestDeadLetterSource(t *testing.T) {
	ctx := context.Background()
	tr := newTransport(t, postgres.Config{})
	topic, queue := names(t)
	q := transport.Queue{Name: queue, Topics: []string{topic}, FIFO: true, MaxReceiveCount: 1}
	if err := tr.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := tr.Subscribe(ctx, q.WithDefaults().DeadLetterQueue)
	if err != nil {
		t.Fatal(err)
	}
	m := msg("poison")
	m.Metadata.Set(transport.MetadataGroupID, "g")
	if err := tr.Publish(topic, m); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, "poison").Nack()
	dead := receive(t, dlq, "dead letter")
	defer dead.Ack()
	if dead.Metadata.Get(transport.MetadataDeadLetterSource) != queue || dead.Metadata.Get(transport.MetadataReceiveCount) != "1" ||
		dead.Metadata.Get(transport.MetadataGroupID) != "g" {
		t.Errorf("dead letter metadata %v: want source %q, receive count 1, group g", dead.Metadata, queue)
	}
	// Publishing to the FIFO queue's DLQ directly needs a group: it is FIFO.
	if err := tr.Declare(ctx, transport.Queue{Name: q.WithDefaults().DeadLetterQueue, FIFO: true, Topics: []string{topic + "-dlq"}}); err != nil {
		t.Fatalf("declaring the DLQ with its settings: %v", err)
	}
	if err := tr.Publish(topic+"-dlq", msg("no group")); !errors.Is(err, transport.ErrMissingGroupID) {
		t.Errorf("publish without group to the FIFO DLQ: %v, want ErrMissingGroupID", err)
	}
}

func TestDeclare(t *testing.T) {
	ctx := context.Background()
	tr := newTransport(t, postgres.Config{})
	_, queue := names(t)
	base := transport.Queue{Name: queue, Topics: []string{"a"}, VisibilityTimeout: time.Second, MaxReceiveCount: 3}
	if err := tr.Declare(ctx, base); err != nil {
		t.Fatal(err)
	}
	again := base
	again.Topics = []string{"b"}
	if err := tr.Declare(ctx, again); err != nil {
		t.Fatalf("declaring again with another topic: %v", err)
	}
	for name, change := range map[string]func(*transport.Queue){
		"visibility":   func(q *transport.Queue) { q.VisibilityTimeout = 2 * time.Second },
		"fifo":         func(q *transport.Queue) { q.FIFO = true },
		"max receives": func(q *transport.Queue) { q.MaxReceiveCount = 4 },
		"dlq":          func(q *transport.Queue) { q.DeadLetterQueue = queue + "-other" },
		"no dlq":       func(q *transport.Queue) { q.MaxReceiveCount = 0 },
	} {
		q := base
		change(&q)
		if err := tr.Declare(ctx, q); !errors.Is(err, transport.ErrInvalidConfig) {
			t.Errorf("%s changed: got %v, want ErrInvalidConfig", name, err)
		}
	}
	// The queue hears both topics.
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"a", "b"} {
		if err := tr.Publish(topic, msg(topic)); err != nil {
			t.Fatal(err)
		}
		if m := receive(t, ch, topic); string(m.Payload) != topic {
			t.Errorf("got %q, want %q", m.Payload, topic)
		} else {
			m.Ack()
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Declare(ctx, base); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Declare after Close: %v, want ErrClosed", err)
	}
	if err := tr.Publish("a", msg("x")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := tr.Subscribe(ctx, queue); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	pool, schema := freshSchema(t)
	cfg := postgres.Config{Pool: pool, Schema: schema}
	if _, err := postgres.New(ctx, cfg); !errors.Is(err, postgres.ErrSchemaVersion) {
		t.Fatalf("New before Migrate: %v, want ErrSchemaVersion", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs { // concurrent migrations serialize
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = postgres.Migrate(ctx, cfg)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	if err := postgres.Migrate(ctx, cfg); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	var versions int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "schema_version"}.Sanitize()).Scan(&versions); err != nil || versions != postgres.SchemaVersion {
		t.Fatalf("schema_version has %d rows (%v), want %d", versions, err, postgres.SchemaVersion)
	}
	tr, err := postgres.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New after Migrate: %v", err)
	}
	_ = tr.Close()

	// A schema newer than the package is refused.
	if _, err := pool.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "schema_version"}.Sanitize()+" (version) VALUES ($1)", postgres.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.New(ctx, cfg); !errors.Is(err, postgres.ErrSchemaVersion) {
		t.Errorf("New on a newer schema: %v, want ErrSchemaVersion", err)
	}
	if err := postgres.Migrate(ctx, cfg); !errors.Is(err, postgres.ErrSchemaVersion) {
		t.Errorf("Migrate on a newer schema: %v, want ErrSchemaVersion", err)
	}
}

// SchemaSQL is what Migrate applies, for external migration tools.
func TestSchemaSQL(t *testing.T) {
	ctx := context.Background()
	pool, schema := freshSchema(t)
	sql, err := postgres.SchemaSQL(schema)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, sql); err != nil {
		t.Fatalf("applying SchemaSQL: %v", err)
	}
	cfg := postgres.Config{Pool: pool, Schema: schema}
	tr, err := postgres.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New on a schema made with SchemaSQL: %v", err)
	}
	_ = tr.Close()
	if err := postgres.Migrate(ctx, cfg); err != nil {
		t.Fatalf("Migrate on a schema made with SchemaSQL: %v", err)
	}
	if _, err := postgres.SchemaSQL("Bad-Name"); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Errorf("SchemaSQL with a bad name: %v, want ErrInvalidConfig", err)
	}
}

func TestConfigValidate(t *testing.T) {
	pool, _ := testPool(t)
	tests := []struct {
		name     string
		cfg      postgres.Config
		problems int
	}{
		{"pool", postgres.Config{Pool: pool}, 0},
		{"dsn", postgres.Config{DSN: testDSN(), Schema: "s_1", PollInterval: time.Second, BatchSize: 1, MaxMessageSize: -1, DedupWindow: time.Minute}, 0},
		{"neither", postgres.Config{}, 1},
		{"both", postgres.Config{Pool: pool, DSN: testDSN()}, 1},
		{"bad dsn", postgres.Config{DSN: "postgres://a:b@:x/"}, 1},
		{"max batch below batch", postgres.Config{Pool: pool, BatchSize: 20, MaxBatchSize: 10}, 1},
		{"max batch below default batch", postgres.Config{Pool: pool, MaxBatchSize: 5}, 1},
		{"max batch at batch", postgres.Config{Pool: pool, BatchSize: 20, MaxBatchSize: 20}, 0},
		{"everything wrong", postgres.Config{Schema: "1 bad", PollInterval: -1, BatchSize: -1, MaxBatchSize: -1, MaxMessageSize: -2, DedupWindow: -1}, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.problems == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, transport.ErrInvalidConfig) {
				t.Fatalf("Validate: %v, want ErrInvalidConfig", err)
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) || len(joined.Unwrap()) != tc.problems {
				t.Errorf("Validate reported %v, want %d problems", err, tc.problems)
			}
			if _, nerr := postgres.New(context.Background(), tc.cfg); !errors.Is(nerr, transport.ErrInvalidConfig) {
				t.Errorf("New: %v, want ErrInvalidConfig", nerr)
			}
		})
	}
}

// An unreachable database is transport.ErrUnavailable.
func TestUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := postgres.New(ctx, postgres.Config{DSN: "postgres://postgres@127.0.0.1:1/test?connect_timeout=2"})
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("New on a closed port: %v, want ErrUnavailable", err)
	}
}

// Consumers wake on NOTIFY (the poll interval here is an hour), also after
// the listening connection was lost and re-established.
func TestNotifyWakesConsumersAfterReconnect(t *testing.T) {
	ctx := context.Background()
	pool, schema := testPool(t)
	tr := newTransport(t, postgres.Config{PollInterval: time.Hour})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	listen := `LISTEN "` + schema + `_messages"`
	listener := func() int {
		var pid int
		err := pool.QueryRow(ctx, `SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE query = $1`, listen).Scan(&pid)
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	waitListener := func(not int) int {
		var pid int
		if !poll.Until(wait, func() bool { pid = listener(); return pid != 0 && pid != not }) {
			t.Fatalf("no LISTEN connection (other than %d) after %s", not, wait)
		}
		return pid
	}
	pid := waitListener(0)
	// The consumer is idle for an hour unless notified.
	if err := tr.Publish(topic, msg("before")); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, "notified message").Ack()

	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	waitListener(pid)
	if err := tr.Publish(topic, msg("after")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, "message after the listener reconnected"); string(m.Payload) != "after" {
		t.Fatalf("got %q", m.Payload)
	} else {
		m.Ack()
	}
}

// A deduplication id is forgotten after the window.
func TestDedupWindowExpires(t *testing.T) {
	ctx := context.Background()
	tr := newTransport(t, postgres.Config{DedupWindow: time.Millisecond})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, FIFO: true}); err != nil {
		t.Fatal(err)
	}
	publish := func() {
		m := msg("same")
		m.Metadata.Set(transport.MetadataGroupID, "g")
		m.Metadata.Set(transport.MetadataDedupID, "same-id")
		if err := tr.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	deadline := time.Now().Add(wait)
	for {
		publish()
		visible, _, err := tr.Depth(ctx, queue)
		if err != nil {
			t.Fatal(err)
		}
		if visible == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a duplicate published after the 1ms window was still dropped after %s (%d visible)", wait, visible)
		}
	}
}

// Several publishers write to one FIFO group at once: each publisher's
// messages arrive in its order, and never two of the group at once.
func TestFIFOConcurrentPublishersOneGroup(t *testing.T) {
	ctx := context.Background()
	pool, schema := testPool(t)
	tr := newTransport(t, postgres.Config{})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, FIFO: true}); err != nil {
		t.Fatal(err)
	}
	const publishers, each = 4, 20
	var mu sync.Mutex
	next := map[string]int{}
	inFlight, total := 0, 0
	var problems []string
	done := make(chan struct{})
	for range 2 {
		ch, err := tr.Subscribe(ctx, queue)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for m := range ch {
				p := m.Metadata.Get("publisher")
				seq, _ := strconv.Atoi(m.Metadata.Get("seq"))
				mu.Lock()
				inFlight++
				if inFlight > 1 {
					problems = append(problems, "two messages of the group in flight")
				}
				if seq != next[p] {
					problems = append(problems, p+": got "+strconv.Itoa(seq)+", want "+strconv.Itoa(next[p]))
				}
				next[p] = seq + 1
				mu.Unlock()
				// The handler's work: the database must show this message
				// as the group's only lease.
				var leased int
				err := pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".messages WHERE queue = $1 AND visible_at > now()", queue).Scan(&leased)
				mu.Lock()
				if err != nil {
					problems = append(problems, err.Error())
				} else if leased != 1 {
					problems = append(problems, strconv.Itoa(leased)+" messages of the group leased at once")
				}
				inFlight--
				total++
				if total == publishers*each {
					close(done)
				}
				mu.Unlock()
				m.Ack()
			}
		}()
	}
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m := msg("x")
				m.Metadata.Set(transport.MetadataGroupID, "one-group")
				m.Metadata.Set("publisher", strconv.Itoa(p))
				m.Metadata.Set("seq", strconv.Itoa(i))
				if err := tr.Publish(topic, m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatalf("received %d of %d", total, publishers*each)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatal(strings.Join(problems, "\n"))
	}
}

// Killing every connection of the transport (a database restart, a network
// cut) loses nothing: consumers and the listener reconnect and every
// message is delivered, at least once.
func TestConnectionsKilled(t *testing.T) {
	ctx := context.Background()
	pool, schema := testPool(t)
	app := "eda_pgtest_kill_" + randomHex(4)
	dsn := testDSN() + "&application_name=" + app
	if !strings.Contains(testDSN(), "?") {
		dsn = testDSN() + "?application_name=" + app
	}
	tr := newTransport(t, postgres.Config{DSN: dsn, Schema: schema})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	const n = 30
	var msgs []*message.Message
	for i := range n {
		msgs = append(msgs, msg(strconv.Itoa(i)))
	}
	if err := tr.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range n / 3 {
		m := receive(t, ch, "before the kill")
		seen[string(m.Payload)] = true
		m.Ack()
	}
	var killed int
	if err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatalf("no connection with application_name %s to kill", app)
	}
	for len(seen) < n {
		m := receive(t, ch, "after the kill ("+strconv.Itoa(len(seen))+" of "+strconv.Itoa(n)+" seen)")
		seen[string(m.Payload)] = true
		m.Ack()
	}
	waitEmpty(t, tr, queue)
}

// A publish that fails inside the caller's transaction leaves that
// transaction usable: what the caller did before and after still commits.
func TestPublishTxFailureKeepsCallerTx(t *testing.T) {
	ctx := context.Background()
	pool, _ := testPool(t)
	tr := newTransport(t, postgres.Config{})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, FIFO: true}); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	good := func(payload string) *message.Message {
		m := msg(payload)
		m.Metadata.Set(transport.MetadataGroupID, "g")
		return m
	}
	if err := tr.PublishTx(ctx, tx, topic, good("before")); err != nil {
		t.Fatal(err)
	}
	if err := tr.PublishTx(ctx, tx, topic, good("dropped with the failed publish"), msg("no group")); !errors.Is(err, transport.ErrMissingGroupID) {
		t.Fatalf("PublishTx without a group to a FIFO queue: %v, want ErrMissingGroupID", err)
	}
	if err := tr.PublishTx(ctx, tx, topic, good("after")); err != nil {
		t.Fatalf("PublishTx after a failed one: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("Commit after a failed publish: %v", err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"before", "after"} {
		m := receive(t, ch, want)
		if string(m.Payload) != want {
			t.Fatalf("got %q, want %q", m.Payload, want)
		}
		m.Ack()
	}
	waitEmpty(t, tr, queue)
}

// PublishTx on a plain connection, in and out of a transaction.
func TestPublishTxConn(t *testing.T) {
	ctx := context.Background()
	pool, _ := testPool(t)
	tr := newTransport(t, postgres.Config{})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if err := tr.PublishTx(ctx, conn.Conn(), topic, msg("autocommit")); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if err := tr.PublishTx(ctx, conn.Conn(), topic, msg("rolled back")); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, "autocommit"); string(m.Payload) != "autocommit" {
		t.Fatalf("got %q", m.Payload)
	} else {
		m.Ack()
	}
	waitEmpty(t, tr, queue)
}

// Delays are rows' visible_at: a delayed message and a message nacked with a
// redelivery delay stay invisible through a restart of the transport (a
// crashed process) and come back when their delay is over. A delayed
// message holds back the rest of its FIFO group.
func TestDelaysSurviveRestart(t *testing.T) {
	ctx := context.Background()
	topic, queue := names(t)
	fifoTopic, fifoQueue := names(t)
	const delay = 800 * time.Millisecond
	first := newTransport(t, postgres.Config{})
	for _, q := range []transport.Queue{
		{Name: queue, Topics: []string{topic}, VisibilityTimeout: time.Minute},
		{Name: fifoQueue, Topics: []string{fifoTopic}, FIFO: true, VisibilityTimeout: time.Minute},
	} {
		if err := first.Declare(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	nackMe := msg("nacked with a delay")
	if err := first.Publish(topic, nackMe); err != nil {
		t.Fatal(err)
	}
	ch, err := first.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, "first delivery")
	transport.SetRedeliveryDelay(m, delay)
	m.Nack()
	later := msg("delivered later")
	deliverAt := time.Now().Add(delay)
	transport.SetDeliverAt(later, deliverAt)
	if err := first.Publish(topic, later); err != nil {
		t.Fatal(err)
	}
	grouped := func(p string) *message.Message {
		m := msg(p)
		m.Metadata.Set(transport.MetadataGroupID, "g")
		return m
	}
	head, next := grouped("delayed head"), grouped("after the head")
	transport.SetDeliverAt(head, deliverAt)
	if err := first.Publish(fifoTopic, head, next); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil { // writes the nack
		t.Fatal(err)
	}

	second := newTransport(t, postgres.Config{})
	for _, tc := range []struct {
		queue string
		want  []string
	}{
		{queue, []string{"delivered later", "nacked with a delay"}},
		{fifoQueue, []string{"delayed head", "after the head"}},
	} {
		ch, err := second.Subscribe(ctx, tc.queue)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for i := range tc.want {
			m := receive(t, ch, tc.queue)
			if now := time.Now(); now.Before(deliverAt) {
				t.Errorf("%s: %q delivered %s before its delay was over", tc.queue, m.Payload, deliverAt.Sub(now))
			}
			if tc.queue == fifoQueue && string(m.Payload) != tc.want[i] {
				t.Errorf("FIFO: delivery %d is %q, want %q", i, m.Payload, tc.want[i])
			}
			got[string(m.Payload)] = true
			m.Ack()
		}
		for _, p := range tc.want {
			if !got[p] {
				t.Errorf("%s: %q not delivered (got %v)", tc.queue, p, got)
			}
		}
	}
}

// A consumer whose handlers finish a batch faster than the query that
// received it takes larger batches, up to MaxBatchSize; with slow handlers, or
// MaxBatchSize = BatchSize, it keeps BatchSize. Seen from outside: how many
// messages are leased while one is in its handler.
func TestBatchGrowsForFastHandlers(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cfg          postgres.Config
		handle       time.Duration // each handler's work
		hold         int           // the message held in its handler
		minIn, maxIn int           // leased then
	}{
		{"fast handlers grow", postgres.Config{BatchSize: 1, MaxBatchSize: 100}, 0, 60, 5, 200},
		{"fixed batch", postgres.Config{BatchSize: 1, MaxBatchSize: 1}, 0, 60, 1, 2},
		{"slow handlers keep BatchSize", postgres.Config{BatchSize: 1, MaxBatchSize: 100}, 30 * time.Millisecond, 8, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			tc.cfg.DisableNotify = true
			tr := newTransport(t, tc.cfg)
			topic, queue := names(t)
			if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: time.Hour}); err != nil {
				t.Fatal(err)
			}
			var msgs []*message.Message
			for i := range 300 {
				msgs = append(msgs, msg(strconv.Itoa(i)))
			}
			if err := tr.Publish(topic, msgs...); err != nil {
				t.Fatal(err)
			}
			ch, err := tr.Subscribe(ctx, queue)
			if err != nil {
				t.Fatal(err)
			}
			for range tc.hold {
				m := receive(t, ch, "message")
				time.Sleep(tc.handle) // the handler's work
				m.Ack()
			}
			held := receive(t, ch, "held message")
			defer held.Ack()
			_, inFlight, err := tr.Depth(ctx, queue)
			if err != nil {
				t.Fatal(err)
			}
			if inFlight < tc.minIn || inFlight > tc.maxIn {
				t.Errorf("%d messages leased with one in its handler, want %d to %d", inFlight, tc.minIn, tc.maxIn)
			}
		})
	}
}

// The consumers of a queue in one transport receive together: one batch
// feeds them all, instead of each leasing a batch of its own.
func TestConsumersShareTheirBatch(t *testing.T) {
	ctx := context.Background()
	tr := newTransport(t, postgres.Config{BatchSize: 10, MaxBatchSize: 10, DisableNotify: true})
	topic, queue := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	for i := range 30 {
		msgs = append(msgs, msg(strconv.Itoa(i)))
	}
	if err := tr.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	var held []*message.Message
	for range 3 {
		ch, err := tr.Subscribe(ctx, queue)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, receive(t, ch, "message"))
	}
	defer func() {
		for _, m := range held {
			m.Ack()
		}
	}()
	_, inFlight, err := tr.Depth(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	if inFlight != 10 {
		t.Errorf("%d messages leased with three consumers holding one each, want one batch of 10", inFlight)
	}
}

// Concurrent publishes are written together, yet each call is all or
// nothing with its own error: publishes that fail (no group id for a FIFO
// queue) beside ones that succeed store nothing and fail alone.
func TestConcurrentPublishesFailAlone(t *testing.T) {
	ctx := context.Background()
	tr := newTransport(t, postgres.Config{})
	good, queue := names(t)
	bad, fifo := names(t)
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{good}}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Declare(ctx, transport.Queue{Name: fifo, Topics: []string{bad}, FIFO: true}); err != nil {
		t.Fatal(err)
	}
	const calls = 200
	errs := make([]error, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := good
			if i%2 == 1 {
				topic = bad
			}
			errs[i] = tr.Publish(topic, msg(strconv.Itoa(i)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 && err != nil {
			t.Errorf("publish %d to a standard queue: %v", i, err)
		}
		if i%2 == 1 && !errors.Is(err, transport.ErrMissingGroupID) {
			t.Errorf("publish %d without group id to a FIFO queue: %v, want ErrMissingGroupID", i, err)
		}
	}
	if visible, _, err := tr.Depth(ctx, queue); err != nil || visible != calls/2 {
		t.Errorf("standard queue holds %d messages (%v), want %d", visible, err, calls/2)
	}
	if visible, _, err := tr.Depth(ctx, fifo); err != nil || visible != 0 {
		t.Errorf("FIFO queue holds %d messages (%v), want 0", visible, err)
	}
}
