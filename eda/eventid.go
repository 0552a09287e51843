package eda

import (
	"crypto/rand"
	"sync/atomic"
	"time"
)

// eventIDs makes event ids: UUIDv7s (RFC 9562), increasing within an App.
//
// It does what github.com/google/uuid's NewV7 does (48 bits of Unix
// milliseconds, then 12 bits of the sub-millisecond time as a sequence
// that a call in the same tick bumps, then random bits), without its
// allocation: NewV7 reads its random bits through an io.Reader, which puts
// them on the heap, one allocation per event; crypto/rand.Read into an
// array does not. The last timestamp is the App's, not a package-level
// one: ids of two Apps in one process are unique (62 random bits) but not
// ordered between them.
type eventIDs struct {
	last atomic.Int64 // milliseconds<<12 | sequence of the last id
}

// next returns a new id for the time now.
func (g *eventIDs) next(now time.Time) (id [16]byte) {
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	nano := now.UnixNano()
	milli := nano / int64(time.Millisecond)
	t := milli<<12 | (nano-milli*int64(time.Millisecond))>>8 // the sequence is below 3907
	for {
		last := g.last.Load()
		u := max(t, last+1)
		if g.last.CompareAndSwap(last, u) {
			t = u
			break
		}
	}
	milli, seq := t>>12, t&0xfff
	id[0], id[1], id[2], id[3], id[4], id[5] = byte(milli>>40), byte(milli>>32), byte(milli>>24), byte(milli>>16), byte(milli>>8), byte(milli)
	id[6] = 0x70 | byte(seq>>8) // version 7
	id[7] = byte(seq)
	id[8] = 0x80 | id[8]&0x3f // variant 10
	return id
}
