package middleware

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// LimitConfig configures a Limiter. At least one limit must be set.
type LimitConfig struct {
	// MaxConcurrent is how many handler calls may run at once, over every
	// handler the middleware wraps. 0 means no limit.
	MaxConcurrent int
	// Rate is how many handler calls may start per second, spaced evenly.
	// 0 means no limit.
	Rate float64
}

// Validate reports every problem with c, joined.
func (c LimitConfig) Validate() error {
	var errs []error
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("%w: limit: negative MaxConcurrent %d", ErrInvalidConfig, c.MaxConcurrent))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("%w: limit: negative Rate %g", ErrInvalidConfig, c.Rate))
	}
	if c.MaxConcurrent == 0 && c.Rate == 0 {
		errs = append(errs, fmt.Errorf("%w: limit: neither MaxConcurrent nor Rate is set", ErrInvalidConfig))
	}
	return errors.Join(errs...)
}

// Limiter bounds the concurrency and the rate of handler calls. One Limiter
// is shared by every handler its Middleware wraps (router-level middleware
// wraps all the app's handlers), so it caps the whole process, whatever the
// queues' Concurrency. Unlike Watermill's Throttle it starts no ticker and
// gives up waiting when the message context ends.
type Limiter struct {
	sem      chan struct{}
	interval time.Duration

	mu   sync.Mutex
	next time.Time // earliest start of the next call, under the rate limit
}

// NewLimiter returns a Limiter.
func NewLimiter(cfg LimitConfig) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Limiter{}
	if cfg.MaxConcurrent > 0 {
		l.sem = make(chan struct{}, cfg.MaxConcurrent)
	}
	if cfg.Rate > 0 {
		l.interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	return l, nil
}

// Middleware waits for a slot, calls the handler and frees the slot. If the
// message context ends while waiting it returns the context's error, so the
// message is nacked.
func (l *Limiter) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		if err := l.waitRate(ctx); err != nil {
			return nil, err
		}
		if l.sem != nil {
			select {
			case l.sem <- struct{}{}:
			case <-ctx.Done():
				return nil, fmt.Errorf("eda: waiting for a handler slot: %w", context.Cause(ctx))
			}
			defer func() { <-l.sem }()
		}
		return h(msg)
	}
}

func (l *Limiter) waitRate(ctx context.Context) error {
	if l.interval == 0 {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	start := l.next
	if start.Before(now) {
		start = now
	}
	l.next = start.Add(l.interval)
	l.mu.Unlock()
	wait := start.Sub(now)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("eda: waiting for the rate limit: %w", context.Cause(ctx))
	}
}
