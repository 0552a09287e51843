package eda

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Event ids are UUIDv7s whose time is the given one, increasing within an
// App even when many are made in one clock tick from many goroutines.
func TestEventIDs(t *testing.T) {
	var g eventIDs
	now := time.Date(2026, 12, 2, 1, 0, 0, 123456789, time.UTC)
	const goroutines, each = 8, 2000
	ids := make([][][16]byte, goroutines)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			for range each {
				ids[i] = append(ids[i], g.next(now)) // the same instant every time
			}
		})
	}
	wg.Wait()
	seen := map[[16]byte]bool{}
	for _, list := range ids {
		for j, id := range list {
			u := uuid.UUID(id)
			if u.Version() != 7 || u.Variant() != uuid.RFC4122 {
				t.Fatalf("id %s: version %d, variant %v; want 7, RFC 4122", u, u.Version(), u.Variant())
			}
			if got := int64(id[0])<<40 | int64(id[1])<<32 | int64(id[2])<<24 | int64(id[3])<<16 | int64(id[4])<<8 | int64(id[5]); got < now.UnixMilli() || got > now.UnixMilli()+10 {
				t.Fatalf("id %s: %d ms, want about %d (its time)", u, got, now.UnixMilli())
			}
			if j > 0 && bytes.Compare(list[j-1][:8], id[:8]) >= 0 {
				t.Fatalf("ids of one goroutine not increasing: %s then %s", uuid.UUID(list[j-1]), u)
			}
			if seen[id] {
				t.Fatalf("id %s made twice", u)
			}
			seen[id] = true
		}
	}
	// Later ids after an earlier clock (a step back) still increase.
	last := g.next(now)
	if next := g.next(now.Add(-time.Second)); bytes.Compare(last[:8], next[:8]) >= 0 {
		t.Errorf("id after a clock step back: %s then %s", uuid.UUID(last), uuid.UUID(next))
	}
}
