package aws_test

import (
	"testing"
	"time"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/transporttest"
)

// harnessTimeout is longer than the suite's default visibility timeout
// (30s): a ReceiveMessage response lost between fauxqs and the SDK (seen
// about once in a hundred receives of large messages; the SDK retries) leaves
// its messages in flight until then, and the suite must still see them.
const harnessTimeout = 45 * time.Second

func TestConformance(t *testing.T) {
	requireEmulator(t)
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			tr, err := edaaws.New(testConfig(t))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return tr
		},
		Timeout: harnessTimeout,
	})
}

// TestConformanceConcurrent runs the suite with several messages out at once
// per subscription and small receive batches.
func TestConformanceConcurrent(t *testing.T) {
	requireEmulator(t)
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			cfg := testConfig(t)
			cfg.Concurrency, cfg.BatchSize = 4, 3
			tr, err := edaaws.New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return tr
		},
		Timeout: harnessTimeout,
	})
}
