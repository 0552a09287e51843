package console_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/console"
	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/pgxstore"
	edaaws "github.com/edaproject/eda/transport/aws"
)

func endpoint() string {
	if e := os.Getenv("EDA_AWS_ENDPOINT"); e != "" {
		return e
	}
	return "http://127.0.0.1:4566"
}

// chromium returns the browser the tests drive, failing with the command
// that installs it when it is missing.
func chromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("EDA_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no Chromium at %s (install it: scripts/chromium.sh install): %v", path, err)
	}
	return path
}

func requireEmulator(t *testing.T) {
	t.Helper()
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(endpoint() + "/health")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = errors.New(resp.Status)
		}
	}
	if err != nil {
		t.Fatalf("the SNS/SQS emulator at %s does not answer (start it: scripts/emulator.sh up): %v", endpoint(), err)
	}
}

func awsConfig(t *testing.T) awssdk.Config {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// removeAWS deletes the queues and topics whose name starts with prefix.
func removeAWS(cfg awssdk.Config, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = awssdk.String(endpoint()) })
	s := sns.NewFromConfig(cfg, func(o *sns.Options) { o.BaseEndpoint = awssdk.String(endpoint()) })
	if out, err := q.ListQueues(ctx, &sqs.ListQueuesInput{QueueNamePrefix: &prefix}); err == nil {
		for _, u := range out.QueueUrls {
			_, _ = q.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: awssdk.String(u)})
		}
	}
	p := sns.NewListTopicsPaginator(s, &sns.ListTopicsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return
		}
		for _, tp := range page.Topics {
			arn := awssdk.ToString(tp.TopicArn)
			if strings.HasPrefix(arn[strings.LastIndexByte(arn, ':')+1:], prefix) {
				_, _ = s.DeleteTopic(ctx, &sns.DeleteTopicInput{TopicArn: tp.TopicArn})
			}
		}
	}
}

// startOrders builds and starts the orders example on Postgres and the
// emulator, with prefix on every name, and returns once its demo is done
// (the poison message in the poison queue) and it serves.
func startOrders(t *testing.T, schema, prefix string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "orders")
	build := exec.Command("go", "build", "-o", bin, "github.com/edaproject/eda/examples/orders")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the orders example: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-db", testDSN(), "-schema", schema, "-transport", "aws", "-aws-endpoint", endpoint(),
		"-prefix", prefix, "-orders", "4", "-serve", "-addr", "127.0.0.1:0", "-timeout", "90s")
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	serving := make(chan struct{})
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "serving;") {
				close(serving)
			}
		}
		exited <- cmd.Wait()
	}()
	select {
	case <-serving:
	case err := <-exited:
		exited <- err
		t.Fatalf("the orders example exited: %v\n%s\n%s", err, log.String(), stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("the orders example did not finish its demo in 2m:\n%s\n%s", log.String(), stderr.String())
	}
}

// browse starts headless Chromium with a fresh profile.
func browse(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	// The first run starts the browser, which lives as long as ctx: no
	// timeout on it (each step gets its own, see do).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// stepTimeout bounds each step of a browser test: waits on selectors
// return as soon as they are met.
const stepTimeout = 60 * time.Second

// do runs steps in the browser, each sequence within stepTimeout.
func do(b context.Context, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b, stepTimeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// run runs one action that returns a value, within stepTimeout.
func run[T any](b context.Context, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b, stepTimeout)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// screenshot saves the page as name under the test's temp dir and, when
// EDA_SCREENSHOT_DIR is set, there too.
func screenshot(t *testing.T, b context.Context, name string) {
	t.Helper()
	png, err := run(b, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("EDA_SCREENSHOT_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
}

// TestBrowserOrders drives the console in headless Chromium against the
// orders example on Postgres and the emulator: the poison message shows in
// the DLQ count; a redrive from the page sends it back to its queue, where
// it is poisoned again (a redrive more in its history), not lost; a failed
// outbox record retried from the page is published; a POST without the
// CSRF token is refused.
func TestBrowserOrders(t *testing.T) {
	requireEmulator(t)
	chromium(t)
	pool, schema := pgSchema(t)
	prefix := uniq("ct") + "-"
	cfg := awsConfig(t)
	t.Cleanup(func() { removeAWS(cfg, prefix) })
	startOrders(t, schema, prefix)
	ctx := testContext(t)

	// A record the relay gave up on (its failed state, as the relay leaves
	// it on a permanent error), to a topic the operator has created since
	// (the relay publishes only to a topic that exists: it never creates a
	// bare one).
	sn := sns.NewFromConfig(cfg, func(o *sns.Options) { o.BaseEndpoint = awssdk.String(endpoint()) })
	if _, err := sn.CreateTopic(ctx, &sns.CreateTopicInput{Name: awssdk.String(prefix + "audit")}); err != nil {
		t.Fatal(err)
	}
	// Failed records live in the outbox's held table (pgxstore schema v4).
	held := pgx.Identifier{schema, "eda_outbox_held"}.Sanitize()
	seqName := schema + ".eda_outbox_id_seq"
	eventID := uuid.NewString()
	md, _ := outbox.MarshalMetadata(map[string]string{"ce_id": eventID, "ce_type": "orders.AuditNote", "ce_source": "console-test"})
	var seq int64
	if err := pool.QueryRow(ctx, `INSERT INTO `+held+` (id, event_id, topic, payload, metadata, ordering_key, dedup_id, created_at, state, attempts, last_error)
VALUES (nextval('`+seqName+`'), $1, $2, $3, $4, '', '', now(), 2, 1, 'aws: SNS topic "audit": topic does not exist') RETURNING id`,
		eventID, prefix+"audit", []byte(`{"note":"hello"}`), string(md)).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	store, err := pgxstore.New(pool, pgxstore.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	srv := startConsole(t, console.Config{
		AWS:         &edaaws.Config{AWS: cfg, Endpoint: endpoint()},
		Outbox:      store,
		QueuePrefix: prefix,
		Refresh:     500 * time.Millisecond,
	})
	poison := prefix + "orders-poison"
	dlqURL := srv.URL + "/dlq?queue=" + url.QueryEscape(poison)
	b := browse(t)

	// Overview: the poison queue's count (both consumers of the orders
	// topic poisoned their copy), marked for attention.
	sel := "#q-" + poison
	if err := do(b,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible("#graph"),
		chromedp.WaitVisible("#outbox-failed.attention"),
	); err != nil {
		t.Fatalf("overview: %v", err)
	}
	if _, err := run(b, chromedp.Poll[bool](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e && e.textContent.trim() === "2"; })()`, sel+" .visible"),
		chromedp.WithPollingTimeout(50*time.Second))); err != nil {
		html, _ := run(b, chromedp.OuterHTML("main"))
		t.Fatalf("the poison queue's count never showed 2: %v\n%s", err, html)
	}
	if err := do(b, chromedp.WaitVisible(sel+".attention")); err != nil {
		t.Fatal(err)
	}
	attention, err := run(b, chromedp.Text("#attention"))
	if err != nil || !strings.Contains(attention, poison+" holds 2 dead letter(s)") {
		t.Errorf("attention: %q %v", attention, err)
	}
	screenshot(t, b, "console-overview.png")

	// Dead letters: the two poison copies, why, and the payload.
	if err := do(b, chromedp.Navigate(dlqURL), chromedp.WaitVisible(`tr.message`), chromedp.WaitVisible("#peek-note")); err != nil {
		t.Fatal(err)
	}
	detail, err := run(b, chromedp.Text("#messages"))
	if err != nil || !strings.Contains(detail, "orders.OrderCreated") || !strings.Contains(detail, "permanent") {
		t.Errorf("messages table: %q %v", detail, err)
	}
	if n, err := run(b, chromedp.Evaluate[int](`document.querySelectorAll("tr.message").length`)); err != nil || n != 2 {
		t.Fatalf("%d messages on the page, want 2 (%v)", n, err)
	}
	if err := do(b, chromedp.Click("tr.detail summary"), chromedp.WaitVisible("tr.detail pre.payload")); err != nil {
		t.Fatal(err)
	}
	screenshot(t, b, "console-dlq.png")

	// Redrive all, after a confirmation that says how many.
	if err := do(b, chromedp.Click("#redrive-all"), chromedp.WaitVisible("#confirm-count")); err != nil {
		t.Fatal(err)
	}
	if confirm, err := run(b, chromedp.Text("#confirm-count")); err != nil || !strings.Contains(confirm, "redrive 2 messages") {
		t.Fatalf("confirmation: %q %v", confirm, err)
	}
	if err := do(b, chromedp.Click("#confirm-yes"), chromedp.WaitVisible("#notice")); err != nil {
		t.Fatal(err)
	}
	if notice, err := run(b, chromedp.Text("#notice")); err != nil || !strings.Contains(notice, "redriven: 2 message(s)") {
		t.Fatalf("after the redrive: %q %v", notice, err)
	}
	// Back in their queues, the handlers poison them again: they return
	// with one redrive in their history, not lost.
	again := 0
	if !poll.Until(60*time.Second, func() bool {
		if do(b, chromedp.Navigate(dlqURL), chromedp.WaitVisible("#messages")) != nil {
			return false
		}
		again, err = run(b, chromedp.Evaluate[int](`document.querySelectorAll('tr.message[data-redrives="1"]').length`))
		return err == nil && again == 2
	}) {
		t.Fatalf("%d message(s) poisoned again after the redrive, want 2", again)
	}

	// Outbox: retry the failed record from the page; the relay publishes it.
	if err := do(b, chromedp.Navigate(srv.URL+"/outbox"), chromedp.WaitVisible(fmt.Sprintf(`tr.record[data-seq="%d"]`, seq))); err != nil {
		t.Fatal(err)
	}
	screenshot(t, b, "console-outbox.png")
	if err := do(b,
		chromedp.Click(fmt.Sprintf(`input.pick[value="%d"]`, seq)),
		chromedp.Click("#retry-selected"),
		chromedp.WaitVisible("#confirm-count"),
	); err != nil {
		t.Fatal(err)
	}
	if confirm, err := run(b, chromedp.Text("#confirm-count")); err != nil || !strings.Contains(confirm, "retry 1 record") {
		t.Fatalf("confirmation: %q %v", confirm, err)
	}
	if err := do(b, chromedp.Click("#confirm-yes"), chromedp.WaitVisible("#notice")); err != nil {
		t.Fatal(err)
	}
	if notice, err := run(b, chromedp.Text("#notice")); err != nil || !strings.Contains(notice, "retried 1 record(s)") {
		t.Fatalf("after the retry: %q %v", notice, err)
	}
	var state int
	if !poll.Until(30*time.Second, func() bool {
		return pool.QueryRow(ctx, `SELECT state FROM `+pgx.Identifier{schema, "eda_outbox_done"}.Sanitize()+` WHERE id = $1`, seq).Scan(&state) == nil && state == 1
	}) {
		t.Fatalf("the retried record is in state %d, want 1 (published)", state)
	}
	if err := do(b, chromedp.Navigate(srv.URL+"/outbox"), chromedp.WaitVisible("#no-failed")); err != nil {
		t.Fatal(err)
	}

	// A POST without the CSRF token is refused, from the page itself and
	// from outside; nothing changes.
	status, err := run(b, chromedp.Evaluate[int](`fetch("dlq", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
		body: "queue=`+url.QueryEscape(poison)+`&do=discard:all&confirm=yes"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusForbidden {
		t.Errorf("POST without the token from the page: %d, want 403", status)
	}
	resp, err := http.PostForm(srv.URL+"/dlq", url.Values{"queue": {poison}, "do": {"discard:all"}, "confirm": {"yes"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST without the token: %d, want 403", resp.StatusCode)
	}
	if err := do(b, chromedp.Navigate(dlqURL), chromedp.WaitVisible("#messages")); err != nil {
		t.Fatal(err)
	}
	if n, err := run(b, chromedp.Evaluate[int](`document.querySelectorAll("tr.message").length`)); err != nil || n != 2 {
		t.Errorf("after the refused POSTs: %d messages, want 2 (%v)", n, err)
	}
}
