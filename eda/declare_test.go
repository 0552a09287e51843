package eda_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// A service started while its broker is unreachable waits for it: Run
// declares again until the broker answers, then runs, instead of returning
// the first ErrUnavailable (the fault harness saw a consumer exit at start
// because an emulator restart reset one ListSubscriptionsByTopic). Here the
// transport's endpoint is a port nobody listens on until a proxy to the
// emulator opens there.
func TestRunWaitsForUnavailableBroker(t *testing.T) {
	emulator := os.Getenv("EDA_AWS_ENDPOINT")
	if emulator == "" {
		emulator = "http://127.0.0.1:4566"
	}
	if resp, err := http.Get(emulator + "/health"); err != nil {
		t.Fatalf("SNS/SQS emulator not reachable at %s: %v; start it with: scripts/emulator.sh up", emulator, err)
	} else {
		resp.Body.Close()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused

	tr, err := edaaws.New(edaaws.Config{
		AWS:      awssdk.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""), RetryMaxAttempts: 1},
		Endpoint: "http://" + addr, AutoCreate: true, AccountID: "000000000000", WaitTime: time.Second,
	}.ForFauxqs())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	logs := &syncBuffer{}
	app, err := eda.New(eda.Config{Transport: tr, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	name := "declare-wait-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	if err := eda.Register[placedEvent](app, name); err != nil {
		t.Fatal(err)
	}
	if err := app.DeclareQueue(eda.QueueConfig{Queue: transport.Queue{Name: name}}); err != nil {
		t.Fatal(err)
	}
	if err := eda.Handle(app, name, func(context.Context, placedEvent) error { return nil }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- app.Run(ctx) }()

	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(logs.String(), "broker unavailable while declaring") < 2 {
		select {
		case err := <-runErr:
			t.Fatalf("Run returned while the broker was unreachable: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run did not retry its declaration; logs:\n%s", logs)
		}
	}
	stop := forward(t, addr, strings.TrimPrefix(emulator, "http://"))
	defer stop()
	select {
	case <-app.Running():
	case err := <-runErr:
		t.Fatalf("Run returned %v once the broker was back, want it running", err)
	case <-ctx.Done():
		t.Fatal("Run did not start once the broker was back")
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Remove the test's queue and topic from the shared emulator.
	rm := context.Background()
	if u, err := tr.SQS().GetQueueUrl(rm, &sqs.GetQueueUrlInput{QueueName: &name}); err == nil {
		_, _ = tr.SQS().DeleteQueue(rm, &sqs.DeleteQueueInput{QueueUrl: u.QueueUrl})
	}
	_, _ = tr.SNS().DeleteTopic(rm, &sns.DeleteTopicInput{TopicArn: awssdk.String("arn:aws:sns:us-east-1:000000000000:" + name)})
}

type placedEvent struct {
	ID string `json:"id"`
}

func (placedEvent) EventName() string { return "test.DeclareWait" }

// forward forwards TCP connections on addr to target until stop.
func forward(t *testing.T, addr, target string) (stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return func() { ln.Close(); wg.Wait() }
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
