package ops

import (
	"context"
	"fmt"

	"github.com/edaproject/eda/outbox"
)

// FailedLister is the part of outbox.Store OutboxAll reads.
type FailedLister interface {
	Failed(ctx context.Context, limit int) ([]outbox.Record, error)
}

// OutboxAll applies op (a store's Retry or Discard) to every failed record
// of store, 1000 at a time, and returns how many it changed. It stops when
// no failed record is left, or when a batch changes none (someone else is
// acting on them).
func OutboxAll(ctx context.Context, store FailedLister, op func(ctx context.Context, seqs ...int64) (int64, error)) (int64, error) {
	var n int64
	for {
		recs, err := store.Failed(ctx, 1000)
		if err != nil {
			return n, err
		}
		if len(recs) == 0 {
			return n, nil
		}
		batch := make([]int64, len(recs))
		for i, r := range recs {
			batch[i] = r.Seq
		}
		m, err := op(ctx, batch...)
		n += m
		if err != nil {
			return n, fmt.Errorf("%d record(s) done, then: %w", n, err)
		}
		if m == 0 {
			return n, nil
		}
	}
}
