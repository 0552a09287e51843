package outbox

import (
	"context"
	"time"
)

// Store is an outbox table the Relay drains. pgxstore (Postgres) and
// sqlitestore (SQLite) implement it; both pass outboxtest.Run. Writing is
// store specific because it takes the caller's own transaction type.
type Store interface {
	// Claim takes up to limit publishable records, in Seq order, and calls
	// publish with them while they stay claimed (no other Claim, in this
	// process or another, returns them). It then applies the Results
	// publish returned; a record without a Result stays Pending, unchanged.
	//
	// A record is publishable when it is Pending, not waiting for a retry,
	// due (no DeliverAt, or DeliverAt not after now) and, unless it has a
	// DeliverAt, every older record of its ordering key without one is
	// either Published, Discarded or in this same batch (before it). Claim returns the number
	// of records it found: those passed to publish plus those held back
	// because an older record of their key is claimed elsewhere (0: nothing
	// to do).
	Claim(ctx context.Context, limit int, publish func(ctx context.Context, batch []Record) []Result) (int, error)

	// Stats reports the backlog.
	Stats(ctx context.Context) (Stats, error)

	// Failed lists up to limit failed records, oldest first, with their
	// reason (LastError).
	Failed(ctx context.Context, limit int) ([]Record, error)

	// Retry moves failed records back to Pending with zero attempts so the
	// relay publishes them again. It returns how many it moved; records that
	// are not failed are ignored.
	Retry(ctx context.Context, seqs ...int64) (int64, error)

	// Discard moves failed records to Discarded: never published, kept
	// until the retention cleanup, no longer blocking their ordering key.
	Discard(ctx context.Context, seqs ...int64) (int64, error)

	// Cleanup deletes up to limit Published and Discarded records older
	// than before and returns how many it deleted.
	Cleanup(ctx context.Context, before time.Time, limit int) (int64, error)

	// Wakeup returns a channel that receives (coalesced) when new records
	// may have been committed. It may never fire; the relay polls too. The
	// store closes the channel once it has stopped watching, after ctx is
	// done and every resource it used for watching (a connection) is
	// released: the relay's Run waits for that before it returns.
	Wakeup(ctx context.Context) <-chan struct{}
}

// Partition is one of Of disjoint sets of ordering keys, numbered from 0.
// Records without an ordering key belong to every partition.
type Partition struct{ Index, Of int }

// PartitionedStore is a Store that can claim the records of one
// partition. A relay with several workers gives each its own partition, so
// that they never hold back each other's keys: with one shared claim, a
// worker finds most of its batch behind keys another worker holds whenever
// keys repeat within a batch. pgxstore implements it; a Store that does not
// is claimed whole by every worker.
type PartitionedStore interface {
	Store
	// ClaimPartition is Claim restricted to the records of p.
	ClaimPartition(ctx context.Context, p Partition, limit int, publish func(ctx context.Context, batch []Record) []Result) (int, error)
}

// ClaimRequest says what a DueStore claim takes.
type ClaimRequest struct {
	// Limit is the most records the claim takes. Required.
	Limit int
	// Partition, when Of > 0, restricts the claim to one partition of the
	// keys (see PartitionedStore).
	Partition Partition
	// DueBy: records whose DeliverAt is after it are not claimed. Zero
	// means now. A relay whose publisher delays delivery claims ahead by
	// the publisher's Features().MaxDeliveryDelay.
	DueBy time.Time
	// InFlight lists records the caller holds in its own earlier claims,
	// still open, that it publishes before anything this claim returns (a
	// relay claims its next batch while it publishes the current one).
	// They do not hold back later records of their keys: the claim returns
	// those as publishable, and the caller must publish each only after
	// every older record of its key in those claims was published, leaving
	// it without a Result otherwise. A store that ignores InFlight holds
	// such records back as if another relay had claimed the older ones:
	// slower, never out of order.
	InFlight []int64
}

// DueStore is a Store that can claim records due up to a time in the
// future (ClaimRequest.DueBy), so that a relay hands a delayed event to a
// transport that delays it itself before it is due. Both stores implement
// it; finding due records reads an index on the due time, not every
// scheduled record.
type DueStore interface {
	Store
	// ClaimDue is Claim (or ClaimPartition) with req's bounds.
	ClaimDue(ctx context.Context, req ClaimRequest, publish func(ctx context.Context, batch []Record) []Result) (int, error)
}

// Outcome of publishing one record.
type Outcome int

// Outcomes a publish function reports per record.
const (
	// OutcomePublished: the broker acknowledged; the record becomes
	// Published.
	OutcomePublished Outcome = iota + 1
	// OutcomeRetry: a transient failure; the record stays Pending, its
	// attempts count grows and it is not claimed before RetryAt. Later
	// records of its ordering key wait for it.
	OutcomeRetry
	// OutcomeFailed: the record can never be published; it becomes Failed
	// with Err as its reason. Later records of its ordering key wait until
	// it is retried or discarded.
	OutcomeFailed
)

// Result is what happened to one claimed record.
type Result struct {
	Seq     int64
	Outcome Outcome
	Err     string    // reason, for OutcomeRetry and OutcomeFailed
	RetryAt time.Time // for OutcomeRetry
}

// Stats describe an outbox's backlog.
type Stats struct {
	// Pending is the number of records not yet published (including those
	// waiting for a retry).
	Pending int64
	// OldestPending is the creation time of the oldest pending record, zero
	// when none is pending.
	OldestPending time.Time
	// Failed is the number of records in the failed state.
	Failed int64
}

// Lag is how long the oldest pending record has been waiting at now: the
// outbox lag. Zero when nothing is pending.
func (s Stats) Lag(now time.Time) time.Duration {
	if s.OldestPending.IsZero() {
		return 0
	}
	if d := now.Sub(s.OldestPending); d > 0 {
		return d
	}
	return 0
}
