package memory_test

import (
	"testing"

	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/memory"
	"github.com/edaproject/eda/transport/transporttest"
)

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			tr, err := memory.New(memory.Config{})
			if err != nil {
				t.Fatal(err)
			}
			return tr
		},
	})
}
