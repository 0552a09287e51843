//go:build outage

package middleware_test

import (
	"context"
	"testing"
	"time"

	"github.com/edaproject/eda/middleware"
)

// The claim of the default schedule, in full: a 2-minute outage on the
// Postgres transport with the orders example's settings loses nothing.
// About 3 minutes, so it is built only with the tag outage: `make outage`.
func TestRedeliveryOutageFull(t *testing.T) {
	e := newPGEnv(t)
	depth := func(q string) int { v, f, _ := e.tr.Depth(context.Background(), q); return v + f }
	outage(t, e.tr, depth, &middleware.RedeliveryConfig{}, 2*time.Minute, 50, 6*time.Minute)
}
