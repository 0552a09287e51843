package middleware_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// These tests run retry and poison — and the alternative, the SQS redrive
// dead-letter queue — on the AWS transport against the fauxqs SNS/SQS
// emulator at EDA_AWS_ENDPOINT (default http://127.0.0.1:4566).

func awsTransport(t *testing.T) *edaaws.Transport {
	t.Helper()
	ep := os.Getenv("EDA_AWS_ENDPOINT")
	if ep == "" {
		ep = "http://127.0.0.1:4566"
	}
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(ep + "/health")
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("SNS/SQS emulator not reachable at %s (EDA_AWS_ENDPOINT): %v; start it with: scripts/emulator.sh up", ep, err)
	}
	tr, err := edaaws.New(edaaws.Config{
		AWS: awssdk.Config{
			Region:      "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		},
		Endpoint:   ep,
		AutoCreate: true,
		AccountID:  "000000000000",
		WaitTime:   time.Second,
	}.ForFauxqs())
	must(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// unique returns name with a random suffix: the emulator outlives tests.
func unique(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("mw-%s-%x", name, b)
}

// sqsDepth returns the visible and in-flight messages of queue.
func sqsDepth(t *testing.T, tr *edaaws.Transport, queue string) (int, int) {
	ctx := context.Background()
	url, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &queue})
	must(t, err)
	out, err := tr.SQS().GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: url.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	must(t, err)
	v, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	f, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return v, f
}

func TestAWSRetryThenPoison(t *testing.T) {
	tr := awsTransport(t)
	topic, queue, pTopic, pQueue := unique("placed"), unique("q"), unique("poison"), unique("poison-q")
	poisoned := subscribe(t, tr, pQueue, pTopic)
	pub, err := middleware.NewPublisher(tr, middleware.TracingConfig{})
	must(t, err)
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond},
		Poison: &middleware.PoisonConfig{Publisher: tr, Topic: pTopic, MaxDeliveries: 2},
	})
	must(t, err)
	app, err := eda.New(eda.Config{Transport: tr, Publisher: pub, Middleware: stack, CloseTimeout: 10 * time.Second})
	must(t, err)
	must(t, eda.Register[placed](app, topic))
	c := newCalls()
	must(t, eda.Handle(app, queue, func(ctx context.Context, e placed) error { return c.add(ctx, errFlaky) }))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	msg := receive(t, poisoned)
	md := msg.Metadata
	if md.Get(middleware.MetadataPoisonReason) != "retries_exhausted" || md.Get(middleware.MetadataPoisonDeliveries) != "2" ||
		md.Get(middleware.MetadataPoisonAttempts) != "2" || md.Get(middleware.MetadataPoisonQueue) != queue ||
		md.Get(middleware.MetadataPoisonTopic) != topic || md.Get(eda.MetadataType) != "test.Placed" {
		t.Errorf("poison metadata %v", md)
	}
	var counts []string
	for _, cl := range c.all() {
		counts = append(counts, cl.ReceiveCount)
	}
	if fmt.Sprint(counts) != "[1 1 2 2]" {
		t.Errorf("receive counts of calls %v, want [1 1 2 2]", counts)
	}
	eventually(t, "original deleted", func() bool { v, f := sqsDepth(t, tr, queue); return v == 0 && f == 0 })
}

// TestAWSRedriveInsteadOfPoison: with MaxDeliveries -1 transient failures
// are left to the queue's redrive policy, which moves the message to the
// DLQ after MaxReceiveCount receives; permanent errors are still poisoned.
func TestAWSRedriveInsteadOfPoison(t *testing.T) {
	tr := awsTransport(t)
	topic, queue, pTopic, pQueue := unique("placed"), unique("q"), unique("poison"), unique("poison-q")
	poisoned := subscribe(t, tr, pQueue, pTopic)
	stack, err := middleware.Default(middleware.Config{
		Retry:  middleware.RetryConfig{MaxAttempts: 1},
		Poison: &middleware.PoisonConfig{Publisher: tr, Topic: pTopic, MaxDeliveries: -1},
	})
	must(t, err)
	app, err := eda.New(eda.Config{Transport: tr, Middleware: stack, CloseTimeout: 10 * time.Second})
	must(t, err)
	must(t, eda.Register[placed](app, topic))
	must(t, app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: queue, MaxReceiveCount: 2, VisibilityTimeout: 5 * time.Second}}))
	c := newCalls()
	must(t, eda.Handle(app, queue, func(ctx context.Context, e placed) error {
		if e.ID == "bad" {
			return c.add(ctx, eda.Permanent(errFlaky))
		}
		return c.add(ctx, errFlaky)
	}))
	start(t, app)
	dlq, err := tr.Subscribe(t.Context(), queue+"-dlq")
	must(t, err)
	must(t, app.Publish(context.Background(), placed{ID: "flaky"}))
	dead := receive(t, dlq)
	if string(dead.Payload) != `{"id":"flaky"}` {
		t.Errorf("dead-lettered %s %v", dead.Payload, dead.Metadata)
	}
	must(t, app.Publish(context.Background(), placed{ID: "bad"}))
	p := receive(t, poisoned)
	if string(p.Payload) != `{"id":"bad"}` || p.Metadata.Get(middleware.MetadataPoisonReason) != "permanent" {
		t.Errorf("poisoned %s %v", p.Payload, p.Metadata)
	}
	select {
	case m := <-poisoned:
		t.Errorf("a transient failure was poisoned: %s", m.Payload)
	default:
	}
}
