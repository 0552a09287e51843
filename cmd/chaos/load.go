package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// item and orderRequest are the example's POST /orders body.
type item struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

type orderRequest struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Items      []item `json:"items"`
}

// order is one order of the history: what was asked and what the client was
// told.
type order struct {
	orderRequest
	Seq      int   // place of the order among its customer's
	First    int64 // Unix ns of the first attempt
	Accepted int64 // Unix ns of the answer that accepted it; 0: never accepted
	Attempts int
	Refused  string // a 4xx answer: the service refused a valid order (a bug)
}

// catalogue: plentiful products, and one scarce so that orders are rejected
// throughout the run, not only at its end.
const scarceSKU = "sku-scarce"

var plentiful = []string{"sku-a", "sku-b", "sku-c", "sku-d", "sku-e", "sku-f"}

// initialStock is what the harness puts in the products table for n orders.
func initialStock(n int) map[string]int {
	st := map[string]int{scarceSKU: max(5, n/40)}
	for _, s := range plentiful {
		st[s] = 2 * n
	}
	return st
}

// makeOrders draws n orders for customers, from seed. Order ids carry the
// run id so a leftover of another run can never be counted.
func makeOrders(seed uint64, run string, n, customers int) []*order {
	rng := rand.New(rand.NewPCG(seed, 0x0de5))
	seq := make([]int, customers)
	out := make([]*order, n)
	for i := range out {
		c := i % customers
		items := []item{{SKU: plentiful[rng.IntN(len(plentiful))], Qty: 1 + rng.IntN(3)}}
		if rng.IntN(3) == 0 {
			items = append(items, item{SKU: plentiful[rng.IntN(len(plentiful))], Qty: 1 + rng.IntN(2)})
		}
		if rng.IntN(10) == 0 {
			items = append(items, item{SKU: scarceSKU, Qty: 1 + rng.IntN(2)})
		}
		out[i] = &order{orderRequest: orderRequest{ID: fmt.Sprintf("%s-o%07d", run, i), CustomerID: fmt.Sprintf("%s-c%04d", run, c), Items: items}, Seq: seq[c]}
		seq[c]++
	}
	return out
}

// load places the orders from clients goroutines. Client k owns the
// customers c with c % clients == k and places their orders one after the
// other, so a customer's order k+1 is placed only once order k was
// accepted (or given up). Each order is retried by its id, against the order
// services in turn, until accepted or giveUp has passed.
type load struct {
	orders   []*order
	addrs    []string
	clients  int
	giveUp   time.Duration
	accepted atomic.Int64
	done     atomic.Int64 // accepted or given up
	client   *http.Client
	// backlog bounds the accepted orders not yet final: a client waits
	// while more are open, so the system is loaded, not flooded, and the
	// faults fall on orders being processed. final is polled from the
	// database.
	backlog int64
	final   atomic.Int64
}

func (l *load) run(ctx context.Context, customers int) {
	lists := make([][]*order, l.clients)
	for i, o := range l.orders {
		k := (i % customers) % l.clients
		lists[k] = append(lists[k], o)
	}
	var wg sync.WaitGroup
	for _, list := range lists {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, o := range list {
				if ctx.Err() != nil {
					return
				}
				for l.accepted.Load()-l.final.Load() > l.backlog && ctx.Err() == nil {
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
				l.place(ctx, o)
				l.done.Add(1)
			}
		}()
	}
	wg.Wait()
}

func (l *load) place(ctx context.Context, o *order) {
	body, _ := json.Marshal(o.orderRequest)
	o.First = time.Now().UnixNano()
	deadline := time.Now().Add(l.giveUp)
	wait := 20 * time.Millisecond
	for attempt := 0; ctx.Err() == nil && time.Now().Before(deadline); attempt++ {
		o.Attempts++
		addr := l.addrs[(attempt+int(o.First))%len(l.addrs)]
		code, msg, err := post(ctx, l.client, "http://"+addr+"/orders", body)
		switch {
		case err == nil && (code == http.StatusCreated || code == http.StatusOK):
			o.Accepted = time.Now().UnixNano()
			l.accepted.Add(1)
			return
		case err == nil && code >= 400 && code < 500:
			o.Refused = fmt.Sprintf("%d %s", code, msg)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

func post(ctx context.Context, client *http.Client, url string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	return resp.StatusCode, string(bytes.TrimSpace(b)), nil
}
