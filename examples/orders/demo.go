package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/edaproject/eda/eda"
)

// catalogue is the demo's stock: small enough that some orders are rejected.
var catalogue = map[string]int{"sku-apple": 25, "sku-pear": 20, "sku-plum": 15, "sku-fig": 10}

// summary is what the demo reports.
type summary struct {
	Placed, Refused, Reserved, Rejected, Notified, Pending int
	DeadLettered                                           []deadLetter
	P50, P99                                               time.Duration
	Elapsed                                                time.Duration
}

// seed fills the catalogue (idempotent: stock is reset to the demo values).
func (s *system) seed(ctx context.Context) error {
	for sku, stock := range catalogue {
		if _, err := s.db.ExecContext(ctx, s.db.q(`INSERT INTO products (sku, stock) VALUES (?, ?)
			ON CONFLICT (sku) DO UPDATE SET stock = excluded.stock`), sku, stock); err != nil {
			return err
		}
	}
	return nil
}

// demo places n orders over HTTP from 4 clients, sends a few bad requests and
// one poison message, and waits until every order is final and notified.
func (s *system) demo(ctx context.Context, n int, out io.Writer) (*summary, error) {
	if err := s.seed(ctx); err != nil {
		return nil, err
	}
	began := time.Now()
	run := "run-" + uuid.NewString()[:8] // the demo counts only its own orders
	s.run = run
	base := "http://" + s.addr
	rng := rand.New(rand.NewPCG(1, 2))
	skus := []string{"sku-apple", "sku-pear", "sku-plum", "sku-fig"}
	reqs := make([]orderRequest, n)
	for i := range reqs {
		items := []Item{{SKU: skus[rng.IntN(len(skus))], Qty: 1 + rng.IntN(3)}}
		if rng.IntN(3) == 0 {
			items = append(items, Item{SKU: skus[rng.IntN(len(skus))], Qty: 1 + rng.IntN(2)})
		}
		reqs[i] = orderRequest{ID: uuid.NewString(), CustomerID: fmt.Sprintf("%s-customer-%d", run, i%7), Items: items}
	}
	sum := &summary{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < n; i += 4 {
				code, body, err := post(ctx, base+"/orders", reqs[i])
				if err != nil || code != http.StatusCreated {
					errs <- fmt.Errorf("POST /orders: %d %s %v", code, body, err)
					return
				}
				mu.Lock()
				sum.Placed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	// What the order service refuses at the door, with a clear 4xx.
	for _, bad := range []any{
		orderRequest{CustomerID: "c"},                                             // no items
		orderRequest{CustomerID: "c", Items: []Item{{SKU: "sku-fig", Qty: -2}}},   // negative quantity
		orderRequest{CustomerID: "c", Items: []Item{{SKU: "sku-durian", Qty: 1}}}, // unknown product
		map[string]any{"customer_id": "c", "itmes": []Item{}},                     // unknown field
	} {
		if code, _, err := post(ctx, base+"/orders", bad); err == nil && code >= 400 && code < 500 {
			sum.Refused++
		}
	}
	// A producer with a bug sends a payload nobody can decode: it must end in
	// the poison queue with its reason, not be lost or retried for ever.
	if err := s.injectPoison(); err != nil {
		return nil, err
	}

	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := s.count(ctx, sum); err != nil {
			return sum, err
		}
		sum.Elapsed = time.Since(began)
		fmt.Fprintf(out, "  progress: placed %d, reserved %d, rejected %d, notified %d, pending %d, dead-lettered %d\n",
			sum.Placed, sum.Reserved, sum.Rejected, sum.Notified, sum.Pending, len(sum.DeadLettered))
		if sum.Pending == 0 && sum.Notified >= sum.Placed && len(sum.DeadLettered) >= 2 {
			return sum, nil
		}
		select {
		case <-ctx.Done():
			return sum, fmt.Errorf("demo did not finish: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// injectPoison publishes an OrderCreated whose payload is not JSON straight
// to the orders topic (as a broken producer would).
func (s *system) injectPoison() error {
	msg := message.NewMessage(uuid.NewString(), []byte(`{"order_id": "broken", "items": [`))
	eda.Envelope{ID: msg.UUID, Source: "broken-producer", Type: OrderCreated{}.EventName(), Time: time.Now(),
		ContentType: "application/json", SchemaVersion: 1, CorrelationID: msg.UUID, OrderingKey: "customer-broken"}.Apply(msg.Metadata)
	return s.tr.Publish(s.opts.name(topicOrders), msg)
}

// count reads the system's state into sum.
func (s *system) count(ctx context.Context, sum *summary) error {
	sum.Reserved, sum.Rejected, sum.Pending = 0, 0, 0
	mine := s.run + "-%"
	rows, err := s.db.QueryContext(ctx, s.db.q(`SELECT status, COUNT(*) FROM orders WHERE customer_id LIKE ? GROUP BY status`), mine)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var status string
		var n int
		if err := rows.Scan(&status, &n); err != nil {
			return err
		}
		switch status {
		case "reserved":
			sum.Reserved = n
		case "rejected":
			sum.Rejected = n
		default:
			sum.Pending += n
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := s.db.QueryRowContext(ctx, s.db.q(`SELECT COUNT(*) FROM notifications n JOIN orders o ON o.id = n.order_id
		WHERE o.customer_id LIKE ?`), mine).Scan(&sum.Notified); err != nil {
		return err
	}
	if sum.DeadLettered, err = s.dead.snapshot(ctx); err != nil {
		return err
	}
	lat, err := s.latencies(ctx)
	if err != nil {
		return err
	}
	sum.P50, sum.P99 = percentile(lat, 50), percentile(lat, 99)
	return nil
}

// latencies are the end-to-end times from order insert to final state.
func (s *system) latencies(ctx context.Context) ([]time.Duration, error) {
	rows, err := s.db.QueryContext(ctx, s.db.q(`SELECT final_at - created_at FROM orders WHERE final_at IS NOT NULL AND customer_id LIKE ?`), s.run+"-%")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []time.Duration
	for rows.Next() {
		var ns int64
		if err := rows.Scan(&ns); err != nil {
			return nil, err
		}
		out = append(out, time.Duration(ns))
	}
	return out, rows.Err()
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	i := (len(ds)*p + 99) / 100
	return ds[max(0, min(len(ds)-1, i-1))]
}

func (sum *summary) print(out io.Writer) {
	fmt.Fprintf(out, "\nsummary after %s\n", sum.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "  orders placed     %d (and %d bad requests refused with 4xx)\n", sum.Placed, sum.Refused)
	fmt.Fprintf(out, "  reserved          %d\n", sum.Reserved)
	fmt.Fprintf(out, "  rejected          %d (out of stock)\n", sum.Rejected)
	fmt.Fprintf(out, "  still pending     %d\n", sum.Pending)
	fmt.Fprintf(out, "  notified          %d\n", sum.Notified)
	fmt.Fprintf(out, "  dead-lettered     %d (left in place for the operator: edactl dlq show|redrive)\n", len(sum.DeadLettered))
	for _, d := range sum.DeadLettered {
		fmt.Fprintf(out, "    %s from %s, in %s: %s: %s\n", orUnknown(d.Type), d.Queue, d.In, d.Reason, firstLine(d.Error))
	}
	fmt.Fprintf(out, "  end-to-end latency (order insert → final state): p50 %s, p99 %s\n",
		sum.P50.Round(100*time.Microsecond), sum.P99.Round(100*time.Microsecond))
}

func orUnknown(s string) string {
	if s == "" {
		return "(type unknown)"
	}
	return s
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if i := strings.LastIndex(s, "): "); i >= 0 { // the queue and event are printed already
		s = s[i+3:]
	}
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

func post(ctx context.Context, url string, body any) (int, string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(rb)), nil
}

// redact hides a password in a database URL.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	return u.String()
}
