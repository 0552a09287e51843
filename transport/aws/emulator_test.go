package aws_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go/logging"

	edaaws "github.com/edaproject/eda/transport/aws"
)

// The tests run against the fauxqs SNS/SQS emulator (scripts/emulator.sh).
const defaultEndpoint = "http://127.0.0.1:4566"

func endpoint() string {
	if e := os.Getenv("EDA_AWS_ENDPOINT"); e != "" {
		return e
	}
	return defaultEndpoint
}

var (
	checkOnce sync.Once
	checkErr  error
)

// requireEmulator fails the test when the emulator does not answer.
func requireEmulator(t testing.TB) string {
	t.Helper()
	ep := endpoint()
	checkOnce.Do(func() {
		client := http.Client{Timeout: 3 * time.Second}
		resp, err := client.Get(ep + "/health")
		if err != nil {
			checkErr = err
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			checkErr = &statusError{resp.Status}
		}
	})
	if checkErr != nil {
		t.Fatalf("SNS/SQS emulator not reachable at %s (EDA_AWS_ENDPOINT): %v; start it with: scripts/emulator.sh up", ep, checkErr)
	}
	return ep
}

type statusError struct{ status string }

func (e *statusError) Error() string { return "health check: " + e.status }

// awsConfig is an SDK config for the emulator: any credentials do.
func awsConfig() awssdk.Config {
	return awssdk.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
	}
}

// testConfig returns a Config on the emulator with AutoCreate on.
func testConfig(t testing.TB) edaaws.Config {
	cfg := edaaws.Config{
		AWS:        awsConfig(),
		Endpoint:   requireEmulator(t),
		AutoCreate: true,
		AccountID:  "000000000000",
	}.ForFauxqs()
	if os.Getenv("EDA_TEST_LOG") != "" { // the transport's logs and the SDK's retries on stderr
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		cfg.AWS.ClientLogMode = awssdk.LogRetries

		cfg.AWS.Logger = logging.NewStandardLogger(os.Stderr)
	}
	return cfg
}

func newTransport(t testing.TB, cfg edaaws.Config) *edaaws.Transport {
	t.Helper()
	tr, err := edaaws.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
