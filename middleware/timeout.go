package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// ErrTimeout wraps the error of a handler call that ran past its timeout.
var ErrTimeout = errors.New("eda: handler timed out")

// TimeoutConfig configures Timeout.
type TimeoutConfig struct {
	// Default bounds every handler call whose queue is not in PerQueue. 0
	// means no bound.
	Default time.Duration
	// PerQueue bounds the handler calls of the named queues; 0 exempts a
	// queue from Default.
	PerQueue map[string]time.Duration
}

// Validate reports every problem with c, joined.
func (c TimeoutConfig) Validate() error {
	var errs []error
	if c.Default < 0 {
		errs = append(errs, fmt.Errorf("%w: timeout: negative Default %s", ErrInvalidConfig, c.Default))
	}
	for q, d := range c.PerQueue {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%w: timeout: queue %q: negative timeout %s", ErrInvalidConfig, q, d))
		}
	}
	return errors.Join(errs...)
}

// Timeout returns middleware that cancels the message context of each
// handler call after the queue's timeout. The handler must honour its
// context (pgx, net/http and the AWS SDK do); one that ignores it runs on.
// An error returned after the deadline is wrapped with ErrTimeout; it is
// transient, so Retry retries it with a fresh deadline when Timeout is
// inside Retry (as in Default).
func Timeout(cfg TimeoutConfig) (message.HandlerMiddleware, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			d := cfg.Default
			if q, ok := cfg.PerQueue[message.SubscribeTopicFromCtx(msg.Context())]; ok {
				d = q
			}
			if d == 0 {
				return h(msg)
			}
			parent := msg.Context()
			ctx, cancel := context.WithTimeout(parent, d)
			defer cancel()
			msg.SetContext(ctx)
			out, err := h(msg)
			msg.SetContext(parent)
			if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && parent.Err() == nil {
				err = fmt.Errorf("%w after %s: %w", ErrTimeout, d, err)
			}
			return out, err
		}
	}, nil
}
