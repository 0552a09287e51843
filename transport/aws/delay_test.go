package aws_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// rawMessage is an SQS message as it sits in the queue.
type rawMessage struct {
	body  string
	attrs map[string]string
}

// TestDelayedDeliveryLooksLikeSNS publishes one message through SNS and the
// same message delayed (sent to the queues directly): every subscribed
// queue holds both, byte for byte the same, and neither carries the
// deliver-at.
func TestDelayedDeliveryLooksLikeSNS(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, q1, q2 := uniq("topic"), uniq("queue"), uniq("queue")
	for _, q := range []string{q1, q2} {
		if err := tr.Declare(ctx, transport.Queue{Name: q, Topics: []string{topic}}); err != nil {
			t.Fatal(err)
		}
	}
	md := map[string]string{"ce_type": "orders.Placed", "ce_source": "test", "x-extra": "in the JSON attribute"}
	now, later := newMsg("same payload", md), newMsg("same payload", md)
	later.UUID = now.UUID // the same message twice: the same wire form expected
	later.Metadata.Set(transport.MetadataEventID, now.UUID)
	deliverAt := time.Now().Add(1500 * time.Millisecond)
	transport.SetDeliverAt(later, deliverAt)
	if err := tr.Publish(topic, later, now); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{q1, q2} {
		url, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &q})
		if err != nil {
			t.Fatal(err)
		}
		var got []rawMessage
		var lastAt time.Time
		for deadline := time.Now().Add(20 * time.Second); len(got) < 2 && time.Now().Before(deadline); {
			out, err := tr.SQS().ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
				QueueUrl: url.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 2, MessageAttributeNames: []string{"All"},
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range out.Messages {
				r := rawMessage{body: awssdk.ToString(m.Body), attrs: map[string]string{}}
				for k, v := range m.MessageAttributes {
					r.attrs[k] = awssdk.ToString(v.DataType) + ":" + awssdk.ToString(v.StringValue)
				}
				got = append(got, r)
				lastAt = time.Now()
				if _, err := tr.SQS().DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: url.QueueUrl, ReceiptHandle: m.ReceiptHandle}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(got) != 2 {
			t.Fatalf("queue %s holds %d messages, want the message from SNS and the delayed one", q, len(got))
		}
		if lastAt.Before(deliverAt) {
			t.Errorf("queue %s: both messages received %s before the deliver-at", q, deliverAt.Sub(lastAt))
		}
		a, b := got[0], got[1]
		if a.body != b.body || len(a.attrs) != len(b.attrs) {
			t.Errorf("queue %s: via SNS %+v, sent delayed %+v: want the same", q, a, b)
		}
		for k, v := range a.attrs {
			if b.attrs[k] != v {
				t.Errorf("queue %s: attribute %s: %q and %q, want the same", q, k, v, b.attrs[k])
			}
		}
		for _, r := range got {
			for k, v := range r.attrs {
				if strings.Contains(k, transport.MetadataDeliverAt) || strings.Contains(v, transport.MetadataDeliverAt) {
					t.Errorf("queue %s: attribute %s=%q carries the deliver-at", q, k, v)
				}
			}
		}
	}
}

// TestDelayUnsupported: where sending to the queues directly would differ
// from SNS (a FIFO topic, a filter policy), a delayed message fails the
// whole call with ErrDelayUnsupported and nothing is sent; a deliver-at in
// the past is no delay.
func TestDelayUnsupported(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	fifoTopic, fifoQueue := uniq("topic"), uniq("queue")
	filtered, filteredQueue := uniq("topic"), uniq("queue")
	if _, err := tr.Apply(ctx, edaaws.Topology{Queues: []edaaws.Queue{
		{Queue: transport.Queue{Name: fifoQueue, Topics: []string{fifoTopic}, FIFO: true}},
		{Queue: transport.Queue{Name: filteredQueue, Topics: []string{filtered}}, FilterPolicies: map[string]string{filtered: `{"ce_type":["wanted"]}`}},
	}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, topic, queue string
		md                 map[string]string
	}{
		{"FIFO topic", fifoTopic, fifoQueue, map[string]string{transport.MetadataGroupID: "g"}},
		{"filter policy", filtered, filteredQueue, map[string]string{"ce_type": "wanted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fine, delayed := newMsg("fine", tc.md), newMsg("delayed", tc.md)
			transport.SetDeliverAt(delayed, time.Now().Add(10*time.Second))
			if err := tr.Publish(tc.topic, fine, delayed); !errors.Is(err, transport.ErrDelayUnsupported) {
				t.Fatalf("Publish: %v, want ErrDelayUnsupported", err)
			}
			past := newMsg("marker, due already", tc.md)
			transport.SetDeliverAt(past, time.Now().Add(-time.Minute))
			if err := tr.Publish(tc.topic, past); err != nil {
				t.Fatalf("Publish with a deliver-at in the past: %v", err)
			}
			ch, err := tr.Subscribe(ctx, tc.queue)
			if err != nil {
				t.Fatal(err)
			}
			m := receive(t, ch, "marker")
			if string(m.Payload) != "marker, due already" {
				t.Fatalf("received %q first: the refused Publish sent it", m.Payload)
			}
			if _, ok := m.Metadata[transport.MetadataDeliverAt]; ok {
				t.Errorf("delivered with %s", transport.MetadataDeliverAt)
			}
			m.Ack()
		})
	}
}
