package aws_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/transport"
)

// A consumer that handles one message at a time acks a received batch in
// one DeleteMessageBatch, not one call per message (the acker waits a
// little for the acks of the messages still out).
func TestSequentialAcksShareADelete(t *testing.T) {
	ctx := testContext(t)
	var calls callCounter
	cfg := testConfig(t)
	cfg.Concurrency, cfg.BatchSize = 1, 10
	cfg.AWS.APIOptions = append(cfg.AWS.APIOptions, calls.middleware)
	tr := newTransport(t, cfg)
	topic, queue := uniq("acks"), uniq("acks")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	out, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &queue})
	if err != nil {
		t.Fatal(err)
	}
	url := *out.QueueUrl
	t.Cleanup(func() { _, _ = tr.SQS().DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: &url}) })
	const n = 10
	for i := range n {
		if err := tr.Publish(topic, newMsg(`{"n":`+strconv.Itoa(i)+`}`, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// All ten in the queue first, so that one receive takes them.
	waitQueue(t, tr.SQS(), url, func(visible, inFlight int) bool { return visible == n })

	calls.on.Store(true)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := tr.Subscribe(subCtx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := receive(t, ch, "message "+strconv.Itoa(i))
		time.Sleep(2 * time.Millisecond) // a handler's work: longer than nothing
		m.Ack()
	}
	waitQueue(t, tr.SQS(), url, func(visible, inFlight int) bool { return visible == 0 && inFlight == 0 })
	calls.on.Store(false)
	// One call unless the machine stalls for longer than the acker waits;
	// one call per ack (ten) is what this guards against.
	if got := calls.get("DeleteMessageBatch"); got < 1 || got > 3 {
		t.Errorf("%d DeleteMessageBatch calls for %d acks handled one at a time, want 1 (at most 3)", got, n)
	}
}

// waitQueue polls the queue's approximate counts until done says so.
func waitQueue(t *testing.T, client *sqs.Client, url string, done func(visible, inFlight int) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		out, err := client.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: &url,
			AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
		if err != nil {
			t.Fatal(err)
		}
		visible, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
		inFlight, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
		if done(visible, inFlight) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue: %d visible, %d in flight after 20s", visible, inFlight)
		}
		<-tick.C
	}
}
