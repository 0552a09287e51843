package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/transport"
)

func rawPost(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func TestOrderAPIBadInput(t *testing.T) {
	s, err := start(context.Background(), scenario(t, "memory"))
	must(t, err)
	defer s.stop()
	must(t, s.seed(context.Background()))
	url := "http://" + s.addr + "/orders"
	for _, c := range []struct {
		name, body string
		code       int
		says       string
	}{
		{"malformed JSON", `{"customer_id": "c", "items": [`, 400, "malformed JSON"},
		{"not an object", `[1,2]`, 400, "malformed JSON"},
		{"trailing data", `{"customer_id":"c","items":[{"sku":"sku-fig","qty":1}]} {}`, 400, "data after"},
		{"unknown field", `{"customer_id":"c","itemz":[]}`, 400, "unknown field"},
		{"oversized body", `{"customer_id":"` + strings.Repeat("x", maxOrderBody) + `"}`, 413, "larger than"},
		{"missing items", `{"customer_id":"c"}`, 422, "at least one item"},
		{"negative quantity", `{"customer_id":"c","items":[{"sku":"sku-fig","qty":-1}]}`, 422, "qty must be positive"},
		{"unknown product", `{"customer_id":"c","items":[{"sku":"sku-durian","qty":1}]}`, 422, `unknown product \"sku-durian\"`},
		{"missing customer", `{"items":[{"sku":"sku-fig","qty":1}]}`, 422, "customer_id is required"},
	} {
		code, body := rawPost(t, url, c.body)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %s, want %d saying %q", c.name, code, body, c.code, c.says)
		}
	}
	var n int
	must(t, s.db.QueryRow(`SELECT COUNT(*) FROM orders`).Scan(&n))
	if n != 0 {
		t.Fatalf("%d orders stored from bad requests", n)
	}

	// Idempotent create: the same id twice creates one order and one event.
	order := `{"id":"order-dup","customer_id":"c","items":[{"sku":"sku-fig","qty":1}]}`
	if code, body := rawPost(t, url, order); code != 201 {
		t.Fatalf("first POST: %d %s", code, body)
	}
	if code, body := rawPost(t, url, order); code != 200 || !strings.Contains(body, `"created":false`) {
		t.Fatalf("repeated POST: %d %s, want 200 created:false", code, body)
	}
	waitStatus(t, s, "order-dup", "reserved")
	var events int
	must(t, s.db.QueryRow(`SELECT COUNT(*) FROM reservations WHERE order_id = 'order-dup'`).Scan(&events))
	if events != 1 {
		t.Fatalf("%d reservations for one order posted twice", events)
	}

	// Database down at request time: 503, nothing half-written.
	must(t, s.db.DB.Close())
	code, body := rawPost(t, url, `{"id":"order-dbdown","customer_id":"c","items":[{"sku":"sku-fig","qty":1}]}`)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("with the database down: %d %s, want 503", code, body)
	}
}

// flaky fails every publish while down is set, as an unreachable broker does.
type flaky struct {
	message.Publisher
	down     atomic.Bool
	failures atomic.Int64
}

func (f *flaky) Publish(topic string, msgs ...*message.Message) error {
	if f.down.Load() {
		f.failures.Add(1)
		return errors.Join(transport.ErrUnavailable, errors.New("broker down (test)"))
	}
	return f.Publisher.Publish(topic, msgs...)
}

// With the broker down, orders are still accepted; the relay publishes them
// once it is back.
func TestBrokerDownOrdersAcceptedAndPublishedLater(t *testing.T) {
	o := scenario(t, "memory")
	f := &flaky{}
	f.down.Store(true)
	o.WrapPublisher = func(p message.Publisher) message.Publisher { f.Publisher = p; return f }
	s, err := start(context.Background(), o)
	must(t, err)
	defer s.stop()
	must(t, s.seed(context.Background()))
	url := "http://" + s.addr + "/orders"
	for _, id := range []string{"o-1", "o-2", "o-3"} {
		if code, body := rawPost(t, url, `{"id":"`+id+`","customer_id":"c","items":[{"sku":"sku-apple","qty":1}]}`); code != 201 {
			t.Fatalf("POST with the broker down: %d %s, want 201", code, body)
		}
	}
	eventually(t, 10*time.Second, "the relay tries the broker", func() bool { return f.failures.Load() > 0 })
	stats, err := s.db.outbox.Stats(context.Background())
	must(t, err)
	if stats.Pending != 3 {
		t.Fatalf("outbox pending %d while the broker is down, want 3", stats.Pending)
	}
	f.down.Store(false)
	for _, id := range []string{"o-1", "o-2", "o-3"} {
		waitStatus(t, s, id, "reserved")
	}
}

func waitStatus(t *testing.T, s *system, id, want string) {
	t.Helper()
	var status string
	eventually(t, 20*time.Second, "order "+id+" becomes "+want, func() bool {
		err := s.db.QueryRow(s.db.q(`SELECT status FROM orders WHERE id = ?`), id).Scan(&status)
		return err == nil && status == want
	})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll.Until(within, cond) {
		t.Fatalf("timed out after %s waiting until %s", within, what)
	}
}
