package pgxstore_test

import (
	"context"
	"testing"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/internal/pgtest"
	"github.com/edaproject/eda/outbox/outboxtest"
	"github.com/edaproject/eda/outbox/pgxstore"
)

func newStore(t *testing.T) (*pgxstore.Store, outboxtest.Writer) {
	t.Helper()
	pool := pgtest.Pool(t, 12)
	st, err := pgxstore.New(pool, pgxstore.Config{Schema: pgtest.Schema(t, pool)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	write := func(ctx context.Context, commit bool, enc outbox.Encoder, events ...eda.Event) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := st.Write(ctx, tx, enc, events...); err != nil {
			return err
		}
		if commit {
			return tx.Commit(ctx)
		}
		return tx.Rollback(ctx)
	}
	return st, write
}

func TestStore(t *testing.T) {
	outboxtest.Run(t, outboxtest.Harness{
		New: func(t *testing.T) (outbox.Store, outboxtest.Writer) { return newStore(t) },
	})
}
