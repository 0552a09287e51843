package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// The example's names (examples/orders/events.go).
const (
	topicOrders       = "orders"
	queueInventory    = "inventory"
	queueNotification = "notification"
	queueOrderStatus  = "order-status"
	queuePoison       = "orders-poison"
	outboxTable       = "eda_outbox"
)

// phase is one mode of a run (standard or FIFO queues): its processes, its
// schema and prefix, its history.
type phase struct {
	cfg      config
	index    int
	mode     string // "standard" or "fifo"
	fifo     bool
	run      string // run id: order ids, schema, prefix and application names carry it
	schema   string
	prefix   string
	dir      string
	emu      *emulator
	px       *proxies
	admin    *pgxpool.Pool // direct, search_path = schema
	broker   *edaaws.Transport
	sqs      *sqs.Client
	slots    []string
	services map[string]*service // by slot
	orders   []*order
	stock    map[string]int
	poison   map[string]bool // event ids of the poison messages injected
	mem      []memSample
	memMu    sync.Mutex
	began    time.Time
	logMu    sync.Mutex
}

type memSample struct {
	At       time.Duration
	Accepted int64
	Slot     string
	RSSKB    int64
}

func (p *phase) logf(format string, args ...any) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	fmt.Fprintf(os.Stdout, "[%s %7.1fs] %s\n", p.mode, time.Since(p.began).Seconds(), fmt.Sprintf(format, args...))
}

func (p *phase) appName(slot string) string {
	return "chaos_" + p.run + "_" + strings.ReplaceAll(slot, "-", "_")
}

// queueName is the physical SQS name of one of the example's queues.
func (p *phase) queueName(q string) string {
	n := p.prefix + q
	if p.fifo {
		n += ".fifo"
	}
	return n
}

// setup starts the proxies and the processes (consumers first, so their
// queues are subscribed before the first order is published), then seeds
// the catalogue.
func (p *phase) setup(ctx context.Context, bin string) error {
	pgURL, err := url.Parse(p.cfg.PG)
	if err != nil {
		return fmt.Errorf("-pg: %w", err)
	}
	pgUpstream := pgURL.Host
	if pgURL.Port() == "" {
		pgUpstream = net.JoinHostPort(pgURL.Hostname(), "5432")
	}
	p.services = map[string]*service{}
	roles := []string{"inventory", "notification", "orders"}
	for _, role := range roles {
		for i := 1; i <= 2; i++ {
			slot := fmt.Sprintf("%s-%d", role, i)
			pgpx, err := p.px.add(p.mode+"-"+slot+"-pg", pgUpstream)
			if err != nil {
				return err
			}
			emupx, err := p.px.add(p.mode+"-"+slot+"-emu", p.emu.addr())
			if err != nil {
				return err
			}
			dsn := *pgURL
			dsn.Host = pgpx.Listen
			q := dsn.Query()
			q.Set("sslmode", "disable")
			q.Set("application_name", p.appName(slot))
			dsn.RawQuery = q.Encode()
			addr := "127.0.0.1:0"
			s := &service{slot: slot, role: role, bin: bin, logPath: filepath.Join(p.dir, slot+".log"), pg: pgpx, emu: emupx}
			if role == "orders" {
				port, err := freePort()
				if err != nil {
					return err
				}
				addr = "127.0.0.1:" + strconv.Itoa(port)
				s.httpAddr = addr
			}
			s.args = []string{"-role", role, "-db", dsn.String(), "-transport", "aws", "-aws-endpoint", "http://" + emupx.Listen,
				"-schema", p.schema, "-prefix", p.prefix, "-orders", "0", "-serve", "-addr", addr}
			if p.fifo {
				s.args = append(s.args, "-fifo")
			}
			if p.cfg.Verbose {
				s.args = append(s.args, "-v")
			}
			p.services[slot] = s
			p.slots = append(p.slots, slot)
		}
	}
	start := func(role string) error {
		for _, slot := range p.slots {
			if s := p.services[slot]; s.role == role {
				if err := s.start(); err != nil {
					return fmt.Errorf("%s: %w", slot, err)
				}
			}
		}
		return nil
	}
	if err := start("inventory"); err != nil {
		return err
	}
	if err := start("notification"); err != nil {
		return err
	}
	for _, q := range []string{queueInventory, queueNotification} {
		name := p.queueName(q)
		if !pollCtx(ctx, 90*time.Second, func() bool {
			_, err := p.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &name})
			return err == nil
		}) {
			return fmt.Errorf("queue %s not declared within 90s; logs in %s", name, p.dir)
		}
	}
	if err := start("orders"); err != nil {
		return err
	}
	for _, slot := range p.slots {
		if s := p.services[slot]; s.role == "orders" && !waitHTTP(ctx, s.httpAddr, 90*time.Second) {
			return fmt.Errorf("%s does not answer on %s within 90s: %s", slot, s.httpAddr, lastLines(s.logPath, 5))
		}
	}
	// The topology is in place once every queue exists; wait for the
	// poison queue and the order-status queue too.
	for _, q := range []string{queueOrderStatus, queuePoison} {
		name := p.prefix + q
		if p.fifo && q != queuePoison {
			name += ".fifo"
		}
		if !pollCtx(ctx, 90*time.Second, func() bool {
			_, err := p.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &name})
			return err == nil
		}) {
			return fmt.Errorf("queue %s not declared within 90s", name)
		}
	}
	p.stock = initialStock(len(p.orders))
	for sku, n := range p.stock {
		if _, err := p.admin.Exec(ctx, `INSERT INTO products (sku, stock) VALUES ($1, $2)`, sku, n); err != nil {
			return fmt.Errorf("seed products: %w", err)
		}
	}
	return nil
}

func pollCtx(ctx context.Context, within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// newBroker is the harness's own client of the emulator (not through a
// proxy): it injects the poison messages and duplicates and reads the
// queues at the end.
func newBroker(endpoint string) (*edaaws.Transport, *sqs.Client, error) {
	cfg := awssdk.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")}
	tr, err := edaaws.New(edaaws.Config{AWS: cfg, Endpoint: endpoint, AccountID: "000000000000"})
	if err != nil {
		return nil, nil, err
	}
	return tr, tr.SQS(), nil
}

// injectPoison publishes n OrderCreated messages nobody can decode straight
// to the orders topic, as a producer with a bug would: each must end in the
// poison queue, once per consuming queue, with its reason.
func (p *phase) injectPoison(n int) error {
	p.poison = map[string]bool{}
	for i := range n {
		id := uuid.NewString()
		msg := message.NewMessage(id, []byte(`{"order_id": "broken", "items": [`))
		eda.Envelope{ID: id, Source: "chaos/broken-producer", Type: "orders.OrderCreated", Time: time.Now(),
			ContentType: "application/json", SchemaVersion: 1, CorrelationID: id,
			OrderingKey: fmt.Sprintf("%s-broken-%d", p.run, i)}.Apply(msg.Metadata)
		msg.Metadata.Set(transport.MetadataDedupID, id)
		if err := p.broker.Publish(p.prefix+topicOrders, msg); err != nil {
			return fmt.Errorf("inject poison: %w", err)
		}
		p.poison[id] = true
	}
	return nil
}

// duplicate sends up to n published outbox records again, with their event
// ids (a relay that crashed between publish and mark, or a broker
// delivering twice). On FIFO they get a new deduplication id, as a
// republish after the deduplication window would.
func (p *phase) duplicate(ctx context.Context, n int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	rows, err := p.admin.Query(ctx, `SELECT event_id, topic, payload, metadata FROM (
		SELECT event_id, topic, payload, metadata FROM `+outboxTable+`_done WHERE state = 1 ORDER BY published_at DESC LIMIT 2000) r
		ORDER BY random() LIMIT $1`, n)
	if err != nil {
		return 0, err
	}
	type rec struct {
		id, topic string
		payload   []byte
		md        []byte
	}
	var recs []rec
	for rows.Next() {
		var r rec
		if err := rows.Scan(&r.id, &r.topic, &r.payload, &r.md); err != nil {
			rows.Close()
			return 0, err
		}
		recs = append(recs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	sent := 0
	for _, r := range recs {
		md, err := outbox.UnmarshalMetadata(r.md)
		if err != nil {
			return sent, err
		}
		msg := (outbox.Record{EventID: r.id, Topic: r.topic, Payload: r.payload, Metadata: md}).Message()
		if p.fifo {
			msg.Metadata.Set(transport.MetadataDedupID, r.id+"-dup-"+uuid.NewString()[:8])
		}
		if err := p.broker.Publish(r.topic, msg); err != nil {
			return sent, err
		}
		sent++
	}
	return sent, nil
}

// sampleMemory records the resident memory of every process every 2s.
func (p *phase) sampleMemory(ctx context.Context, l *load) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at, acc := time.Since(p.began), l.accepted.Load()
		p.memMu.Lock()
		for _, slot := range p.slots {
			if kb := rssKB(p.services[slot].pid()); kb > 0 {
				p.mem = append(p.mem, memSample{At: at, Accepted: acc, Slot: slot, RSSKB: kb})
			}
		}
		if kb := rssKB(p.emu.pid()); kb > 0 {
			p.mem = append(p.mem, memSample{At: at, Accepted: acc, Slot: "emulator", RSSKB: kb})
		}
		p.memMu.Unlock()
	}
}

// result is what a phase reports.
type result struct {
	Mode             string
	Orders           int
	Accepted         int
	GaveUp           int
	LoadTime         time.Duration
	DrainTime        time.Duration
	OrdersPerSec     float64
	P50, P99, Max    time.Duration
	Faults           []fault
	FaultCounts      map[string]int
	LongestRecovery  time.Duration
	RecoveryAfter    string // the fault after which it took longest
	Reserved         int
	Rejected         int
	Memory           []memRow
	Crashes          []string
	Violations       []violation
	Invariants       []invariant
	DuplicatesSent   int
	PoisonInjected   int
	Seed             uint64
	ProcessRestarts  int
	EmulatorRestarts int
}

type memRow struct {
	Slot               string
	FirstKB, LastKB    int64
	MaxKB              int64
	FirstWin, LastWin  string
	Leak               bool
	Judged             bool
	Samples, Processes int
}

// execute runs the load and the nemesis, drains, checks.
func (p *phase) execute(ctx context.Context) (*result, error) {
	res := &result{Mode: p.mode, Orders: len(p.orders), Seed: p.cfg.Seed, FaultCounts: map[string]int{}}
	addrs := []string{}
	for _, slot := range p.slots {
		if s := p.services[slot]; s.role == "orders" {
			addrs = append(addrs, s.httpAddr)
		}
	}
	l := &load{orders: p.orders, addrs: addrs, clients: p.cfg.Clients, giveUp: p.cfg.GiveUp,
		client:  &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: p.cfg.Clients}},
		backlog: int64(p.cfg.Backlog)}
	if err := p.injectPoison(p.cfg.Poison); err != nil {
		return nil, err
	}
	res.PoisonInjected = p.cfg.Poison

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	nem := &nemesis{p: p, sched: newSchedule(p.cfg.Seed, p.index, p.slots), began: p.began}
	var wg sync.WaitGroup
	faultCtx, stopFaults := context.WithCancel(ctx)
	defer stopFaults()
	if !p.cfg.NoFaults {
		wg.Add(1)
		go func() { defer wg.Done(); nem.run(faultCtx) }()
	}
	memCtx, stopMem := context.WithCancel(ctx)
	defer stopMem()
	go p.sampleMemory(memCtx, l)
	progressDone := make(chan struct{})
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-progressDone:
				return
			case <-t.C:
			}
			var final int64
			if err := p.admin.QueryRow(ctx, `SELECT count(*) FROM orders WHERE status <> 'pending'`).Scan(&final); err == nil {
				l.final.Store(final)
			}
			if time.Since(last) >= 10*time.Second {
				last = time.Now()
				p.logf("progress: %d/%d accepted, %d final", l.accepted.Load(), len(p.orders), l.final.Load())
			}
		}
	}()
	loadStart := time.Now()
	l.run(loadCtx, p.cfg.Customers)
	res.LoadTime = time.Since(loadStart)
	stopFaults()
	wg.Wait()
	close(progressDone)
	res.Faults = nem.played
	p.logf("load done in %s: %d accepted; faults stopped after %d; draining (deadline %s)",
		res.LoadTime.Round(time.Millisecond), l.accepted.Load(), len(res.Faults), p.cfg.Drain)

	// Every process up and every link clean before the drain.
	for _, slot := range p.slots {
		s := p.services[slot]
		if s.pid() == 0 {
			_ = s.start()
		}
	}
	drainStart := time.Now()
	quiet, why := p.drain(ctx)
	res.DrainTime = time.Since(drainStart)
	if !quiet {
		p.logf("drain deadline passed: %s", why)
	}
	stopMem()

	for _, f := range res.Faults {
		res.FaultCounts[f.Kind]++
		if f.Kind == faultDup {
			var k int
			fmt.Sscanf(f.Note, "%d", &k)
			res.DuplicatesSent += k
		}
		if f.Kind == faultKill {
			res.ProcessRestarts++
		}
		if f.Kind == faultRestart {
			res.EmulatorRestarts++
		}
	}
	for _, slot := range p.slots {
		res.Crashes = append(res.Crashes, p.services[slot].crashes()...)
	}
	for _, o := range p.orders {
		if o.Accepted != 0 {
			res.Accepted++
		} else {
			res.GaveUp++
		}
	}
	if res.LoadTime > 0 {
		res.OrdersPerSec = float64(res.Accepted) / res.LoadTime.Seconds()
	}
	if err := p.check(ctx, res, quiet, why); err != nil {
		return res, err
	}
	p.judgeMemory(res)
	return res, nil
}

// drain waits until every order is final and notified, the outbox is
// empty and no queue holds work or messages in flight, or the deadline.
func (p *phase) drain(ctx context.Context) (bool, string) {
	deadline := time.Now().Add(p.cfg.Drain)
	why := ""
	for {
		why = p.busy(ctx)
		if why == "" {
			return true, ""
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false, why
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// busy says what is still to be done, "" when nothing.
func (p *phase) busy(ctx context.Context) string {
	var pending, unnotified, outboxOpen int
	err := p.admin.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM orders WHERE status = 'pending'),
		(SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.order_id = o.id)),
		(SELECT count(*) FROM `+outboxTable+`) + (SELECT count(*) FROM `+outboxTable+`_scheduled) + (SELECT count(*) FROM `+outboxTable+`_held)`).Scan(&pending, &unnotified, &outboxOpen)
	if err != nil {
		return "database: " + err.Error()
	}
	var parts []string
	if pending > 0 {
		parts = append(parts, fmt.Sprintf("%d orders pending", pending))
	}
	if unnotified > 0 {
		parts = append(parts, fmt.Sprintf("%d orders without notification", unnotified))
	}
	if outboxOpen > 0 {
		parts = append(parts, fmt.Sprintf("%d outbox records pending or failed", outboxOpen))
	}
	qs, err := p.queueDepths(ctx)
	if err != nil {
		return "broker: " + err.Error()
	}
	for _, q := range qs {
		if q.work() && (q.Visible > 0 || q.InFlight > 0 || q.Delayed > 0) {
			parts = append(parts, fmt.Sprintf("%s: %d visible, %d in flight, %d delayed", q.Name, q.Visible, q.InFlight, q.Delayed))
		}
	}
	return strings.Join(parts, "; ")
}

type queueDepth struct {
	Name, URL                  string
	Visible, InFlight, Delayed int
	Poison, DLQ                bool
}

// work reports whether q is a work queue (its messages must all be handled).
func (q queueDepth) work() bool { return !q.Poison && !q.DLQ }

// queueDepths reads the attributes of every queue of the phase's prefix.
func (p *phase) queueDepths(ctx context.Context) ([]queueDepth, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := p.sqs.ListQueues(ctx, &sqs.ListQueuesInput{QueueNamePrefix: &p.prefix, MaxResults: awssdk.Int32(1000)})
	if err != nil {
		return nil, err
	}
	var qs []queueDepth
	for _, u := range out.QueueUrls {
		attrs, err := p.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: awssdk.String(u),
			AttributeNames: []sqstypes.QueueAttributeName{"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"}})
		if err != nil {
			return nil, err
		}
		name := u[strings.LastIndex(u, "/")+1:]
		atoi := func(k string) int { n, _ := strconv.Atoi(attrs.Attributes[k]); return n }
		bare := strings.TrimSuffix(name, ".fifo")
		qs = append(qs, queueDepth{Name: name, URL: u,
			Visible: atoi("ApproximateNumberOfMessages"), InFlight: atoi("ApproximateNumberOfMessagesNotVisible"),
			Delayed: atoi("ApproximateNumberOfMessagesDelayed"),
			Poison:  bare == p.prefix+queuePoison, DLQ: strings.HasSuffix(bare, "-dlq") || strings.HasSuffix(bare, "_dlq")})
	}
	sort.Slice(qs, func(i, j int) bool { return qs[i].Name < qs[j].Name })
	return qs, nil
}

// stopAll ends every process of the phase.
func (p *phase) stopAll() {
	var wg sync.WaitGroup
	for _, s := range p.services {
		wg.Add(1)
		go func() { defer wg.Done(); s.stop() }()
	}
	wg.Wait()
}

// cleanup drops the phase's schema.
func (p *phase) cleanup(ctx context.Context) {
	if _, err := p.admin.Exec(ctx, `DROP SCHEMA IF EXISTS `+p.schema+` CASCADE`); err != nil {
		p.logf("drop schema %s: %v", p.schema, err)
	}
}

// poisonSeen reads the poison queue (at the end of the run: reading
// consumes, and the emulator is thrown away after).
type poisonMsg struct {
	EventID, Reason, Queue, Error, OrderID string
}

func (p *phase) readQueue(ctx context.Context, q queueDepth) ([]poisonMsg, error) {
	want := q.Visible
	if want == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	name := strings.TrimSuffix(q.Name, ".fifo")
	ch, err := p.broker.Subscribe(ctx, name)
	if err != nil {
		return nil, err
	}
	var out []poisonMsg
	for len(out) < want {
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("read %d of %d messages of %s", len(out), want, q.Name)
		case m, ok := <-ch:
			if !ok {
				return out, fmt.Errorf("read %d of %d messages of %s: subscription closed", len(out), want, q.Name)
			}
			pm := poisonMsg{EventID: m.Metadata.Get(transport.MetadataEventID), Reason: m.Metadata.Get("eda_poison_reason"),
				Queue: m.Metadata.Get("eda_poison_queue"), Error: m.Metadata.Get("eda_poison_error")}
			if pm.EventID == "" {
				pm.EventID = m.UUID
			}
			var body struct {
				OrderID string `json:"order_id"`
			}
			if json.Unmarshal(m.Payload, &body) == nil {
				pm.OrderID = body.OrderID
			}
			out = append(out, pm)
			m.Ack()
		}
	}
	return out, nil
}
