package middleware

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

// Defaults of BreakerConfig.
const (
	DefaultBreakerMaxHold       = 10 * time.Minute
	DefaultBreakerProbeInitial  = 500 * time.Millisecond
	DefaultBreakerProbeInterval = 15 * time.Second
)

// ErrCircuitOpen is the error of a delivery that waited for an open circuit
// for BreakerConfig.MaxHold without getting a call. It wraps the failure
// that opened the circuit, and IsUnavailable reports true for it.
var ErrCircuitOpen = errors.New("eda: circuit open: a dependency of the handler is unavailable")

// BreakerConfig configures Breaker. The zero value is valid.
type BreakerConfig struct {
	// Unavailable tells a failure of what every message needs (the
	// handler's database or the broker unreachable) from a failure of the
	// message itself. Default IsUnavailable.
	Unavailable func(error) bool
	// MaxHold bounds how long one delivery is held by an open circuit, its
	// own calls and waits included. After it the delivery fails with its
	// last error, as without Breaker: Retry's redelivery delay, Poison, the
	// queue's DLQ. The transport must keep the message leased meanwhile
	// (Features.Heartbeat: memory, postgres and aws do); on one that does
	// not, keep MaxHold under the visibility timeout. Default
	// DefaultBreakerMaxHold.
	MaxHold time.Duration
	// ProbeInitial is the wait after the circuit opens before a held
	// message is tried again; it doubles with each probe that fails, up to
	// ProbeInterval. Defaults DefaultBreakerProbeInitial and
	// DefaultBreakerProbeInterval.
	ProbeInitial  time.Duration
	ProbeInterval time.Duration
	// Off leaves Breaker out of Default's stack.
	Off bool
	// Logger receives a record when a circuit opens and when it closes.
	// Nil discards.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c BreakerConfig) Validate() error {
	var errs []error
	if c.MaxHold < 0 || c.ProbeInitial < 0 || c.ProbeInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: breaker: negative duration (max hold %s, probe initial %s, probe interval %s)", ErrInvalidConfig, c.MaxHold, c.ProbeInitial, c.ProbeInterval))
	}
	if c.ProbeInitial > 0 && c.ProbeInterval > 0 && c.ProbeInterval < c.ProbeInitial {
		errs = append(errs, fmt.Errorf("%w: breaker: ProbeInterval %s < ProbeInitial %s", ErrInvalidConfig, c.ProbeInterval, c.ProbeInitial))
	}
	return errors.Join(errs...)
}

func (c *BreakerConfig) setDefaults() {
	if c.Unavailable == nil {
		c.Unavailable = IsUnavailable
	}
	if c.MaxHold == 0 {
		c.MaxHold = DefaultBreakerMaxHold
	}
	if c.ProbeInitial == 0 {
		c.ProbeInitial = DefaultBreakerProbeInitial
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = max(DefaultBreakerProbeInterval, c.ProbeInitial)
	}
	c.Logger = orDiscard(c.Logger)
}

// Breaker returns middleware with a circuit per handler that stops a
// consumer from spending its messages' deliveries while a dependency is
// down, like MassTransit's kill switch.
//
// When a call fails with an error cfg.Unavailable accepts (by default a
// network error, a refused or reset connection, a Postgres connection or
// shutdown SQLSTATE, transport.ErrUnavailable) the handler's circuit opens.
// The message is not handed back to the broker: it is held, still leased,
// and tried again after ProbeInitial, then at doubling intervals up to
// ProbeInterval. Other messages of the handler wait while the circuit is
// open instead of failing one after the other; one of them at a time is the
// next probe. The first call that succeeds, or that fails for another
// reason (the dependency answered), closes the circuit and lets every held
// message go on at once. A delivery held for MaxHold fails as it would
// have without Breaker. When the message context ends (shutdown) the held
// message goes back to the broker at once.
//
// So an outage of the handler's own database costs each message in flight
// one receive, not MaxDeliveries of them, and ends with no poisoned
// message and no redelivery delay to wait out. Put it outside Retry and
// inside Poison (Default does): each probe is one Retry round.
func Breaker(cfg BreakerConfig) (message.HandlerMiddleware, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	b := &breaker{cfg: cfg, circuits: map[string]*circuit{}}
	return b.middleware, nil
}

type breaker struct {
	cfg      BreakerConfig
	mu       sync.Mutex
	circuits map[string]*circuit // by handler name
}

func (b *breaker) circuit(handler string) *circuit {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.circuits[handler]
	if !ok {
		c = &circuit{cfg: &b.cfg, handler: handler}
		b.circuits[handler] = c
	}
	return c
}

func (b *breaker) middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		c := b.circuit(message.HandlerNameFromCtx(ctx))
		if !c.isOpen() { // the path of nearly every message
			out, err := h(msg)
			if err == nil || !b.cfg.Unavailable(err) {
				if c.isOpen() { // opened by another message meanwhile: this call got through
					c.reached()
				}
				return out, err
			}
			msg.SetContext(ctx)
			c.trip(ctx, err)
			return b.hold(ctx, c, h, msg, out, err)
		}
		return b.hold(ctx, c, h, msg, nil, nil)
	}
}

// hold calls h for msg each time the circuit admits it, until a call ends
// other than unavailable, the context ends or MaxHold passes. out and err
// are of a call already made, if any.
func (b *breaker) hold(ctx context.Context, c *circuit, h message.HandlerFunc, msg *message.Message, out []*message.Message, err error) ([]*message.Message, error) {
	deadline := time.Now().Add(b.cfg.MaxHold)
	for {
		if aerr := c.admit(ctx, deadline); aerr != nil {
			if err == nil {
				err = aerr
			}
			return out, err
		}
		out, err = h(msg)
		msg.SetContext(ctx)
		if err == nil || !b.cfg.Unavailable(err) {
			c.reached()
			return out, err
		}
		c.trip(ctx, err)
		if ctx.Err() != nil {
			return out, err
		}
	}
}

// circuit is the state of one handler's dependency.
type circuit struct {
	cfg     *BreakerConfig
	handler string

	opened atomic.Bool // open, read without the lock

	mu       sync.Mutex
	open     bool
	since    time.Time     // when it opened
	probeAt  time.Time     // when the next held message may be tried
	interval time.Duration // the wait after the next probe
	cause    error         // the failure that opened it, the latest
	closed   chan struct{} // closed when the circuit closes
}

func (c *circuit) isOpen() bool { return c.opened.Load() }

// trip records an unavailable failure: it opens the circuit if closed.
func (c *circuit) trip(ctx context.Context, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cause = err
	if c.open {
		return
	}
	now := time.Now()
	c.open, c.since = true, now
	c.opened.Store(true)
	c.probeAt, c.interval = now.Add(c.cfg.ProbeInitial), min(2*c.cfg.ProbeInitial, c.cfg.ProbeInterval)
	c.closed = make(chan struct{})
	c.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "eda: circuit open, holding messages until the dependency is back",
		slog.String("handler", c.handler), slog.Any("error", err))
}

// reached records a call that reached its dependencies: it closes the
// circuit if open.
func (c *circuit) reached() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.open {
		return
	}
	c.open = false
	c.opened.Store(false)
	close(c.closed)
	c.cfg.Logger.LogAttrs(context.Background(), slog.LevelInfo, "eda: circuit closed",
		slog.String("handler", c.handler), slog.Duration("open_for", time.Since(c.since)))
}

// admit returns nil when the caller may call the handler: the circuit is
// closed, or the caller is the next probe. It waits otherwise, until the
// context ends or deadline passes.
func (c *circuit) admit(ctx context.Context, deadline time.Time) error {
	for {
		c.mu.Lock()
		if !c.open {
			c.mu.Unlock()
			return nil
		}
		now := time.Now()
		if !now.Before(c.probeAt) {
			c.probeAt = now.Add(c.interval)
			c.interval = min(2*c.interval, c.cfg.ProbeInterval)
			c.mu.Unlock()
			return nil
		}
		wait, closed, cause := c.probeAt.Sub(now), c.closed, c.cause
		c.mu.Unlock()
		if left := time.Until(deadline); left < wait {
			if left <= 0 {
				return fmt.Errorf("%w: held %s: %w", ErrCircuitOpen, c.cfg.MaxHold, cause)
			}
			wait = left
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ErrCircuitOpen, ctx.Err())
		case <-closed:
			t.Stop()
		case <-t.C:
		}
	}
}

// IsUnavailable reports whether err says a dependency could not be reached,
// rather than that it refused this message: transport.ErrUnavailable,
// ErrCircuitOpen, a net.Error (refused, reset, timed out, unresolvable), an
// unexpected EOF, a broken database/sql connection, or a Postgres SQLSTATE of
// class 08 (connection exception), 57P01-57P03 (the server shutting down or
// starting) or 53300 (too many connections). A permanent error
// (eda.IsPermanent) and a context error (the handler's own deadline, a
// shutdown) are not.
func IsUnavailable(err error) bool {
	switch {
	case err == nil, eda.IsPermanent(err):
		return false
	case errors.Is(err, transport.ErrUnavailable), errors.Is(err, ErrCircuitOpen):
		return true
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne != nil {
		return true
	}
	for _, target := range []error{io.ErrUnexpectedEOF, syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, driver.ErrBadConn, sql.ErrConnDone} {
		if errors.Is(err, target) {
			return true
		}
	}
	if r, ok := errors.AsType[interface {
		error
		SafeToRetry() bool
	}](err); ok && r.SafeToRetry() {
		return true // pgconn: the request was not sent ("conn closed")
	}
	if st, ok := errors.AsType[interface {
		error
		SQLState() string
	}](err); ok {
		switch s := st.SQLState(); {
		case strings.HasPrefix(s, "08"), s == "57P01", s == "57P02", s == "57P03", s == "53300":
			return true
		}
	}
	return false
}
