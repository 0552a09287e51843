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

	"github.com/edaproject/eda/eda/edatest"
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

// dbText is what a database error says; no response may carry it.
var dbText = []string{"sql:", "sqlite", "SQLSTATE", "postgres", "pgx", "ERROR:", "invalid byte sequence", "no such table", "database is closed"}

func rawDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func order(customer string, items ...string) string {
	return `{"customer_id":` + customer + `,"items":[` + strings.Join(items, ",") + `]}`
}

// badInput is the HTTP bad-input matrix: every row is a client error, gets a
// 4xx and a message naming what is wrong, and stores nothing.
var badInput = []struct {
	name, body string
	code       int
	says       string
}{
	{"malformed JSON", `{"customer_id": "c", "items": [`, 400, "malformed JSON"},
	{"malformed JSON names the field", `{"customer_id": "c", "items": [{"sku": "sku-fig", "qty": 1x}]}`, 400, "items[0].qty"},
	{"empty body", ``, 400, "empty body"},
	{"blank body", " \n\t ", 400, "empty body"},
	{"not an object", `[1,2]`, 400, "want a JSON object"},
	{"null", `null`, 400, "want a JSON object"},
	{"trailing data", order(`"c"`, `{"sku":"sku-fig","qty":1}`) + ` {}`, 400, "data after"},
	{"oversized body", `{"customer_id":"` + strings.Repeat("x", maxOrderBody) + `"}`, 413, "larger than"},
	{"escaped NUL", order(`"c\u0000d"`, `{"sku":"sku-fig","qty":1}`), 400, "customer_id: control character U+0000"},
	{"escaped NUL in a sku", order(`"c"`, `{"sku":"sku-fig\u0000","qty":1}`), 400, "items[0].sku: control character U+0000"},
	{"escaped bell", order(`"c\u0007"`, `{"sku":"sku-fig","qty":1}`), 400, "customer_id: control character U+0007"},
	{"escaped C1 control", `{"id":"o\u0085","customer_id":"c","items":[{"sku":"sku-fig","qty":1}]}`, 400, "id: control character U+0085"},
	{"raw control character", "{\"customer_id\":\"c\x01\",\"items\":[{\"sku\":\"sku-fig\",\"qty\":1}]}", 400, "customer_id"},
	{"raw DEL", order("\"c\x7f\"", `{"sku":"sku-fig","qty":1}`), 400, "customer_id: control character U+007F"},
	{"invalid UTF-8", order("\"c\xff\xfed\"", `{"sku":"sku-fig","qty":1}`), 400, "customer_id: invalid UTF-8"},
	{"invalid UTF-8 in a sku", order(`"c"`, "{\"sku\":\"sku-\xc3\",\"qty\":1}"), 400, "items[0].sku: invalid UTF-8"},
	{"invalid UTF-8 in a field name", "{\"customer\xff\":\"c\"}", 400, "field name: invalid UTF-8"},
	{"lone surrogate", order(`"c\ud800"`, `{"sku":"sku-fig","qty":1}`), 400, "customer_id: invalid escape"},
	{"repeated field", `{"customer_id":"a","customer_id":"b","items":[{"sku":"sku-fig","qty":1}]}`, 400, `customer_id: repeated`},
	{"wrong type: customer", order(`42`, `{"sku":"sku-fig","qty":1}`), 400, "customer_id: want string, got number"},
	{"wrong type: qty", order(`"c"`, `{"sku":"sku-fig","qty":"many"}`), 400, "items.qty: want int, got string"},
	{"wrong type: items", `{"customer_id":"c","items":{"sku":"sku-fig"}}`, 400, "items: want array"},
	{"wrong type: fractional qty", order(`"c"`, `{"sku":"sku-fig","qty":1.5}`), 400, "items.qty: want int"},
	{"overflowing qty", order(`"c"`, `{"sku":"sku-fig","qty":99999999999999999999}`), 400, "items.qty: want int"},
	{"unknown field", `{"customer_id":"c","itemz":[]}`, 400, `unknown field \"itemz\"`},
	{"unknown item field", order(`"c"`, `{"sku":"sku-fig","qty":1,"colour":"red"}`), 400, `unknown field \"colour\"`},
	{"missing items", `{"customer_id":"c"}`, 422, "items: at least one item"},
	{"empty items", order(`"c"`), 422, "items: at least one item"},
	{"zero quantity", order(`"c"`, `{"sku":"sku-fig","qty":0}`), 422, "items[0].qty: must be positive"},
	{"negative quantity", order(`"c"`, `{"sku":"sku-fig","qty":-1}`), 422, "items[0].qty: must be positive"},
	{"huge quantity", order(`"c"`, `{"sku":"sku-fig","qty":1000000}`), 422, "items[0].qty: at most"},
	{"too many items", order(`"c"`, strings.Repeat(`{"sku":"sku-fig","qty":1},`, maxItems)+`{"sku":"sku-fig","qty":1}`), 422, "items: at most"},
	{"unknown product", order(`"c"`, `{"sku":"sku-durian","qty":1}`), 422, `items[0].sku: unknown product \"sku-durian\"`},
	{"blank sku", order(`"c"`, `{"sku":" ","qty":1}`), 422, "items[0].sku: required"},
	{"missing customer", `{"items":[{"sku":"sku-fig","qty":1}]}`, 422, "customer_id: required"},
	{"blank customer", order(`"  "`, `{"sku":"sku-fig","qty":1}`), 422, "customer_id: required"},
	{"long customer", order(`"`+strings.Repeat("c", maxText+1)+`"`, `{"sku":"sku-fig","qty":1}`), 422, "customer_id: at most"},
	{"long id", `{"id":"` + strings.Repeat("i", maxText+1) + `","customer_id":"c","items":[{"sku":"sku-fig","qty":1}]}`, 422, "id: at most"},
}

func TestOrderAPIBadInput(t *testing.T) {
	for _, stack := range []edatest.Kind{edatest.Memory, edatest.Postgres} { // SQLite and Postgres
		t.Run(string(stack), func(t *testing.T) { testBadInput(t, stack) })
	}
}

func testBadInput(t *testing.T, stack edatest.Kind) {
	s, err := start(context.Background(), scenario(t, stack))
	must(t, err)
	defer s.stop()
	must(t, s.seed(context.Background()))
	url := "http://" + s.addr + "/orders"
	check := func(t *testing.T, what string, code int, body string, wantCode int, says string) {
		t.Helper()
		if code != wantCode || !strings.Contains(body, says) {
			t.Errorf("%s: %d %s, want %d saying %q", what, code, body, wantCode, says)
		}
		for _, d := range dbText {
			if strings.Contains(body, d) {
				t.Errorf("%s: the response carries database error text %q: %s", what, d, body)
			}
		}
	}
	for _, c := range badInput {
		code, body := rawPost(t, url, c.body)
		check(t, c.name, code, body, c.code, c.says)
		if code >= 500 {
			t.Errorf("%s: a client error got %d", c.name, code)
		}
	}
	for _, c := range []struct{ name, id, says string }{
		{"GET escaped NUL", "a%00b", "id: control character U+0000"},
		{"GET invalid UTF-8", "a%FFb", "id: invalid UTF-8"},
	} {
		code, body := rawDo(t, "GET", url+"/"+c.id, "")
		check(t, c.name, code, body, 400, c.says)
	}
	if code, body := rawDo(t, "GET", url+"/no-such-order", ""); code != 404 {
		t.Errorf("GET unknown order: %d %s, want 404", code, body)
	}
	var n int
	must(t, s.db.QueryRow(`SELECT COUNT(*) FROM orders`).Scan(&n))
	if n != 0 {
		t.Fatalf("%d orders stored from bad requests", n)
	}

	// Idempotent create: the same id and body twice creates one order and
	// one event; the same id with another body is a conflict.
	const first = `{"id":"order-dup","customer_id":"c","items":[{"sku":"sku-fig","qty":1},{"sku":"sku-pear","qty":2}]}`
	if code, body := rawPost(t, url, first); code != 201 || !strings.Contains(body, `"created":true`) {
		t.Fatalf("first POST: %d %s", code, body)
	}
	for _, c := range []struct {
		name, body string
		code       int
		says       string
	}{
		{"same body", first, 200, `"created":false`},
		{"same body, other spelling", "{ \"items\": [{\"qty\": 1, \"sku\": \"sku-fig\"}, {\"sku\": \"sku-pear\", \"qty\": 2}],\n \"customer_id\": \"c\", \"id\": \"order-dup\" }", 200, `"created":false`},
		{"other customer", `{"id":"order-dup","customer_id":"d","items":[{"sku":"sku-fig","qty":1},{"sku":"sku-pear","qty":2}]}`, 409, `order \"order-dup\" exists with another customer_id`},
		{"other quantity", `{"id":"order-dup","customer_id":"c","items":[{"sku":"sku-fig","qty":2},{"sku":"sku-pear","qty":2}]}`, 409, "exists with other items"},
		{"items reordered", `{"id":"order-dup","customer_id":"c","items":[{"sku":"sku-pear","qty":2},{"sku":"sku-fig","qty":1}]}`, 409, "exists with other items"},
		{"other customer and items", `{"id":"order-dup","customer_id":"d","items":[{"sku":"sku-fig","qty":1}]}`, 409, "another customer_id and other items"},
	} {
		code, body := rawPost(t, url, c.body)
		check(t, "repeated id, "+c.name, code, body, c.code, c.says)
	}
	waitStatus(t, s, "order-dup", "reserved")
	var events int
	must(t, s.db.QueryRow(`SELECT COUNT(*) FROM reservations WHERE order_id = 'order-dup'`).Scan(&events))
	if events != 1 {
		t.Fatalf("%d reservations for one order posted several times", events)
	}
	if code, body := rawDo(t, "GET", url+"/order-dup", ""); code != 200 || !strings.Contains(body, `"customer_id":"c"`) {
		t.Fatalf("GET order-dup: %d %s, want the first order", code, body)
	}

	// A failing query on a reachable database is the server's fault: 500,
	// logged, and its text stays out of the response.
	_, err = s.db.Exec(`DROP TABLE products`)
	must(t, err)
	code, body := rawPost(t, url, order(`"c"`, `{"sku":"sku-fig","qty":1}`))
	check(t, "products table gone", code, body, http.StatusInternalServerError, "internal error")

	// Database down at request time: 503, nothing half-written.
	must(t, s.db.DB.Close())
	code, body = rawPost(t, url, `{"id":"order-dbdown","customer_id":"c","items":[{"sku":"sku-fig","qty":1}]}`)
	check(t, "database down", code, body, http.StatusServiceUnavailable, "order store unavailable, retry later")
	code, body = rawDo(t, "GET", url+"/order-dup", "")
	check(t, "GET, database down", code, body, http.StatusServiceUnavailable, "order store unavailable, retry later")
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
