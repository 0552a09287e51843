package console_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/console"
	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
)

const startPostgres = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

func testDSN() string {
	if dsn := os.Getenv("EDA_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

func uniq(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// pgSchema returns a pool and a fresh schema, dropped at cleanup.
func pgSchema(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := testContext(t)
	pool, err := pgxpool.New(ctx, testDSN())
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("Postgres at %s is not reachable (start it: %s): %v", testDSN(), startPostgres, err)
	}
	schema := uniq("console_")
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = pool.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		pool.Close()
	})
	return pool, schema
}

// pgSystem is a Postgres transport with the orders example's shape: topic
// orders → queue inventory (with its DLQ), and the poison queue.
type pgSystem struct {
	pool   *pgxpool.Pool
	schema string
	tr     *postgres.Transport
}

func newPGSystem(t testing.TB) *pgSystem {
	t.Helper()
	pool, schema := pgSchema(t)
	ctx := testContext(t)
	cfg := postgres.Config{Pool: pool, Schema: schema}
	if err := postgres.Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	tr, err := postgres.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	for _, q := range []transport.Queue{
		{Name: "inventory", Topics: []string{"orders"}, MaxReceiveCount: 5},
		middleware.PoisonQueue("poison", "poison").Queue,
	} {
		if err := tr.Declare(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	return &pgSystem{pool: pool, schema: schema, tr: tr}
}

// poison publishes n messages to the poison topic as the poison middleware
// does (its metadata keys), through the transport: reason permanent for the
// even ones, retries_exhausted for the odd ones.
func (s *pgSystem) poison(t testing.TB, n int) {
	t.Helper()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	batch := make([]*message.Message, 0, 500)
	flush := func() {
		if err := s.tr.Publish("poison", batch...); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := range n {
		msg := message.NewMessage(fmt.Sprintf("ev-%06d", i), []byte(fmt.Sprintf(`{"order_id":"o-%d","items":[{"sku":"sku-fig","qty":1}]}`, i)))
		eda.Envelope{ID: msg.UUID, Source: "console-test", Type: "orders.OrderCreated", Time: time.Now(), ContentType: "application/json",
			SchemaVersion: 1, CorrelationID: "corr-" + msg.UUID}.Apply(msg.Metadata)
		reason := middleware.ReasonPermanent
		if i%2 == 1 {
			reason = middleware.ReasonRetriesExhausted
		}
		msg.Metadata.Set(middleware.MetadataPoisonReason, string(reason))
		msg.Metadata.Set(middleware.MetadataPoisonError, "decode OrderCreated: unexpected end of JSON input")
		msg.Metadata.Set(middleware.MetadataPoisonHandler, "inventory/OrderCreated")
		msg.Metadata.Set(middleware.MetadataPoisonAttempts, "3")
		msg.Metadata.Set(middleware.MetadataPoisonDeliveries, "1")
		msg.Metadata.Set(middleware.MetadataPoisonQueue, "inventory")
		msg.Metadata.Set(middleware.MetadataPoisonFirstFailure, now)
		msg.Metadata.Set(middleware.MetadataPoisonLastFailure, now)
		batch = append(batch, msg)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
}

// count returns how many rows queue holds.
func (s *pgSystem) count(t testing.TB, queue string) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(testContext(t), "SELECT count(*) FROM "+pgx.Identifier{s.schema}.Sanitize()+".messages WHERE queue = $1", queue).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// browser is an HTTP client with cookies, as a browser is.
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
}

func newBrowser(t testing.TB, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) post(path string, form url.Values) (int, string, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header.Get("Location")
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func csrfOf(t testing.TB, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%.2000s", page)
	}
	return m[1]
}

func startConsole(t testing.TB, cfg console.Config) *httptest.Server {
	t.Helper()
	h, err := console.New(testContext(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	return srv
}

func TestConsolePostgresDeadLetters(t *testing.T) {
	s := newPGSystem(t)
	s.poison(t, 3)
	srv := startConsole(t, console.Config{Postgres: &console.PostgresConfig{Pool: s.pool, Schema: s.schema}})
	b := newBrowser(t, srv.URL)

	code, body := b.get("/")
	if code != http.StatusOK || !strings.Contains(body, "poison holds 3 dead letter(s)") || !strings.Contains(body, `id="q-inventory"`) {
		t.Fatalf("overview %d:\n%s", code, body)
	}
	code, body = b.get("/dlq?queue=poison")
	if code != http.StatusOK || strings.Count(body, `class="message"`) != 3 || !strings.Contains(body, "unexpected end of JSON input") ||
		!strings.Contains(body, `data-reason="permanent"`) {
		t.Fatalf("dlq page %d:\n%s", code, body)
	}
	token := csrfOf(t, body)
	ids := regexp.MustCompile(`class="message" data-id="(\d+)"`).FindAllStringSubmatch(body, -1)

	// Bad input changes nothing, and says why.
	for _, c := range []struct {
		name string
		form url.Values
		code int
		says string
	}{
		{"no token", url.Values{"queue": {"poison"}, "do": {"redrive:all"}, "confirm": {"yes"}}, 403, "CSRF"},
		{"wrong token", url.Values{"csrf": {strings.Repeat("0", 32)}, "queue": {"poison"}, "do": {"redrive:all"}, "confirm": {"yes"}}, 403, "CSRF"},
		{"unknown queue", url.Values{"csrf": {token}, "queue": {"nope"}, "do": {"redrive:all"}, "confirm": {"yes"}}, 404, `no queue &#34;nope&#34;`},
		{"not a dead-letter queue", url.Values{"csrf": {token}, "queue": {"inventory"}, "do": {"discard:all"}, "confirm": {"yes"}}, 400, "not a dead-letter"},
		{"unknown id", url.Values{"csrf": {token}, "queue": {"poison"}, "do": {"redrive:selected"}, "id": {ids[0][1], "999999"}}, 404, "999999"},
		{"malformed id", url.Values{"csrf": {token}, "queue": {"poison"}, "do": {"discard:selected"}, "id": {"abc"}}, 404, "abc"},
		{"nothing selected", url.Values{"csrf": {token}, "queue": {"poison"}, "do": {"redrive:selected"}}, 400, "no message selected"},
		{"unknown action", url.Values{"csrf": {token}, "queue": {"poison"}, "do": {"explode:all"}}, 400, "unknown action"},
	} {
		code, body, _ := b.post("/dlq", c.form)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d, want %d saying %q:\n%.3000s", c.name, code, c.code, c.says, body)
		}
	}
	if n := s.count(t, "poison"); n != 3 {
		t.Fatalf("bad input changed the poison queue: %d messages, want 3", n)
	}

	// A group: confirmation with the count, then the redrive.
	code, body, _ = b.post("/dlq", url.Values{"csrf": {token}, "queue": {"poison"}, "scope": {"group"}, "reason": {"permanent"}, "action": {"redrive"}})
	if code != http.StatusOK || !strings.Contains(body, "Redrive 2 messages?") || !strings.Contains(body, "2 back to queue inventory") {
		t.Fatalf("confirm %d:\n%s", code, body)
	}
	if n := s.count(t, "poison"); n != 3 {
		t.Fatalf("the confirmation moved messages: %d left, want 3", n)
	}
	code, _, loc := b.post("/dlq", url.Values{"csrf": {token}, "queue": {"poison"}, "scope": {"group"}, "reason": {"permanent"}, "action": {"redrive"}, "confirm": {"yes"}})
	if code != http.StatusSeeOther || !strings.Contains(loc, "redriven") {
		t.Fatalf("redrive: %d %s", code, loc)
	}
	if p, i := s.count(t, "poison"), s.count(t, "inventory"); p != 1 || i != 2 {
		t.Fatalf("after the group redrive: poison %d, inventory %d; want 1 and 2", p, i)
	}
	_, body = b.get("/dlq?queue=poison")
	if strings.Count(body, `class="message"`) != 1 || !strings.Contains(body, `data-reason="retries_exhausted"`) {
		t.Fatalf("dlq page after the redrive:\n%s", body)
	}
	// Discard the rest, one selected.
	left := regexp.MustCompile(`class="message" data-id="(\d+)"`).FindStringSubmatch(body)[1]
	code, body, _ = b.post("/dlq", url.Values{"csrf": {token}, "queue": {"poison"}, "do": {"discard:selected"}, "id": {left}})
	if code != http.StatusOK || !strings.Contains(body, "Discard 1 message?") {
		t.Fatalf("confirm discard %d:\n%s", code, body)
	}
	if code, _, _ := b.post("/dlq", url.Values{"csrf": {token}, "queue": {"poison"}, "action": {"discard"}, "scope": {"selected"}, "id": {left}, "confirm": {"yes"}}); code != http.StatusSeeOther {
		t.Fatalf("discard: %d", code)
	}
	if n := s.count(t, "poison"); n != 0 {
		t.Fatalf("after discard: %d in poison, want 0", n)
	}
}

func TestConsoleReadOnlyAndPaging(t *testing.T) {
	s := newPGSystem(t)
	s.poison(t, 7)
	srv := startConsole(t, console.Config{Postgres: &console.PostgresConfig{Pool: s.pool, Schema: s.schema}, ReadOnly: true, PageSize: 3})
	b := newBrowser(t, srv.URL)
	code, body := b.get("/dlq?queue=poison")
	if code != 200 || strings.Count(body, `class="message"`) != 3 || strings.Contains(body, "redrive-all") || !strings.Contains(body, `id="read-only"`) {
		t.Fatalf("read-only page %d:\n%s", code, body)
	}
	// Groups count the whole queue, not the page.
	if !regexp.MustCompile(`data-reason="permanent"><td><code>permanent</code></td><td class="n count">4<`).MatchString(body) {
		t.Errorf("groups do not count the whole queue:\n%s", body)
	}
	seen := map[string]bool{}
	path := "/dlq?queue=poison"
	for range 5 {
		_, body = b.get(path)
		for _, m := range regexp.MustCompile(`class="message" data-id="(\d+)"`).FindAllStringSubmatch(body, -1) {
			if seen[m[1]] {
				t.Fatalf("message %s on two pages", m[1])
			}
			seen[m[1]] = true
		}
		next := regexp.MustCompile(`href="(dlq\?queue=poison&amp;after=\d+)" id="next-page"`).FindStringSubmatch(body)
		if next == nil {
			break
		}
		path = "/" + strings.ReplaceAll(next[1], "&amp;", "&")
	}
	if len(seen) != 7 {
		t.Errorf("paged through %d messages, want 7", len(seen))
	}
	token := csrfOf(t, body)
	code, body, _ = b.post("/dlq", url.Values{"csrf": {token}, "queue": {"poison"}, "do": {"discard:all"}, "confirm": {"yes"}})
	if code != http.StatusForbidden || !strings.Contains(body, "read-only") {
		t.Errorf("read-only POST: %d\n%s", code, body)
	}
	if n := s.count(t, "poison"); n != 7 {
		t.Errorf("read-only console changed the queue: %d left", n)
	}
	if code, body := b.get("/dlq?queue=poison&after=x"); code != http.StatusBadRequest || !strings.Contains(body, "malformed message id") {
		t.Errorf("bad after: %d\n%s", code, body)
	}
	if code, _ := b.get("/dlq?queue=nope"); code != http.StatusNotFound {
		t.Errorf("unknown queue: %d", code)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  console.Config
	}{
		{"no broker", console.Config{}},
		{"no pool", console.Config{Postgres: &console.PostgresConfig{Schema: "x"}}},
		{"negative page", console.Config{Postgres: &console.PostgresConfig{Schema: "x"}, PageSize: -1}},
	} {
		if err := c.cfg.Validate(); err == nil {
			t.Errorf("%s: valid", c.name)
		}
	}
}

// The tail streams what a queue receives, through a temporary queue it
// removes when the stream ends; the queue itself keeps its message.
func TestConsoleTailPostgres(t *testing.T) {
	s := newPGSystem(t)
	srv := startConsole(t, console.Config{Postgres: &console.PostgresConfig{Pool: s.pool, Schema: s.schema}})
	ctx, cancel := context.WithTimeout(testContext(t), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/tail/events?queue=inventory", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("tail: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(resp.Body)
	next := func(prefix string) string {
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), prefix) {
				return lines.Text()
			}
		}
		t.Fatalf("stream ended before %q: %v", prefix, lines.Err())
		return ""
	}
	next("event: ready")
	msg := message.NewMessage("ev-tail-1", []byte(`{"order_id":"o-1"}`))
	eda.Envelope{ID: msg.UUID, Source: "t", Type: "orders.OrderCreated", Time: time.Now(), CorrelationID: "corr-tail"}.Apply(msg.Metadata)
	if err := s.tr.Publish("orders", msg); err != nil {
		t.Fatal(err)
	}
	next("event: message")
	if data := next("data: "); !strings.Contains(data, `"id":"ev-tail-1"`) || !strings.Contains(data, `"correlation":"corr-tail"`) {
		t.Errorf("event: %s", data)
	}
	if n := s.count(t, "inventory"); n != 1 {
		t.Errorf("inventory holds %d, want its 1 message untouched", n)
	}
	cancel()
	resp.Body.Close()
	if !poll.Until(10*time.Second, func() bool {
		var n int
		_ = s.pool.QueryRow(testContext(t), "SELECT count(*) FROM "+pgx.Identifier{s.schema}.Sanitize()+".queues WHERE name LIKE 'edactl-tail-%'").Scan(&n)
		return n == 0
	}) {
		t.Error("the temporary queue was not removed")
	}
}
