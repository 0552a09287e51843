package aws_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// Ping answers on the emulator, before and after a queue is declared, and
// is ErrUnavailable within about PingTimeout on a closed port.
func TestPing(t *testing.T) {
	ctx := context.Background()
	tr, err := edaaws.New(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Ping(ctx); err != nil {
		t.Fatalf("Ping before any queue: %v", err)
	}
	q := transport.Queue{Name: uniq("ping")}
	if err := tr.Declare(ctx, q); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if out, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &q.Name}); err == nil {
			_, _ = tr.SQS().DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: out.QueueUrl})
		}
	})
	if err := tr.Ping(ctx); err != nil {
		t.Fatalf("Ping with a queue: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	cfg := testConfig(t)
	cfg.Endpoint = closed
	down, err := edaaws.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	start := time.Now()
	if err := down.Ping(ctx); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("Ping on a closed port: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > edaaws.PingTimeout+time.Second {
		t.Errorf("Ping on a closed port took %s", d)
	}
	if _, err := tr.QueueDepth(ctx, uniq("missing")); !errors.Is(err, transport.ErrUnknownQueue) {
		t.Errorf("QueueDepth of a missing queue: %v", err)
	}
}

func TestDepthFromAttributes(t *testing.T) {
	d := edaaws.DepthFromAttributes(map[string]string{
		"ApproximateNumberOfMessages": "7", "ApproximateNumberOfMessagesNotVisible": "2",
		"ApproximateNumberOfMessagesDelayed": "1", "QueueArn": "x",
	})
	if d != (transport.Depth{Visible: 7, InFlight: 2, Delayed: 1}) {
		t.Fatalf("DepthFromAttributes = %+v", d)
	}
	if d := edaaws.DepthFromAttributes(map[string]string{"ApproximateNumberOfMessages": "x"}); d != (transport.Depth{}) {
		t.Fatalf("malformed: %+v", d)
	}
}
