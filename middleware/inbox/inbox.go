package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
)

// Errors of this package. Match with errors.Is.
var (
	// ErrInvalidConfig is eda.ErrInvalidConfig: a config is invalid.
	ErrInvalidConfig = eda.ErrInvalidConfig
	// ErrInvalidKey: a consumer name or event id is empty.
	ErrInvalidKey = errors.New("inbox: empty consumer or event id")
	// ErrNoEventID: a message has no event id (eda.MetadataID) to key on.
	// Permanent: the message will never have one.
	ErrNoEventID = errors.New("inbox: message has no event id")
	// ErrBusy: another delivery of the event holds a live claim. Transient:
	// retry later, by when it is done or its lease has expired.
	ErrBusy = errors.New("inbox: event is being processed by another delivery")
	// ErrLeaseLost: a claim expired and was taken over before Complete or
	// Release; the other holder decides.
	ErrLeaseLost = errors.New("inbox: claim lease lost")
	// ErrStore wraps an error of the store (database unreachable...).
	ErrStore = errors.New("inbox: store failed")
)

// Key identifies one event for one consumer.
type Key struct {
	// Consumer is the name of the consuming handler or service: each
	// consumer processes each event once.
	Consumer string
	// EventID is the event's id (eda.MetadataID).
	EventID string
}

// Validate reports whether both parts are set.
func (k Key) Validate() error {
	if strings.TrimSpace(k.Consumer) == "" || k.EventID == "" {
		return fmt.Errorf("%w: %+v", ErrInvalidKey, k)
	}
	return nil
}

// State is the outcome of a claim.
type State int

// States of Claim.
const (
	// Acquired: the caller holds the claim and runs the handler.
	Acquired State = iota + 1
	// Done: the event was processed; skip it.
	Done
	// Busy: another delivery holds a live claim; try later.
	Busy
)

func (s State) String() string {
	switch s {
	case Acquired:
		return "acquired"
	case Done:
		return "done"
	case Busy:
		return "busy"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Claim is the result of Store.Claim.
type Claim struct {
	State State
	// Token identifies an Acquired claim in Complete and Release, so that a
	// holder whose lease expired cannot settle its successor's claim.
	Token string
}

// Store records claims and done marks. Implementations are safe for
// concurrent use by many processes sharing the store; inboxtest.Run is the
// suite every Store passes.
type Store interface {
	// Claim acquires key for lease unless it is done or claimed by a live
	// lease (an expired one is taken over).
	Claim(ctx context.Context, key Key, lease time.Duration) (Claim, error)
	// Complete marks key done. It fails with ErrLeaseLost when token no
	// longer holds the claim.
	Complete(ctx context.Context, key Key, token string) error
	// Release drops the claim so a redelivery runs again. A token that no
	// longer holds the claim is ignored.
	Release(ctx context.Context, key Key, token string) error
	// Expire deletes the done marks completed before before, and the claims
	// whose lease ended before it, and returns how many it deleted.
	Expire(ctx context.Context, before time.Time) (int64, error)
}

// Defaults of Config.
const (
	DefaultLease         = time.Minute
	DefaultReleaseBudget = 5 * time.Second
)

// Config configures New.
type Config struct {
	// Store keeps claims and marks. Required.
	Store Store
	// Consumer names the consumer in every key. Default: the queue the
	// message was received from, so the competing consumers of a queue
	// share marks and different queues (services) do not.
	Consumer string
	// Lease is how long a claim holds before another delivery may take the
	// event over. Make it longer than a handler call can last (see
	// middleware.Timeout), retries included when the inbox is outside
	// Retry. Default DefaultLease.
	Lease time.Duration
	// Logger receives a record per skipped duplicate. Nil discards.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, fmt.Errorf("%w: inbox: Store is nil", ErrInvalidConfig))
	}
	if c.Lease < 0 {
		errs = append(errs, fmt.Errorf("%w: inbox: negative Lease %s", ErrInvalidConfig, c.Lease))
	}
	return errors.Join(errs...)
}

// New returns the standalone idempotency middleware. For each message it
// claims (consumer, event id) in the store, then:
//   - done: acks without calling the handler (a duplicate);
//   - busy: returns ErrBusy, so Retry or the broker try later;
//   - acquired: calls the handler; on success marks the event done, on
//     failure releases the claim and returns the error, so a redelivery is
//     applied.
//
// If marking fails the error is returned; the claim then expires after its
// lease and the event runs again: the effect happens at least once. For
// exactly once, use pgstore.Tx.
func New(cfg Config) (message.HandlerMiddleware, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			key := Key{Consumer: cfg.Consumer, EventID: msg.Metadata.Get(eda.MetadataID)}
			if key.Consumer == "" {
				key.Consumer = message.SubscribeTopicFromCtx(ctx)
			}
			if key.EventID == "" {
				return nil, eda.Permanent(fmt.Errorf("%w: message %s", ErrNoEventID, msg.UUID))
			}
			claim, err := cfg.Store.Claim(ctx, key, cfg.Lease)
			if err != nil {
				return nil, storeErr("claim", key, err)
			}
			switch claim.State {
			case Done:
				logger.LogAttrs(ctx, slog.LevelInfo, "eda: duplicate skipped",
					slog.String("event_id", key.EventID), slog.String("consumer", key.Consumer))
				return nil, nil
			case Busy:
				return nil, busyError{key}
			}
			out, herr := h(msg)
			// Settle even if the handler's context was cancelled (a timeout),
			// within a budget of its own.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultReleaseBudget)
			defer cancel()
			if herr != nil {
				if err := cfg.Store.Release(sctx, key, claim.Token); err != nil {
					logger.LogAttrs(ctx, slog.LevelWarn, "eda: inbox release failed; the claim expires after its lease",
						slog.String("event_id", key.EventID), slog.String("consumer", key.Consumer), slog.Any("error", err))
				}
				return out, herr
			}
			if err := cfg.Store.Complete(sctx, key, claim.Token); err != nil {
				return out, storeErr("complete", key, err)
			}
			return out, nil
		}
	}, nil
}

// busyError is ErrBusy for one key. Deferred tells middleware.Poison that
// the message is not failing, only waiting: it is never poisoned.
type busyError struct{ key Key }

func (e busyError) Error() string {
	return fmt.Sprintf("%v: consumer %q, event %s", ErrBusy, e.key.Consumer, e.key.EventID)
}

func (e busyError) Is(target error) bool { return target == ErrBusy }

// Deferred reports true: retry later, do not poison.
func (busyError) Deferred() bool { return true }

func storeErr(op string, key Key, err error) error {
	if errors.Is(err, ErrLeaseLost) || errors.Is(err, ErrInvalidKey) || errors.Is(err, ErrStore) {
		return fmt.Errorf("inbox: %s %+v: %w", op, key, err)
	}
	return fmt.Errorf("%w: %s %+v: %w", ErrStore, op, key, err)
}

// ExpiryConfig configures RunExpiry.
type ExpiryConfig struct {
	// Retention is how long done marks are kept. Required: longer than a
	// duplicate can arrive (the queue's message retention).
	Retention time.Duration
	// Interval between sweeps. Default Retention/10, at most an hour.
	Interval time.Duration
	// Logger receives a record per sweep that deletes something, and per
	// failed sweep. Nil discards.
	Logger *slog.Logger
}

// RunExpiry deletes marks older than cfg.Retention from s every
// cfg.Interval until ctx ends; then it returns nil. A failed sweep is
// logged and tried again at the next interval.
func RunExpiry(ctx context.Context, s Store, cfg ExpiryConfig) error {
	var errs []error
	if s == nil {
		errs = append(errs, fmt.Errorf("%w: inbox: expiry: nil Store", ErrInvalidConfig))
	}
	if cfg.Retention <= 0 {
		errs = append(errs, fmt.Errorf("%w: inbox: expiry: Retention %s, want > 0", ErrInvalidConfig, cfg.Retention))
	}
	if cfg.Interval < 0 {
		errs = append(errs, fmt.Errorf("%w: inbox: expiry: negative Interval %s", ErrInvalidConfig, cfg.Interval))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if cfg.Interval == 0 {
		cfg.Interval = min(cfg.Retention/10, time.Hour)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		n, err := s.Expire(ctx, time.Now().Add(-cfg.Retention))
		switch {
		case err != nil && ctx.Err() == nil:
			logger.LogAttrs(ctx, slog.LevelWarn, "eda: inbox expiry failed", slog.Any("error", err))
		case n > 0:
			logger.LogAttrs(ctx, slog.LevelInfo, "eda: inbox marks expired", slog.Int64("deleted", n))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
