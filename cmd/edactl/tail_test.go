package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/ops"
	"github.com/edaproject/eda/transport"
)

type Shipped struct {
	OrderID string `json:"order_id"`
}

func (Shipped) EventName() string { return "test.Shipped" }

// tailOnce starts edactl tail -n 1, publishes an event once it is
// listening, and returns its output and the temporary queue's name. It
// checks the watched queue still holds the event (tail did not consume it).
func tailOnce(t *testing.T, tr transport.Transport, prefix string, conn []string, jsonOut bool) (stdout, temp, eventID string) {
	ctx := testContext(t)
	app, err := eda.New(eda.Config{Transport: tr, Source: "edactl-test"})
	if err != nil {
		t.Fatal(err)
	}
	topic, queue := prefix+"shipments", prefix+"shipping"
	if err := eda.Register[Shipped](app, topic); err != nil {
		t.Fatal(err)
	}
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	out, errb := newSyncBuffer(), newSyncBuffer()
	args := append([]string{"tail", "-queue", queue, "-n", "1", "-for", "40s"}, conn...)
	if jsonOut {
		args = append(args, "-o", "json")
	}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, out, errb) }()
	errb.waitFor(t, "tailing queue "+queue+" (topics "+topic+")", 30*time.Second)
	temp = regexp.MustCompile(`temporary queue (\S+)\)`).FindStringSubmatch(errb.String())[1]

	_, msg, err := app.NewMessage(ctx, Shipped{OrderID: "o-77"})
	if err != nil {
		t.Fatal(err)
	}
	msg.Metadata.Set(eda.MetadataCorrelationID, "corr-42")
	if err := tr.Publish(topic, msg); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("tail: exit %d\n%s\n%s", code, out.String(), errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("tail printed no event:\n%s\n%s", out.String(), errb.String())
	}
	// The watched queue still has the event.
	sub, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := tr.Subscribe(sub, queue)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		m.Ack()
		if m.Metadata.Get(eda.MetadataID) != msg.Metadata.Get(eda.MetadataID) {
			t.Errorf("the watched queue holds %s, want %s", m.UUID, msg.UUID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("tail consumed the event from the watched queue")
	}
	return out.String(), temp, msg.Metadata.Get(eda.MetadataID)
}

func checkTailTable(t *testing.T, out, eventID string) {
	t.Helper()
	for _, want := range []string{"TYPE", "test.Shipped", eventID, "corr-42", `{"order_id":"o-77"}`} {
		if !strings.Contains(out, want) {
			t.Errorf("tail output lacks %q:\n%s", want, out)
		}
	}
}

func TestTailPostgres(t *testing.T) {
	t.Parallel()
	tr, pool, schema := pgTransport(t)
	conn := []string{"-transport", "postgres", "-db", testDSN(), "-schema", schema}
	out, temp, id := tailOnce(t, tr, "", conn, false)
	checkTailTable(t, out, id)
	if n := countQueues(t, pool, schema, temp); n != 0 {
		t.Errorf("the temporary queue %s is still declared", temp)
	}
}

func countQueues(t *testing.T, pool *pgxpool.Pool, schema, name string) int {
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM "`+schema+`".queues WHERE name = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTailAWS(t *testing.T) {
	t.Parallel()
	tr := awsTransport(t)
	out, temp, id := tailOnce(t, tr, uniq("tl")+"-", []string{"-transport", "aws", "-aws-endpoint", endpoint()}, true)
	var ev ops.TailEvent
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ev); err != nil {
		t.Fatalf("tail -o json: %v:\n%s", err, out)
	}
	if ev.ID != id || ev.Type != "test.Shipped" || ev.Correlation != "corr-42" || ev.Payload != `{"order_id":"o-77"}` {
		t.Errorf("tail -o json: %+v", ev)
	}
	if _, err := tr.SQS().GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: awssdk.String(temp)}); err == nil {
		t.Errorf("the temporary queue %s still exists", temp)
	}
}
