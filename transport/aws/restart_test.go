package aws_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// ownEmulator is a fauxqs of the test's own, on a free port: the test may
// restart it (never the shared one on 4566, which other tests use).
type ownEmulator struct {
	t    *testing.T
	port string
	url  string
}

func startOwnEmulator(t *testing.T) *ownEmulator {
	t.Helper()
	requireEmulator(t) // the shared one is up: the install is there
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	e := &ownEmulator{t: t, port: port, url: "http://127.0.0.1:" + port}
	e.run("up")
	t.Cleanup(func() { e.run("down") })
	return e
}

// run calls scripts/emulator.sh with this emulator's port.
func (e *ownEmulator) run(cmd string) {
	e.t.Helper()
	script, _ := filepath.Abs("../../scripts/emulator.sh")
	c := exec.Command(script, cmd)
	c.Env = append(os.Environ(), "EDA_EMULATOR_PORT="+e.port)
	if out, err := c.CombinedOutput(); err != nil {
		e.t.Fatalf("EDA_EMULATOR_PORT=%s scripts/emulator.sh %s: %v\n%s", e.port, cmd, err, out)
	}
}

func (e *ownEmulator) healthy() bool {
	resp, err := (&http.Client{Timeout: time.Second}).Get(e.url + "/health")
	if err == nil {
		resp.Body.Close()
	}
	return err == nil && resp.StatusCode == http.StatusOK
}

// publishLog wraps the relay's publisher and records when each event was
// reported published.
type publishLog struct {
	message.Publisher
	mu sync.Mutex
	at map[string]time.Time // event id → first successful Publish
}

func (p *publishLog) Publish(topic string, msgs ...*message.Message) error {
	err := p.Publisher.Publish(topic, msgs...)
	notSent := map[string]bool{}
	if pe, ok := err.(interface{ NotSent() []string }); ok {
		for _, id := range pe.NotSent() {
			notSent[id] = true
		}
	} else if err != nil {
		return err
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		if _, ok := p.at[m.UUID]; !ok && !notSent[m.UUID] {
			p.at[m.UUID] = now
		}
	}
	return err
}

// receipts is the set of event ids a consumer received.
type receipts struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (r *receipts) add(id string) { r.mu.Lock(); r.ids[id] = true; r.mu.Unlock() }
func (r *receipts) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

// TestEmulatorRestart runs an orders-like system on an emulator of its own
// (outbox on Postgres, relay, two consumer queues of one topic, each
// consumer a transport of its own as in separate processes; the publisher
// knows the consumers' queues from Config.Topology), restarts the emulator
// (it keeps no state) while orders are being written, and checks that every
// event the relay counted as published after the restart reached both
// consumers, and that nothing is left pending or failed. Before the fix, the
// relay re-created a bare topic, marked the backlog published into it, and
// the consumers never re-declared their queues.
func TestEmulatorRestart(t *testing.T) {
	emu := startOwnEmulator(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	pool, err := pgxpool.New(ctx, testDSN())
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("Postgres at %s: %v; start it with: scripts/postgres.sh", testDSN(), err)
	}
	t.Cleanup(pool.Close)
	schema := strings.ReplaceAll(uniq("restart"), "-", "_")
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	store, err := pgxstore.New(pool, pgxstore.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	topic := uniq("orders")
	queues := []string{uniq("inventory"), uniq("notification")}
	var topo edaaws.Topology
	for _, q := range queues {
		topo.Queues = append(topo.Queues, edaaws.Queue{Queue: transport.Queue{Name: q, Topics: []string{topic}, VisibilityTimeout: 5 * time.Second}})
	}
	cfg := func() edaaws.Config {
		c := testConfig(t)
		c.Endpoint, c.WaitTime = emu.url, time.Second
		return c
	}

	// The consumers: each its own transport, declaring its own queue.
	got := make([]*receipts, len(queues))
	for i, q := range queues {
		tr := newTransport(t, cfg())
		if err := tr.Declare(ctx, topo.Queues[i].Queue); err != nil {
			t.Fatal(err)
		}
		ch, err := tr.Subscribe(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got[i] = &receipts{ids: map[string]bool{}}
		go func() { // ends when the transport closes
			for m := range ch {
				got[i].add(m.UUID)
				m.Ack()
			}
		}()
	}

	// The order service: writes orders' events to the outbox; its relay
	// publishes them through a transport that declares no queue.
	pcfg := cfg()
	pcfg.Topology = topo
	pub := &publishLog{Publisher: newTransport(t, pcfg), at: map[string]time.Time{}}
	relay, err := outbox.NewRelay(outbox.RelayConfig{Store: store, Publisher: pub,
		PollInterval: 100 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Go(func() { _ = relay.Run(runCtx) })
	var committed []string
	var writeErrs atomic.Int64
	writing, stopWriting := context.WithCancel(ctx)
	var writer sync.WaitGroup
	writer.Go(func() {
		for n := 0; writing.Err() == nil; n++ {
			m := newMsg(fmt.Sprint("order ", n), nil)
			rec, err := outbox.NewRecord(topic, m)
			if err != nil {
				t.Error(err)
				return
			}
			tx, err := store.Begin(ctx)
			if err == nil {
				if err = tx.WriteRecords(rec); err == nil {
					err = tx.Commit(ctx)
				}
			}
			if err != nil {
				writeErrs.Add(1)
			} else {
				committed = append(committed, m.UUID)
			}
			select {
			case <-writing.Done():
			case <-time.After(10 * time.Millisecond): // the pace of the orders
			}
		}
	})
	defer func() { stopWriting(); writer.Wait(); stop(); bg.Wait() }()

	reached := func(id string) bool { return got[0].has(id) && got[1].has(id) }
	// Running: orders arrive.
	if !poll.Until(20*time.Second, func() bool {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		n := 0
		for id := range pub.at {
			if reached(id) {
				n++
			}
		}
		return n >= 30
	}) {
		t.Fatal("no order reached both consumers before the restart")
	}

	// The restart, orders still coming: down for a second, then up empty.
	emu.run("down")
	down := time.Now()
	time.Sleep(time.Second) // the outage, not a wait for an effect
	emu.run("up")
	if !emu.healthy() {
		t.Fatal("the emulator did not come back")
	}
	time.Sleep(2 * time.Second) // orders keep coming after the restart
	stopWriting()
	writer.Wait()
	if writeErrs.Load() > 0 {
		t.Fatalf("%d outbox writes failed", writeErrs.Load())
	}

	// Everything the relay counted as published after the outage began
	// reaches both consumers; nothing is pending or failed.
	var after []string
	missing := func() (n int, example string) {
		pub.mu.Lock()
		defer pub.mu.Unlock()
		after = after[:0]
		for id, at := range pub.at {
			if at.After(down) {
				after = append(after, id)
				if !reached(id) {
					n++
					example = id
				}
			}
		}
		return n, example
	}
	if !poll.Until(40*time.Second, func() bool {
		st, err := store.Stats(ctx)
		n, _ := missing()
		return err == nil && st.Pending == 0 && n == 0
	}) {
		st, _ := store.Stats(ctx)
		n, ex := missing()
		t.Fatalf("after the restart: %d of %d events published after it reached not both consumers (e.g. %s); outbox pending %d failed %d",
			n, len(after), ex, st.Pending, st.Failed)
	}
	st, err := store.Stats(ctx)
	if err != nil || st.Failed != 0 {
		t.Fatalf("outbox: %+v %v, want none failed", st, err)
	}
	pub.mu.Lock()
	published := len(pub.at)
	var lost int
	for id, at := range pub.at {
		if !at.After(down) && !reached(id) {
			lost++ // in a queue when the emulator lost its state
		}
	}
	pub.mu.Unlock()
	if published != len(committed) {
		t.Errorf("%d events committed, %d published", len(committed), published)
	}
	if len(after) == 0 {
		t.Fatal("no event was published after the restart: the test proves nothing")
	}
	t.Logf("%d committed, %d published, %d of them after the outage began, all received by both consumers; %d published before it were lost with the emulator's state",
		len(committed), published, len(after), lost)
	stop()
}
