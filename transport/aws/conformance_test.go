package aws_test

import (
	"testing"
	"time"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
	"github.com/edaproject/eda/transport/transporttest"
)

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
		Timeout: 30 * time.Second,
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
		Timeout: 30 * time.Second,
	})
}
