package aws_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// uniq returns a broker-safe unique name.
func uniq(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func newMsg(payload string, md map[string]string) *message.Message {
	id := uniq("id")
	m := message.NewMessage(id, []byte(payload))
	m.Metadata.Set(transport.MetadataEventID, id)
	for k, v := range md {
		m.Metadata.Set(k, v)
	}
	return m
}

func receive(t *testing.T, ch <-chan *message.Message, what string) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: nothing received in 20s", what)
	}
	return nil
}

func TestConfigValidate(t *testing.T) {
	err := edaaws.Config{BatchSize: 11, Concurrency: -1, WaitTime: 1500 * time.Millisecond}.Validate()
	for _, want := range []error{edaaws.ErrMissingRegion, transport.ErrInvalidConfig} {
		if !errors.Is(err, want) {
			t.Errorf("Validate: %v, want %v", err, want)
		}
	}
	for _, s := range []string{"BatchSize 11", "Concurrency -1", "WaitTime 1.5s"} {
		if !strings.Contains(fmt.Sprint(err), s) {
			t.Errorf("Validate error %q does not mention %q", err, s)
		}
	}
	if _, err := edaaws.New(edaaws.Config{}); !errors.Is(err, edaaws.ErrMissingRegion) {
		t.Errorf("New without region: %v, want ErrMissingRegion", err)
	}
	if err := (edaaws.Config{AWS: awsConfig()}).Validate(); err != nil {
		t.Errorf("minimal config: %v", err)
	}
	err = edaaws.Config{AWS: awsConfig(), Attributes: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}}.Validate()
	if !errors.Is(err, transport.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), "10 Attributes") {
		t.Errorf("10 attributes: %v, want ErrInvalidConfig", err)
	}
	err = edaaws.Config{AWS: awsConfig(), Attributes: []string{"ce_type", "has space", "AWS.x"}}.Validate()
	if !errors.Is(err, transport.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), `"has space"`) || !strings.Contains(fmt.Sprint(err), `"AWS.x"`) {
		t.Errorf("bad attribute names: %v, want ErrInvalidConfig naming both", err)
	}
}

func TestUnreachableEndpoint(t *testing.T) {
	cfg := edaaws.Config{AWS: awsConfig(), Endpoint: "http://127.0.0.1:1", AccountID: "000000000000"}
	cfg.AWS.RetryMaxAttempts = 1
	tr := newTransport(t, cfg)
	err := tr.Publish("orders", newMsg("x", nil))
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("Publish: %v, want ErrUnavailable", err)
	}
	err = tr.Declare(testContext(t), transport.Queue{Name: "q", Topics: []string{"orders"}})
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("Declare: %v, want ErrUnavailable", err)
	}
	if _, err := tr.Subscribe(testContext(t), "q"); !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("Subscribe: %v, want ErrUnavailable", err)
	}
}

func TestAutoCreateOff(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t)
	cfg.AutoCreate = false
	strict := newTransport(t, cfg)
	topic, queue := uniq("topic"), uniq("queue")
	q := transport.Queue{Name: queue, Topics: []string{topic}, MaxReceiveCount: 3}

	err := strict.Declare(ctx, q)
	if !errors.Is(err, transport.ErrUnknownQueue) || !errors.Is(err, transport.ErrUnknownTopic) {
		t.Errorf("Declare of a missing topic and queue: %v, want ErrUnknownQueue and ErrUnknownTopic", err)
	}
	if err := strict.Publish(topic, newMsg("x", nil)); !errors.Is(err, transport.ErrTopicNotReady) || errors.Is(err, transport.ErrUnknownTopic) {
		t.Errorf("Publish to a missing topic: %v, want ErrTopicNotReady (retryable), not ErrUnknownTopic", err)
	}
	if _, err := strict.Subscribe(ctx, queue); !errors.Is(err, transport.ErrUnknownQueue) {
		t.Errorf("Subscribe to a missing queue: %v, want ErrUnknownQueue", err)
	}

	// Deployment creates the topology; the service then verifies and runs.
	if err := newTransport(t, testConfig(t)).Declare(ctx, q); err != nil {
		t.Fatalf("Declare with AutoCreate: %v", err)
	}
	if err := strict.Declare(ctx, q); err != nil {
		t.Fatalf("Declare of the existing topology: %v", err)
	}
	drift := q
	drift.VisibilityTimeout = 45 * time.Second
	if err := strict.Declare(ctx, drift); !errors.Is(err, transport.ErrInvalidConfig) || !strings.Contains(err.Error(), "VisibilityTimeout=45") {
		t.Errorf("Declare with another visibility timeout: %v, want ErrInvalidConfig naming it", err)
	}
	ch, err := strict.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	sent := newMsg("hello", nil)
	if err := strict.Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch, "after verification")
	if got.UUID != sent.UUID {
		t.Fatalf("got %s, want %s", got.UUID, sent.UUID)
	}
	got.Ack()
}

func TestDeclareValidation(t *testing.T) {
	tr := newTransport(t, testConfig(t))
	ctx := testContext(t)
	for _, q := range []transport.Queue{
		{Name: "half-second", VisibilityTimeout: 1500 * time.Millisecond},
		{Name: "bad name!"},
		{Name: strings.Repeat("n", 81)},
		{Name: "mrc", MaxReceiveCount: 1001},
	} {
		if err := tr.Declare(ctx, q); !errors.Is(err, transport.ErrInvalidConfig) {
			t.Errorf("Declare %+v: %v, want ErrInvalidConfig", q, err)
		}
	}
}

// TestPayloadsAndMetadata sends what SQS cannot carry as is: binary and
// empty payloads, more than 10 metadata entries, empty values.
func TestPayloadsAndMetadata(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	many := map[string]string{"empty": "", "with space": "v", "ctl": "a\x01b"}
	for i := range 14 {
		many[fmt.Sprintf("k%d", i)] = fmt.Sprint(i)
	}
	binary := newMsg("", many)
	binary.Payload = []byte{0, 0xff, 0xfe, 1, 2, 3}
	empty := newMsg("", nil)
	foreignUUID := newMsg("uuid differs", nil)
	foreignUUID.UUID = "not-the-event-id"
	sent := []*message.Message{binary, empty, foreignUUID}
	if err := tr.Publish(topic, sent...); err != nil {
		t.Fatal(err)
	}
	got := map[string]*message.Message{}
	for range sent {
		m := receive(t, ch, "payloads")
		got[m.Metadata.Get(transport.MetadataEventID)] = m
		m.Ack()
	}
	for _, s := range sent {
		g := got[s.Metadata.Get(transport.MetadataEventID)]
		if g == nil {
			t.Fatalf("message %s not received", s.UUID)
		}
		if g.UUID != s.UUID || !bytes.Equal(g.Payload, s.Payload) {
			t.Errorf("got %s %x, want %s %x", g.UUID, g.Payload, s.UUID, s.Payload)
		}
		for k, v := range s.Metadata {
			if g.Metadata.Get(k) != v {
				t.Errorf("message %s: metadata %q = %q, want %q", s.UUID, k, g.Metadata.Get(k), v)
			}
		}
	}
}

// TestPublishBatch publishes more than one PublishBatch holds, in one call.
//
// The visibility timeout is short: about one ReceiveMessage in a hundred
// with several 100 KiB messages loses its response between fauxqs and the
// SDK ("deserialization failed ... use of closed network connection"); the
// SDK retries, and the messages the lost response carried come back after
// the visibility timeout, as they would on SQS.
func TestPublishBatch(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	want := map[string]bool{}
	for i := range 47 {
		payload := fmt.Sprint(i)
		if i%10 == 3 {
			payload = strings.Repeat("p", 100*1024) // forces size-bound chunks
		}
		m := newMsg(payload, nil)
		msgs = append(msgs, m)
		want[m.UUID] = true
	}
	if err := tr.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	for len(want) > 0 {
		select {
		case m := <-ch:
			delete(want, m.UUID)
			m.Ack()
		case <-time.After(20 * time.Second):
			t.Fatalf("batch: %d messages missing after 20s", len(want))
		}
	}
}

// TestFIFOBatchOrder publishes one group's 25 messages in one call (three
// PublishBatch calls) and checks they arrive in order.
func TestFIFOBatchOrder(t *testing.T) {
	ctx := testContext(t)
	cfg := testConfig(t)
	cfg.Concurrency = 4
	tr := newTransport(t, cfg)
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, FIFO: true}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	for i := range 25 {
		msgs = append(msgs, newMsg(fmt.Sprint(i), map[string]string{transport.MetadataGroupID: "g"}))
	}
	if err := tr.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		m := receive(t, ch, "fifo")
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, m.Payload)
		}
		m.Ack()
	}
	noGroup := newMsg("x", nil)
	if err := tr.Publish(topic, noGroup); !errors.Is(err, transport.ErrMissingGroupID) {
		t.Errorf("FIFO publish without group: %v, want ErrMissingGroupID", err)
	}
	// Publishing by the SNS name works too.
	if err := tr.Publish(topic+".fifo", newMsg("y", map[string]string{transport.MetadataGroupID: "g"})); err != nil {
		t.Errorf("publish by SNS name: %v", err)
	}
}

// TestHeartbeat holds a message three times its visibility timeout: the
// heartbeat keeps it from a competing consumer, and the ack deletes it.
func TestHeartbeat(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	holder, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	sent := newMsg("long job", nil)
	if err := tr.Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	m := receive(t, holder, "long job")
	other := newTransport(t, testConfig(t))
	competitor, err := other.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	select { // the handler works for 3s, three visibility timeouts
	case c := <-competitor:
		t.Fatalf("competing consumer received %s while the handler still ran", c.UUID)
	case <-time.After(3 * time.Second):
	}
	m.Ack()
	marker := newMsg("marker", nil)
	if err := tr.Publish(topic, marker); err != nil {
		t.Fatal(err)
	}
	// Whatever comes next, to either consumer, must be the marker, not the
	// acked message again.
	var next *message.Message
	select {
	case next = <-competitor:
	case next = <-holder:
	case <-time.After(20 * time.Second):
		t.Fatal("marker not received in 20s")
	}
	if next.UUID != marker.UUID {
		t.Fatalf("after the ack, received %s (%q), want the marker", next.UUID, next.Payload)
	}
	next.Ack()
}

// TestDeadLetterSource checks the dead-lettered message names its queue.
func TestDeadLetterSource(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	q := transport.Queue{Name: queue, Topics: []string{topic}, MaxReceiveCount: 1, VisibilityTimeout: time.Second}
	if err := tr.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := tr.Subscribe(ctx, q.WithDefaults().DeadLetterQueue)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(topic, newMsg("poison", nil)); err != nil {
		t.Fatal(err)
	}
	receive(t, ch, "poison").Nack()
	dead := receive(t, dlq, "dead letter")
	if got := dead.Metadata.Get(transport.MetadataDeadLetterSource); got != queue {
		t.Errorf("%s = %q, want %q", transport.MetadataDeadLetterSource, got, queue)
	}
	dead.Ack()
}

func TestClosed(t *testing.T) {
	tr := newTransport(t, testConfig(t))
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish("t", newMsg("x", nil)); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
	if _, err := tr.Subscribe(testContext(t), "q"); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Subscribe after Close: %v", err)
	}
	if err := tr.Declare(testContext(t), transport.Queue{Name: "q"}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Declare after Close: %v", err)
	}
	if err := tr.Publish("", newMsg("x", nil)); !errors.Is(err, transport.ErrInvalidConfig) {
		t.Errorf("Publish to an empty topic: %v", err)
	}
}

// TestUndecodable sends what eda cannot decode straight to the queue: it is
// delivered raw, marked with MetadataTransportError.
func TestUndecodable(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	queue := uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue}); err != nil {
		t.Fatal(err)
	}
	url, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &queue})
	if err != nil {
		t.Fatal(err)
	}
	for _, attr := range []string{"eda_md", "eda_claimcheck"} {
		_, err := tr.SQS().SendMessage(ctx, &sqs.SendMessageInput{
			QueueUrl:    url.QueueUrl,
			MessageBody: awssdk.String("raw body"),
			MessageAttributes: map[string]sqstypes.MessageAttributeValue{
				attr: {DataType: awssdk.String("String"), StringValue: awssdk.String("{broken")},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m := receive(t, ch, "undecodable")
		if string(m.Payload) != "raw body" || m.Metadata.Get(edaaws.MetadataTransportError) == "" || m.Metadata.Get(transport.MetadataReceiveCount) != "1" {
			t.Errorf("got %q with metadata %v, want the raw body and %s", m.Payload, m.Metadata, edaaws.MetadataTransportError)
		}
		m.Ack()
	}
}

// TestStopReleasesPrefetched stops a subscription that has received a batch
// ahead: the messages its handlers never saw are visible again at once, not
// after the (long) visibility timeout.
func TestStopReleasesPrefetched(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	want := map[string]bool{}
	for i := range 10 {
		m := newMsg(fmt.Sprint(i), nil)
		msgs = append(msgs, m)
		want[m.UUID] = true
	}
	if err := tr.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
	subCtx, stop := context.WithCancel(ctx)
	ch, err := tr.Subscribe(subCtx, queue)
	if err != nil {
		t.Fatal(err)
	}
	first := receive(t, ch, "first")
	first.Ack()
	delete(want, first.UUID)
	stop()
	for range ch {
	}
	// Everything else comes within the test's patience, far below 5 minutes.
	again, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for len(want) > 0 {
		m := receive(t, again, fmt.Sprintf("after stop (%d missing)", len(want)))
		if m.UUID == first.UUID {
			t.Fatal("the acked message came again")
		}
		delete(want, m.UUID)
		m.Ack()
	}
}

// A subscription stopped while its long poll waits on an empty queue: the
// poll runs on, and a message it is then handed is released at once (its
// receiver adopts it), not left invisible until its visibility timeout.
func TestStopDuringLongPollReleases(t *testing.T) {
	ctx := testContext(t)
	var calls callCounter
	cfg := testConfig(t)
	cfg.WaitTime = 20 * time.Second // the stopped poll is still waiting when the message comes
	cfg.AWS.APIOptions = append(cfg.AWS.APIOptions, calls.middleware)
	tr := newTransport(t, cfg)
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}, VisibilityTimeout: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	calls.on.Store(true)
	subCtx, stop := context.WithCancel(ctx)
	ch, err := tr.Subscribe(subCtx, queue)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for calls.get("ReceiveMessage") == 0 { // the long poll is on its way
		if time.Now().After(deadline) {
			t.Fatal("no ReceiveMessage in 10s")
		}
		runtime.Gosched()
	}
	stop()
	for range ch {
	}
	m := newMsg("late", nil)
	if err := tr.Publish(topic, m); err != nil {
		t.Fatal(err)
	}
	again, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	// Within the test's patience (20s), far below 5 minutes.
	if got := receive(t, again, "the message the stopped poll received"); got.UUID != m.UUID {
		t.Fatalf("got %s, want %s", got.UUID, m.UUID)
	}
}

// TestPublishError deletes a topic the transport has resolved: a batch
// publish fails with a *PublishError naming every message, matching
// transport.ErrTopicNotReady; the next Publish checks the topic again.
func TestPublishError(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(topic, newMsg("resolves the topic", nil)); err != nil {
		t.Fatal(err)
	}
	arn := "arn:aws:sns:us-east-1:000000000000:" + topic
	if _, err := tr.SNS().DeleteTopic(ctx, &sns.DeleteTopicInput{TopicArn: &arn}); err != nil {
		t.Fatal(err)
	}
	var msgs []*message.Message
	for i := range 25 {
		msgs = append(msgs, newMsg(fmt.Sprint(i), nil))
	}
	err := tr.Publish(topic, msgs...)
	var pe *edaaws.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, transport.ErrTopicNotReady) {
		t.Fatalf("Publish to a deleted topic: %v, want *PublishError and ErrTopicNotReady", err)
	}
	if pe.Total != 25 || len(pe.Failed) != 25 || pe.Failed[0] != msgs[0].UUID || pe.Failed[24] != msgs[24].UUID {
		t.Errorf("PublishError: %d of %d failed (%v)", len(pe.Failed), pe.Total, pe.Failed)
	}
	// AutoCreate is on and the queue was declared here: the next Publish
	// declares the topic and the queue's subscription again.
	if err := tr.Publish(topic, msgs...); err != nil {
		t.Errorf("Publish after the topic was forgotten: %v", err)
	}
}
