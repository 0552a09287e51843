package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v5"

	"github.com/edaproject/eda/eda"
)

// Defaults of RetryConfig.
const (
	DefaultMaxAttempts     = 3
	DefaultInitialInterval = 100 * time.Millisecond
	DefaultMaxInterval     = 5 * time.Second
	DefaultMultiplier      = 2.0
	DefaultJitter          = 0.5
	DefaultMaxElapsed      = 20 * time.Second
)

// RetryConfig configures Retry. The zero value is valid.
type RetryConfig struct {
	// MaxAttempts is how many times one delivery is handled in process,
	// counting the first call. When they all fail, Retry returns the last
	// error: the message is nacked and the broker redelivers it (or, with
	// Poison outside Retry, it is poisoned on its last delivery). 1
	// disables in-process retries. Default DefaultMaxAttempts.
	MaxAttempts int
	// InitialInterval is the wait before the first retry. Default
	// DefaultInitialInterval.
	InitialInterval time.Duration
	// MaxInterval caps the wait between retries. Default DefaultMaxInterval.
	MaxInterval time.Duration
	// Multiplier grows the wait after each retry. Default DefaultMultiplier.
	Multiplier float64
	// Jitter spreads each wait randomly over [wait*(1-Jitter),
	// wait*(1+Jitter)] so that consumers failing together do not retry
	// together. In [0, 1]; default DefaultJitter unless NoJitter is set.
	Jitter float64
	// NoJitter makes the waits exact (tests, mostly).
	NoJitter bool
	// MaxElapsed bounds the time one delivery spends retrying, from its
	// first failure, waits included; no retry starts that would end its wait
	// after it.
	// Keep it well under the queue's visibility timeout, or the broker
	// hands the message to another consumer while this one still retries.
	// Default DefaultMaxElapsed.
	MaxElapsed time.Duration
	// Redelivery, when set, delays the broker's redelivery once in-process
	// retries are spent: before Retry returns a (non-permanent) error it
	// sets transport.SetRedeliveryDelay on the message by this schedule
	// and the message's receive count, so the message the router nacks
	// comes back later rather than at once, and a dependency that is down
	// for minutes does not exhaust its deliveries (see
	// DefaultRedeliveryInitial). &RedeliveryConfig{} is the default
	// schedule. Nil: no delay, the message is nacked for immediate
	// redelivery. The transport must honour it
	// (Features.DelayedRedelivery); one that does not redelivers at once.
	Redelivery *RedeliveryConfig
	// Logger receives a record per retry. Nil discards.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c RetryConfig) Validate() error {
	var errs []error
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("%w: retry: negative MaxAttempts %d", ErrInvalidConfig, c.MaxAttempts))
	}
	if c.InitialInterval < 0 || c.MaxInterval < 0 || c.MaxElapsed < 0 {
		errs = append(errs, fmt.Errorf("%w: retry: negative interval (initial %s, max %s, elapsed %s)", ErrInvalidConfig, c.InitialInterval, c.MaxInterval, c.MaxElapsed))
	}
	if c.InitialInterval > 0 && c.MaxInterval > 0 && c.MaxInterval < c.InitialInterval {
		errs = append(errs, fmt.Errorf("%w: retry: MaxInterval %s < InitialInterval %s", ErrInvalidConfig, c.MaxInterval, c.InitialInterval))
	}
	if c.Multiplier != 0 && c.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("%w: retry: Multiplier %g < 1", ErrInvalidConfig, c.Multiplier))
	}
	if c.Jitter < 0 || c.Jitter > 1 {
		errs = append(errs, fmt.Errorf("%w: retry: Jitter %g not in [0, 1]", ErrInvalidConfig, c.Jitter))
	}
	if c.Redelivery != nil {
		if err := c.Redelivery.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("retry: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (c *RetryConfig) setDefaults() {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.InitialInterval == 0 {
		c.InitialInterval = DefaultInitialInterval
	}
	if c.MaxInterval == 0 {
		c.MaxInterval = max(DefaultMaxInterval, c.InitialInterval)
	}
	if c.Multiplier == 0 {
		c.Multiplier = DefaultMultiplier
	}
	switch {
	case c.NoJitter:
		c.Jitter = 0
	case c.Jitter == 0:
		c.Jitter = DefaultJitter
	}
	if c.MaxElapsed == 0 {
		c.MaxElapsed = DefaultMaxElapsed
	}
	if c.Redelivery != nil {
		r := c.Redelivery.withDefaults()
		c.Redelivery = &r
	}
	c.Logger = orDiscard(c.Logger)
}

// Retry returns middleware that calls the handler again, with exponential
// backoff and jitter (github.com/cenkalti/backoff/v5, as Watermill's Retry),
// until it succeeds, MaxAttempts calls are made or MaxElapsed would pass.
// Then it returns the last error, so the message is nacked and redelivered
// by the broker: a process that dies between attempts loses nothing.
//
// A permanent error (eda.IsPermanent: decode errors, unknown event types,
// unsupported schema versions, errors marked with eda.Permanent) is not
// retried. When the message context ends (shutdown) Retry stops waiting and
// returns the error.
//
// With Redelivery set, the error it returns after spending its attempts
// carries a request to the transport (transport.SetRedeliveryDelay, on the
// very message the subscriber delivered and the router nacks) to redeliver
// it only after the schedule's delay: immediate retries, then delayed
// redeliveries, then the poison queue or DLQ. Not for a permanent error,
// nor when the message context has ended (shutdown: the message goes back
// at once for another consumer).
//
// Unlike Watermill's Retry, each attempt starts from the context the message
// had when Retry was entered, so a Timeout inside Retry times each attempt
// and a cancelled attempt does not poison the next.
func Retry(cfg RetryConfig) (message.HandlerMiddleware, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			rec := recordOf(msg)
			rec.retried = true
			ctx := msg.Context()
			// The first call is made here, so a message that succeeds at once
			// (nearly all of them) costs no backoff state.
			rec.attempts++
			out, err := h(msg)
			if err == nil {
				return out, nil
			}
			msg.SetContext(ctx)
			rec.failed(time.Now(), err)
			if eda.IsPermanent(err) {
				return out, err
			}
			if cfg.MaxAttempts > 1 {
				out, err = cfg.retry(ctx, h, msg, rec, out, err)
			}
			if err != nil && cfg.Redelivery != nil && !eda.IsPermanent(err) && ctx.Err() == nil {
				cfg.Redelivery.setRedeliveryDelay(msg)
			}
			return out, err
		}
	}, nil
}

// retry makes the calls after the first failed one (a separate function, so
// the success path carries none of its state on the stack).
func (cfg *RetryConfig) retry(ctx context.Context, h message.HandlerFunc, msg *message.Message, rec *record, out []*message.Message, err error) ([]*message.Message, error) {
	exp := &backoff.ExponentialBackOff{
		InitialInterval:     cfg.InitialInterval,
		RandomizationFactor: cfg.Jitter,
		Multiplier:          cfg.Multiplier,
		MaxInterval:         cfg.MaxInterval,
	}
	lastErr := err
	first := true
	op := func() ([]*message.Message, error) {
		if first { // the call made above
			first = false
			return out, lastErr
		}
		msg.SetContext(ctx)
		rec.attempts++
		out, err := h(msg)
		if err == nil {
			return out, nil
		}
		rec.failed(time.Now(), err)
		lastErr = err
		if eda.IsPermanent(err) {
			return out, backoff.Permanent(err)
		}
		return out, err
	}
	notify := func(err error, wait time.Duration) {
		rec.retries++
		cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "eda: handler failed, retrying",
			slog.String("event_id", msg.Metadata.Get(eda.MetadataID)),
			slog.String("event_type", msg.Metadata.Get(eda.MetadataType)),
			slog.String("handler", message.HandlerNameFromCtx(ctx)),
			slog.Int("attempt", rec.attempts),
			slog.Duration("wait", wait),
			slog.Any("error", err))
	}
	out, err = backoff.Retry(ctx, op,
		backoff.WithBackOff(exp),
		backoff.WithMaxTries(uint(cfg.MaxAttempts)),
		backoff.WithMaxElapsedTime(cfg.MaxElapsed),
		backoff.WithNotify(notify))
	msg.SetContext(ctx)
	if err == nil {
		return out, nil
	}
	if perm, ok := errors.AsType[*backoff.PermanentError](err); ok {
		err = perm.Unwrap()
	}
	if lastErr != nil && !errors.Is(err, lastErr) {
		// Stopped by the context while waiting: report the handler's
		// error too, not only context.Canceled.
		err = errors.Join(lastErr, err)
	}
	return out, err
}

// orDiscard returns l, or a logger that discards when l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// ErrInvalidConfig is returned (wrapped) by every constructor in this package
// given an invalid config. It is eda.ErrInvalidConfig, so either matches.
var ErrInvalidConfig = eda.ErrInvalidConfig
