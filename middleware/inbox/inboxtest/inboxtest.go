package inboxtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edaproject/eda/middleware/inbox"
)

// Run runs the suite. newStore returns an empty store (its own schema, for
// a database); it is called once per subtest.
func Run(t *testing.T, newStore func(t *testing.T) inbox.Store) {
	ctx := context.Background()
	key := func(n int) inbox.Key { return inbox.Key{Consumer: "billing", EventID: fmt.Sprintf("evt-%d", n)} }

	t.Run("ClaimCompleteThenDone", func(t *testing.T) {
		s := newStore(t)
		c := claim(t, s, key(1), time.Hour, inbox.Acquired)
		claim(t, s, key(1), time.Hour, inbox.Busy)
		if err := s.Complete(ctx, key(1), c.Token); err != nil {
			t.Fatal(err)
		}
		claim(t, s, key(1), time.Hour, inbox.Done)
		claim(t, s, key(2), time.Hour, inbox.Acquired)
	})

	t.Run("ReleaseLetsTheNextDeliveryRun", func(t *testing.T) {
		s := newStore(t)
		c := claim(t, s, key(1), time.Hour, inbox.Acquired)
		if err := s.Release(ctx, key(1), c.Token); err != nil {
			t.Fatal(err)
		}
		c2 := claim(t, s, key(1), time.Hour, inbox.Acquired)
		if c2.Token == c.Token {
			t.Error("a new claim reuses the released token")
		}
		// Completing with the released token is refused.
		if err := s.Complete(ctx, key(1), c.Token); !errors.Is(err, inbox.ErrLeaseLost) {
			t.Errorf("Complete with a released token: %v, want ErrLeaseLost", err)
		}
	})

	t.Run("ConsumersAreIndependent", func(t *testing.T) {
		s := newStore(t)
		c := claim(t, s, key(1), time.Hour, inbox.Acquired)
		if err := s.Complete(ctx, key(1), c.Token); err != nil {
			t.Fatal(err)
		}
		claim(t, s, inbox.Key{Consumer: "shipping", EventID: key(1).EventID}, time.Hour, inbox.Acquired)
	})

	t.Run("ExpiredLeaseIsTakenOver", func(t *testing.T) {
		s := newStore(t)
		old := claim(t, s, key(1), 50*time.Millisecond, inbox.Acquired)
		var taken inbox.Claim
		eventually(t, "the expired lease taken over", func() bool {
			c, err := s.Claim(ctx, key(1), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			taken = c
			return c.State == inbox.Acquired
		})
		if err := s.Complete(ctx, key(1), old.Token); !errors.Is(err, inbox.ErrLeaseLost) {
			t.Errorf("Complete by the old holder: %v, want ErrLeaseLost", err)
		}
		if err := s.Release(ctx, key(1), old.Token); err != nil {
			t.Errorf("Release by the old holder: %v, want nil (ignored)", err)
		}
		claim(t, s, key(1), time.Hour, inbox.Busy) // the old holder did not drop the new claim
		if err := s.Complete(ctx, key(1), taken.Token); err != nil {
			t.Fatal(err)
		}
		claim(t, s, key(1), time.Hour, inbox.Done)
	})

	t.Run("ConcurrentClaimsOneWins", func(t *testing.T) {
		s := newStore(t)
		const n = 16
		var wg sync.WaitGroup
		states := make([]inbox.State, n)
		errs := make([]error, n)
		startc := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-startc
				c, err := s.Claim(ctx, key(7), time.Hour)
				states[i], errs[i] = c.State, err
			})
		}
		close(startc)
		wg.Wait()
		acquired := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("claim %d: %v", i, errs[i])
			}
			switch states[i] {
			case inbox.Acquired:
				acquired++
			case inbox.Busy:
			default:
				t.Errorf("claim %d: %v", i, states[i])
			}
		}
		if acquired != 1 {
			t.Errorf("%d concurrent claims acquired, want 1", acquired)
		}
	})

	t.Run("ExpireDeletesOldMarksOnly", func(t *testing.T) {
		s := newStore(t)
		done := claim(t, s, key(1), time.Hour, inbox.Acquired)
		if err := s.Complete(ctx, key(1), done.Token); err != nil {
			t.Fatal(err)
		}
		claim(t, s, key(2), 10*time.Hour, inbox.Acquired) // a live claim
		n, err := s.Expire(ctx, time.Now().Add(-time.Hour))
		if err != nil || n != 0 {
			t.Fatalf("Expire(an hour ago) = %d, %v; want 0 (nothing that old)", n, err)
		}
		claim(t, s, key(1), time.Hour, inbox.Done)
		n, err = s.Expire(ctx, time.Now().Add(time.Hour))
		if err != nil || n != 1 {
			t.Fatalf("Expire(in an hour) = %d, %v; want 1 (the done mark, not the live claim)", n, err)
		}
		claim(t, s, key(1), time.Hour, inbox.Acquired)
		claim(t, s, key(2), time.Hour, inbox.Busy)
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []inbox.Key{{}, {Consumer: "c"}, {EventID: "e"}, {Consumer: " ", EventID: "e"}} {
			if _, err := s.Claim(ctx, k, time.Hour); !errors.Is(err, inbox.ErrInvalidKey) {
				t.Errorf("Claim(%+v): %v, want ErrInvalidKey", k, err)
			}
			if err := s.Complete(ctx, k, "t"); !errors.Is(err, inbox.ErrInvalidKey) {
				t.Errorf("Complete(%+v): %v, want ErrInvalidKey", k, err)
			}
			if err := s.Release(ctx, k, "t"); !errors.Is(err, inbox.ErrInvalidKey) {
				t.Errorf("Release(%+v): %v, want ErrInvalidKey", k, err)
			}
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Claim(cctx, key(1), time.Hour); !errors.Is(err, context.Canceled) {
			t.Errorf("Claim with a cancelled context: %v", err)
		}
		claim(t, s, key(1), time.Hour, inbox.Acquired) // nothing was recorded
	})
}

func claim(t *testing.T, s inbox.Store, k inbox.Key, lease time.Duration, want inbox.State) inbox.Claim {
	t.Helper()
	c, err := s.Claim(context.Background(), k, lease)
	if err != nil {
		t.Fatalf("Claim(%+v): %v", k, err)
	}
	if c.State != want {
		t.Fatalf("Claim(%+v) = %v, want %v", k, c.State, want)
	}
	if (c.Token != "") != (want == inbox.Acquired) {
		t.Fatalf("Claim(%+v) = %v with token %q", k, c.State, c.Token)
	}
	return c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}
