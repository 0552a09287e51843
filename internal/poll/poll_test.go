package poll_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/edaproject/eda/internal/poll"
)

func TestUntil(t *testing.T) {
	var n atomic.Int32
	if !poll.Until(time.Second, func() bool { return n.Add(1) == 3 }) {
		t.Fatal("condition true on the third check not seen")
	}
	start := time.Now()
	if poll.Until(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds reported as held")
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Fatalf("gave up after %s, want about 50ms", d)
	}
}
