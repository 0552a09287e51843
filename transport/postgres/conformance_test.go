package postgres_test

import (
	"testing"
	"time"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
	"github.com/edaproject/eda/transport/transporttest"
)

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			return newTransport(t, postgres.Config{})
		},
		Timeout: 30 * time.Second,
	})
}

func TestConformancePollingOnly(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			return newTransport(t, postgres.Config{DisableNotify: true, PollInterval: 50 * time.Millisecond, BatchSize: 1})
		},
		Timeout: 30 * time.Second,
	})
}
