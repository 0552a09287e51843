package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awssns "github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/outbox"

	"github.com/ThreeDotsLabs/watermill/message"
)

// env is what both builds share: the servers and this run's names.
type env struct {
	dsn          string
	endpoint     string
	awsCfg       awssdk.Config
	prefix       string
	concurrency  int
	relayWorkers int
	stockWorkers int
	stockSchema  string
	relayPoll    time.Duration
	stages       bool

	mu       sync.Mutex
	trackers map[string]*tracker
}

// newPool opens a pool whose search_path is schema (created with the
// flow's tables).
func (e *env) newPool(ctx context.Context, schema string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(e.dsn)
	if err != nil {
		return nil, err
	}
	// A handler in flight holds a connection; the 3 queues' handlers
	// share concurrency+8 with the HTTP front and the relay, so that both
	// builds' pools (all open from the start, no cold connections in a
	// step) stay well under the server's max_connections.
	cfg.MaxConns = int32(e.concurrency + 8)
	cfg.MinConns = cfg.MaxConns
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.ConnConfig.RuntimeParams["application_name"] = "e2ebench-" + schema // backendsCPU finds the build's backends by it
	// The schema first, on a connection of its own: the pool opens its
	// MinConns at once, and a session started before its search_path
	// schema existed does not find the tables.
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("postgres at %s: %w (start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)", e.dsn, err)
	}
	err = createTables(ctx, conn, schema)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

func (e *env) tracker(name string) *tracker {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.trackers[name] == nil {
		e.trackers[name] = &tracker{pending: map[string]time.Time{}}
		if e.stages {
			e.trackers[name].stages = map[string][]time.Duration{}
			if name == "eda" {
				e.trackers[name].marks = map[string]map[string]time.Time{}
			}
		}
	}
	return e.trackers[name]
}

// tracker matches each order's final state to its scheduled send time.
type tracker struct {
	mu          sync.Mutex
	pending     map[string]time.Time
	lat         []time.Duration
	first, last time.Time
	stages      map[string][]time.Duration      // -stages: time from the scheduled send to each handler's start
	marks       map[string]map[string]time.Time // -stages: when each order passed each point (eda build), by order id
	series      [][2]time.Time                  // -stages: scheduled send and final state of each order
	redelivered atomic.Int64                    // deliveries with a receive count over 1 (eda build)
}

// stage records, with -stages, when an order reached a handler.
func (t *tracker) stage(name, id string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stages == nil {
		return
	}
	if at, ok := t.pending[id]; ok {
		t.stages[name] = append(t.stages[name], now.Sub(at))
	}
}

// The points an order passes, in order, that -stages marks (eda build).
// SQS's SentTimestamp (ms) falls within the publish call.
var markOrder = []string{"scheduled", "committed", "relay publish start", "SQS SentTimestamp", "relay published", "ReceiveMessage returned", "inventory handler",
	"inventory committed", "relay publish start 2", "SQS SentTimestamp 2", "relay published 2", "ReceiveMessage returned 2", "order-status handler", "final"}

// mark records, with -stages, when order id passed point name.
func (t *tracker) mark(name, id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.marks == nil {
		return
	}
	if _, ok := t.pending[id]; !ok && name != "final" {
		return
	}
	m := t.marks[id]
	if m == nil {
		m = map[string]time.Time{}
		t.marks[id] = m
	}
	if _, ok := m[name]; !ok { // the first time: a redelivery does not move it
		m[name] = at
	}
}

// takeMarks returns, for the orders marked at every point, the p50 and
// p99 of the time between consecutive points, and for the slowest 1% of
// those orders which gap was the largest; it forgets the marks.
func (t *tracker) takeMarks() string {
	if t.marks == nil {
		return ""
	}
	gaps := make([][]time.Duration, len(markOrder)-1)
	type order struct {
		total time.Duration
		worst int
	}
	var orders []order
	for id, m := range t.marks {
		if _, ok := m["final"]; !ok {
			continue
		}
		delete(t.marks, id)
		complete := true
		for _, name := range markOrder {
			if _, ok := m[name]; !ok {
				complete = false
			}
		}
		if !complete {
			continue
		}
		o := order{total: m["final"].Sub(m["scheduled"])}
		var worst time.Duration
		for i := range gaps {
			d := m[markOrder[i+1]].Sub(m[markOrder[i]])
			gaps[i] = append(gaps[i], d)
			if d > worst {
				worst, o.worst = d, i
			}
		}
		orders = append(orders, o)
	}
	if len(orders) == 0 {
		return "marks: no order marked at every point"
	}
	var parts []string
	for i, g := range gaps {
		slices.Sort(g)
		parts = append(parts, fmt.Sprintf("%s -> %s p50 %s p99 %s max %s", markOrder[i], markOrder[i+1], ms(quantile(g, 0.5)), ms(quantile(g, 0.99)), ms(g[len(g)-1])))
	}
	slices.SortFunc(orders, func(a, b order) int { return int(b.total - a.total) })
	slow := orders[:max(1, len(orders)/100)]
	count := make([]int, len(gaps))
	for _, o := range slow {
		count[o.worst]++
	}
	var worst []string
	for i, n := range count {
		if n > 0 {
			worst = append(worst, fmt.Sprintf("%d in %s -> %s", n, markOrder[i], markOrder[i+1]))
		}
	}
	return fmt.Sprintf("marks of %d orders: %s; the slowest %d orders' largest gap: %s", len(orders), strings.Join(parts, ", "), len(slow), strings.Join(worst, ", "))
}

// takeStages returns the p50 and p99 of each stage and forgets them.
func (t *tracker) takeStages() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	if m := t.takeMarks(); m != "" {
		parts = append(parts, m)
	}
	for name, lat := range t.stages {
		slices.Sort(lat)
		parts = append(parts, fmt.Sprintf("%s p50 %s p99 %s", name, ms(quantile(lat, 0.5)), ms(quantile(lat, 0.99))))
		delete(t.stages, name)
	}
	slices.Sort(parts)
	// The worst latency of the orders scheduled in each second of the step.
	if len(t.series) > 0 {
		t0 := t.series[0][0]
		var worst []time.Duration
		for _, x := range t.series {
			sec := int(x[0].Sub(t0) / time.Second)
			for len(worst) <= sec {
				worst = append(worst, 0)
			}
			worst[sec] = max(worst[sec], x[1].Sub(x[0]))
		}
		t.series = nil
		w := make([]string, len(worst))
		for i, d := range worst {
			w[i] = strconv.Itoa(int(d / time.Millisecond))
		}
		parts = append(parts, "worst per second (ms): "+strings.Join(w, " "))
	}
	return strings.Join(parts, "; ")
}

func (t *tracker) begin(id string, at time.Time) {
	t.mu.Lock()
	t.pending[id] = at
	if t.marks != nil {
		t.marks[id] = map[string]time.Time{"scheduled": at}
	}
	t.mu.Unlock()
}

// drop forgets an order whose request failed.
func (t *tracker) drop(id string) {
	t.mu.Lock()
	delete(t.pending, id)
	t.mu.Unlock()
}

// finish records that id reached its final state; a redelivery's second
// finish finds nothing.
func (t *tracker) finish(id string) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.pending[id]
	if !ok {
		return
	}
	delete(t.pending, id)
	if m := t.marks[id]; m != nil {
		m["final"] = now
	}
	t.lat = append(t.lat, now.Sub(at))
	if t.stages != nil {
		t.series = append(t.series, [2]time.Time{at, now})
	}
	if t.first.IsZero() {
		t.first = now
	}
	t.last = now
}

func (t *tracker) outstanding() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// take returns what was recorded since the last take, and forgets it.
func (t *tracker) take() (lat []time.Duration, first, last time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	lat, first, last = t.lat, t.first, t.last
	t.lat, t.first, t.last = nil, time.Time{}, time.Time{}
	return lat, first, last
}

// timedPublisher counts and times the outbox's publish calls to SNS (the
// relay's, the forwarders'), for -stages.
type timedPublisher struct {
	next              message.Publisher
	calls, msgs, nano atomic.Int64
	// With -stages (eda build): each Publish call's, claim's and mark's
	// duration, and the pool whose waits for a connection are reported.
	mu                     sync.Mutex
	pubLat, claims, marks  []time.Duration
	pool                   *pgxpool.Pool
	acquires, empty, waits int64
	// track, when set with -stages, is marked for each OrderCreated
	// published to a topic named *-orders, and each inventory event.
	track *tracker
}

func (p *timedPublisher) Publish(topic string, msgs ...*message.Message) error {
	t := time.Now()
	err := p.next.Publish(topic, msgs...)
	if p.track != nil && p.track.marks != nil && err == nil {
		end := time.Now()
		p.mu.Lock()
		p.pubLat = append(p.pubLat, end.Sub(t))
		p.mu.Unlock()
		suffix := ""
		if !strings.HasSuffix(topic, "-"+topicOrders) {
			suffix = " 2"
		}
		for _, m := range msgs {
			var ev struct {
				OrderID string `json:"order_id"`
			}
			if json.Unmarshal(m.Payload, &ev) == nil {
				p.track.mark("relay publish start"+suffix, ev.OrderID, t)
				p.track.mark("relay published"+suffix, ev.OrderID, end)
			}
		}
	}
	p.nano.Add(int64(time.Since(t)))
	p.calls.Add(1)
	p.msgs.Add(int64(len(msgs)))
	return err
}

func (p *timedPublisher) Close() error { return nil }

// take reports and resets the counts.
func (p *timedPublisher) take() string {
	calls, msgs, nano := p.calls.Swap(0), p.msgs.Swap(0), p.nano.Swap(0)
	if calls == 0 {
		return "outbox publish: no calls"
	}
	out := fmt.Sprintf("outbox publish: %d calls of %.1f messages, %s each", calls, float64(msgs)/float64(calls), ms(time.Duration(nano/calls)))
	p.mu.Lock()
	defer p.mu.Unlock()
	dist := func(name string, l []time.Duration) string {
		if len(l) == 0 {
			return ""
		}
		slices.Sort(l)
		return fmt.Sprintf("; relay %s p50 %s p99 %s max %s", name, ms(quantile(l, 0.5)), ms(quantile(l, 0.99)), ms(l[len(l)-1]))
	}
	out += dist("Publish", p.pubLat) + dist("claim (call to records)", p.claims) + dist("mark (records settled to commit)", p.marks)
	p.pubLat, p.claims, p.marks = nil, nil, nil
	if p.pool != nil {
		st := p.pool.Stat()
		a, e, w := st.AcquireCount(), st.EmptyAcquireCount(), int64(st.AcquireDuration())
		if n := a - p.acquires; n > 0 {
			out += fmt.Sprintf("; pool: %d acquires, %d waited for a connection, %s waiting in all", n, e-p.empty, ms(time.Duration(w-p.waits)))
		}
		p.acquires, p.empty, p.waits = a, e, w
	}
	return out
}

// timedStore times, with -stages, each claim (from the call to the records
// handed to the relay) and its mark (from the relay's results to the
// commit).
type timedStore struct {
	outbox.DueStore
	pub *timedPublisher
}

func (s timedStore) ClaimDue(ctx context.Context, req outbox.ClaimRequest, publish func(context.Context, []outbox.Record) []outbox.Result) (int, error) {
	t0 := time.Now()
	var settled time.Time
	n, err := s.DueStore.ClaimDue(ctx, req, func(ctx context.Context, b []outbox.Record) []outbox.Result {
		d := time.Since(t0)
		s.pub.mu.Lock()
		s.pub.claims = append(s.pub.claims, d)
		s.pub.mu.Unlock()
		res := publish(ctx, b)
		settled = time.Now()
		return res
	})
	if !settled.IsZero() && err == nil {
		d := time.Since(settled)
		s.pub.mu.Lock()
		s.pub.marks = append(s.pub.marks, d)
		s.pub.mu.Unlock()
	}
	return n, err
}

// build is one of the two implementations under load.
type build struct {
	name   string
	url    string
	client *http.Client
	track  *tracker
	schema string
	pool   *pgxpool.Pool
	pub    *timedPublisher
	close  func()
	alive  bool
	best   *stepResult // highest sustained step
	steps  map[float64]stepResult
}

type stepResult struct {
	offered, achieved float64
	sent, done, errs  int
	p50, p99, p999    time.Duration
	drained           bool
	sustained         bool
	cpuPerOrder       time.Duration // the bench process's CPU per order
	emuPerOrder       time.Duration // the emulator's CPU per order (with -emulator-pid)
	pgPerOrder        time.Duration // the build's Postgres backends' CPU per order
	pgOthers          float64       // the rest of Postgres's CPU over the step, in cores (other users of the server)
}

func run(ctx context.Context, c config) error {
	e := &env{dsn: c.dsn, endpoint: c.endpoint, awsCfg: awsConfig(), prefix: newPrefix(),
		concurrency: c.concurrency, relayWorkers: c.relayWorkers, stockWorkers: c.stockWorkers, stockSchema: c.stockSchema, relayPoll: c.relayPoll, stages: c.stages, trackers: map[string]*tracker{}}
	defer cleanup(e, c.out)
	var builds []*build
	defer func() {
		for _, b := range builds {
			b.close()
		}
	}()
	for _, name := range c.builds {
		var place func(context.Context, orderRequest, []byte) error
		var closeFn func()
		var pool *pgxpool.Pool
		pub := &timedPublisher{}
		if name == "eda" {
			pub.track = e.tracker(name)
		}
		switch name {
		case "eda":
			b, err := newEdaBuild(ctx, e, e.prefix, pub)
			if err != nil {
				return fmt.Errorf("eda build: %w", err)
			}
			place, closeFn, pool = b.place, b.close, b.pool
		case "stock":
			b, err := newStockBuild(ctx, e, e.prefix, pub)
			if err != nil {
				return fmt.Errorf("stock build: %w", err)
			}
			place, closeFn, pool = b.place, b.close, b.pool
		default:
			return fmt.Errorf("-builds: unknown build %q (eda, stock)", name)
		}
		b, err := serve(name, place, closeFn)
		if err != nil {
			closeFn()
			return err
		}
		b.track, b.schema, b.pool, b.pub = e.tracker(name), e.prefix+"_"+name, pool, pub
		builds = append(builds, b)
	}

	fmt.Fprintf(c.out, "e2ebench %s: stock outbox schema %s, %d stock receive workers per queue\n", time.Now().UTC().Format(time.RFC3339), c.stockSchema, c.stockWorkers)
	fmt.Fprintf(c.out, "e2ebench %s: builds %s, %d in flight per queue, steps of %s, drain %s, p99 bound %s, prefix %s\n",
		time.Now().UTC().Format(time.RFC3339), strings.Join(c.builds, ","), c.concurrency, c.step, c.drain, c.p99Bound, e.prefix)
	// Warm up: connections, prepared statements, the emulator's queues.
	for _, b := range builds {
		if _, err := runStep(ctx, c, b, warmupRate, 2*time.Second); err != nil {
			return fmt.Errorf("%s warm-up: %w", b.name, err)
		}
	}
	fmt.Fprintf(c.out, "\n%s\n", header(builds))
	for _, rate := range c.rates {
		any := false
		for _, b := range builds {
			if !b.alive {
				continue
			}
			any = true
			var r stepResult
			for attempt := 0; attempt <= c.retries; attempt++ {
				if attempt > 0 {
					fmt.Fprintf(c.out, "%s at %v/s: not sustained (%.0f done/s, p99 %s, %d of %d done, %d errors); again\n",
						b.name, rate, r.achieved, ms(r.p99), r.done, r.sent, r.errs)
				}
				var err error
				if r, err = runStep(ctx, c, b, rate, c.step); err != nil {
					return fmt.Errorf("%s at %v/s: %w", b.name, rate, err)
				}
				if r.sustained {
					break
				}
			}
			b.steps[rate] = r
			if r.sustained {
				b.best = &r
			} else {
				b.alive = false
			}
		}
		if !any {
			break
		}
		fmt.Fprintln(c.out, row(builds, rate))
	}
	summary(c, builds)
	for _, b := range builds {
		if err := check(ctx, e, b); err != nil {
			return err
		}
	}
	fmt.Fprintln(c.out, "checked: every accepted order is final, with its reservation and its notification, in both builds")
	return nil
}

// serve starts the HTTP front of a build on a loopback port.
func serve(name string, place func(context.Context, orderRequest, []byte) error, closeFn func()) (*build, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// The server keeps idle connections longer than the client
	// (IdleConnTimeout below): a client reusing a connection the server is
	// closing gets EOF, and a POST is not retried.
	srv := &http.Server{Handler: orderHandler(place), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Minute}
	go func() { _ = srv.Serve(ln) }()
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute}
	return &build{name: name, url: "http://" + ln.Addr().String() + "/orders", client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		alive: true, steps: map[float64]stepResult{},
		close: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			tr.CloseIdleConnections()
			closeFn()
		}}, nil
}

var orderSeq atomic.Int64

const warmupRate = 10

// runStep offers rate orders/s to b for d, open loop, and waits for them
// to finish.
func runStep(ctx context.Context, c config, b *build, rate float64, d time.Duration) (stepResult, error) {
	n := int(rate * d.Seconds())
	r := stepResult{offered: rate, sent: n}
	rng := rand.New(rand.NewPCG(uint64(n), uint64(rate)))
	bodies := make([][]byte, n)
	ids := make([]string, n)
	for i := range bodies {
		seq := orderSeq.Add(1)
		ids[i] = b.name + "-" + strconv.FormatInt(seq, 10)
		sku := "sku-" + strconv.Itoa(1+rng.IntN(skus))
		if rng.IntN(20) == 0 {
			sku = soldOutSKU
		}
		bodies[i], _ = json.Marshal(orderRequest{ID: ids[i], CustomerID: "customer-" + strconv.Itoa(int(seq%500)),
			Items: []Item{{SKU: sku, Qty: 1 + rng.IntN(3)}}})
	}
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	var postMu sync.Mutex
	var posted []time.Duration
	busy0 := machineTicks()
	cpu0, emu0, pg0, own0 := processCPU(os.Getpid()), processCPU(c.emulatorPID), postgresCPU(), backendsCPU(ctx, b.pool)
	start := time.Now().Add(5 * time.Millisecond)
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		wg.Add(1)
		go func(id string, body []byte) {
			defer wg.Done()
			b.track.begin(id, at)
			resp, err := b.client.Post(b.url, "application/json", bytes.NewReader(body))
			if err == nil {
				if resp.StatusCode != http.StatusCreated {
					msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					err = fmt.Errorf("POST /orders: %s: %s", resp.Status, bytes.TrimSpace(msg))
				}
				resp.Body.Close()
				postMu.Lock()
				posted = append(posted, time.Since(at))
				postMu.Unlock()
			}
			if err != nil {
				b.track.drop(id)
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}(ids[i], bodies[i])
	}
	wg.Wait()
	deadline := start.Add(d + c.drain)
	for b.track.outstanding() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r.drained = b.track.outstanding() == 0
	lat, first, last := b.track.take()
	r.done, r.errs = len(lat), int(errs.Load())
	if !r.drained {
		// Leave the backlog out of the next step's figures.
		b.track.mu.Lock()
		clear(b.track.pending)
		b.track.mu.Unlock()
	}
	if r.done > 0 {
		cpu, emu, pg := processCPU(os.Getpid())-cpu0, processCPU(c.emulatorPID)-emu0, postgresCPU()-pg0
		var own time.Duration
		for pid, t := range backendsCPU(ctx, b.pool) {
			own += t - own0[pid] // a backend that started during the step counts whole
		}
		r.cpuPerOrder, r.emuPerOrder, r.pgPerOrder = cpu/time.Duration(r.done), emu/time.Duration(r.done), own/time.Duration(r.done)
		r.pgOthers = float64(pg-own) / float64(time.Since(start))
	}
	if r.done > 1 && last.After(first) {
		r.achieved = float64(r.done-1) / last.Sub(first).Seconds()
	}
	slices.Sort(lat)
	slices.Sort(posted)
	r.p50, r.p99, r.p999 = quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 0.999)
	r.sustained = r.drained && r.errs == 0 && r.achieved >= 0.95*rate && r.p99 <= c.p99Bound
	busy1 := machineTicks()
	busy := float64(busy1[0]-busy0[0]) / float64(max(1, busy1[1]-busy0[1]))
	if st := b.track.takeStages(); st != "" && rate != warmupRate {
		if n := b.track.redelivered.Swap(0); n > 0 {
			st += fmt.Sprintf("; %d deliveries were redeliveries", n)
		}
		fmt.Fprintf(c.out, "%s at %v/s: POST done p50 %s; %s; %s; machine busy %.0f%% of 2 cores, other Postgres users %.2f cores\n",
			b.name, rate, ms(quantile(posted, 0.5)), st, b.pub.take(), 100*busy, r.pgOthers)
	}
	if r.errs > 0 {
		fmt.Fprintf(c.out, "%s at %v/s: %d of %d requests failed, first: %v\n", b.name, rate, r.errs, n, firstErr.Load())
	}
	return r, ctx.Err()
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// machineTicks returns the busy and total clock ticks of every CPU so far.
func machineTicks() [2]int64 {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]int64{}
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	var busy, total int64
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return [2]int64{busy, total}
}

// backendsCPU is the CPU time so far of each Postgres backend serving
// pool (found by the pool's application_name).
func backendsCPU(ctx context.Context, pool *pgxpool.Pool) map[int]time.Duration {
	rows, err := pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = current_setting('application_name')`)
	if err != nil {
		return nil
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil
	}
	m := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		m[int(pid)] = processCPU(int(pid))
	}
	return m
}

// postgresCPU is the CPU time of every postgres process on this host so
// far, with that of exited backends (in the postmaster's cutime): other
// users of the same server count too.
func postgresCPU() time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil || !bytes.Contains(raw, []byte("(postgres)")) {
			continue
		}
		sum += statCPU(raw, true)
	}
	return sum
}

// statCPU reads utime+stime (and with children cutime+cstime) from a
// /proc/<pid>/stat line, in clock ticks of 10ms.
func statCPU(raw []byte, children bool) time.Duration {
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0
	}
	// Fields after the command: utime is the 14th field of the line,
	// stime the 15th, cutime and cstime the 16th and 17th.
	f := strings.Fields(s[i+2:])
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	n := 2
	if children {
		n = 4
	}
	for _, v := range f[11 : 11+n] {
		t, _ := strconv.ParseInt(v, 10, 64)
		ticks += t
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// processCPU is the user+system CPU time of pid so far (0 if unknown).
func processCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	if pid == os.Getpid() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	return statCPU(raw, false)
}

func header(builds []*build) string {
	var h, sep strings.Builder
	h.WriteString("| offered/s ")
	sep.WriteString("|---:")
	for _, b := range builds {
		fmt.Fprintf(&h, "| %[1]s done/s | %[1]s p50 | %[1]s p99 | %[1]s p99.9 | %[1]s CPU/order (bench + pg + emu) ", b.name)
		sep.WriteString("|---:|---:|---:|---:|---:")
	}
	if len(builds) == 2 {
		h.WriteString("| p99 " + builds[0].name + "/" + builds[1].name + " ")
		sep.WriteString("|---:")
	}
	return h.String() + "|\n" + sep.String() + "|"
}

func row(builds []*build, rate float64) string {
	var s strings.Builder
	fmt.Fprintf(&s, "| %g ", rate)
	for _, b := range builds {
		r, ok := b.steps[rate]
		if !ok {
			s.WriteString("| — | — | — | — | — ")
			continue
		}
		mark := ""
		if !r.sustained {
			mark = " ✗"
			if !r.drained {
				mark = fmt.Sprintf(" ✗ (%d of %d done)", r.done, r.sent-r.errs)
			}
		}
		cpu := ms(r.cpuPerOrder) + " + pg " + ms(r.pgPerOrder)
		if r.emuPerOrder > 0 {
			cpu += " + emu " + ms(r.emuPerOrder)
		}
		fmt.Fprintf(&s, "| %.0f%s | %s | %s | %s | %s ", r.achieved, mark, ms(r.p50), ms(r.p99), ms(r.p999), cpu)
	}
	if len(builds) == 2 {
		a, aok := builds[0].steps[rate]
		b, bok := builds[1].steps[rate]
		if aok && bok && b.p99 > 0 {
			fmt.Fprintf(&s, "| %.2f× ", float64(a.p99)/float64(b.p99))
		} else {
			s.WriteString("| — ")
		}
	}
	return s.String() + "|"
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}

func summary(c config, builds []*build) {
	fmt.Fprintln(c.out)
	top := c.rates[len(c.rates)-1]
	for _, b := range builds {
		if b.best == nil {
			fmt.Fprintf(c.out, "%s: no offered rate sustained (lowest %v/s)\n", b.name, c.rates[0])
			continue
		}
		more := ""
		if b.alive && b.best.offered == top {
			more = " (the highest rate offered: saturation not reached)"
		}
		fmt.Fprintf(c.out, "%s: saturation point %v orders/s offered%s, %.0f orders/s sustained there, p99 %s\n",
			b.name, b.best.offered, more, b.best.achieved, ms(b.best.p99))
	}
	if len(builds) != 2 || builds[0].best == nil || builds[1].best == nil {
		return
	}
	a, s := builds[0], builds[1]
	aTop, sTop := a.alive && a.best.offered == top, s.alive && s.best.offered == top
	switch {
	case aTop && sTop:
		fmt.Fprintf(c.out, "sustained orders/s %s/%s: neither saturated up to %v orders/s, no ratio (target ≥ 2×)\n", a.name, s.name, top)
	case aTop:
		fmt.Fprintf(c.out, "sustained orders/s %s/%s: ≥ %.2f× (%s did not saturate; target ≥ 2×)\n", a.name, s.name, a.best.achieved/s.best.achieved, a.name)
	case sTop:
		fmt.Fprintf(c.out, "sustained orders/s %s/%s: ≤ %.2f× (%s did not saturate; target ≥ 2×)\n", a.name, s.name, a.best.achieved/s.best.achieved, s.name)
	default:
		fmt.Fprintf(c.out, "sustained orders/s %s/%s: %.2f× (target ≥ 2×)\n", a.name, s.name, a.best.achieved/s.best.achieved)
	}
	// p99 at the highest offered rate below both saturation points.
	var rate float64
	for _, r := range c.rates {
		if r < a.best.offered && r < s.best.offered {
			rate = r
		}
	}
	if rate == 0 { // no rate below both: the highest both sustained
		rate = min(a.best.offered, s.best.offered)
	}
	ra, rs := a.steps[rate], s.steps[rate]
	fmt.Fprintf(c.out, "p99 at %v orders/s %s/%s: %s / %s = %.2f× (target ≤ 0.5×)\n", rate, a.name, s.name, ms(ra.p99), ms(rs.p99), float64(ra.p99)/float64(rs.p99))
}

// check verifies, after the load, that every accepted order of b is final
// with its reservation and its notification (and no more than one of each).
func check(ctx context.Context, e *env, b *build) error {
	pool, err := pgxpool.New(ctx, e.dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		var orders, pending, reservations, notes int
		err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT count(*) FROM %[1]s.orders), (SELECT count(*) FROM %[1]s.orders WHERE status = 'pending'),
			(SELECT count(*) FROM %[1]s.reservations), (SELECT count(DISTINCT order_id) FROM %[1]s.notifications)`, b.schema)).Scan(&orders, &pending, &reservations, &notes)
		if err != nil {
			return err
		}
		if pending == 0 && reservations == orders && notes == orders {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: of %d orders %d still pending, %d reservations, %d notified", b.name, orders, pending, reservations, notes)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cleanup drops the run's schemas, queues and topics.
func cleanup(e *env, out interface{ Write([]byte) (int, error) }) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	var errs []error
	if pool, err := pgxpool.New(ctx, e.dsn); err == nil {
		for _, s := range []string{"eda", "stock"} {
			if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+e.prefix+"_"+s+" CASCADE"); err != nil {
				errs = append(errs, err)
			}
		}
		pool.Close()
	}
	ep := e.endpoint
	sq := sqs.NewFromConfig(e.awsCfg, func(o *sqs.Options) { o.BaseEndpoint = &ep })
	qs, err := sq.ListQueues(ctx, &sqs.ListQueuesInput{QueueNamePrefix: awssdk.String(e.prefix), MaxResults: awssdk.Int32(1000)})
	if err == nil {
		for _, u := range qs.QueueUrls {
			if _, err := sq.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: awssdk.String(u)}); err != nil {
				errs = append(errs, err)
			}
		}
	} else {
		errs = append(errs, err)
	}
	sn := awssns.NewFromConfig(e.awsCfg, func(o *awssns.Options) { o.BaseEndpoint = &ep })
	p := awssns.NewListTopicsPaginator(sn, &awssns.ListTopicsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			errs = append(errs, err)
			break
		}
		for _, t := range page.Topics {
			if arn := awssdk.ToString(t.TopicArn); strings.Contains(arn, ":"+e.prefix+"-") {
				if _, err := sn.DeleteTopic(ctx, &awssns.DeleteTopicInput{TopicArn: t.TopicArn}); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(out, "cleanup of %s: %v\n", e.prefix, err)
	}
}
