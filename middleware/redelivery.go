package middleware

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// Defaults of RedeliveryConfig: the default schedule.
//
// After the n-th failed delivery the message comes back after
// DefaultRedeliveryInitial * DefaultRedeliveryMultiplier^(n-1), capped at
// DefaultRedeliveryMax and shortened by up to DefaultRedeliveryJitter of
// itself: 1m, 2m, 4m, 8m, 15m, 15m... With Poison's DefaultMaxDeliveries
// (3, as in examples/orders, whose queues move a message to their DLQ
// after 5 receives) the third and last delivery comes at least
// 0.8*(1m+2m) = 2m24s after the first: a handler that fails for 2 minutes
// (a database restart, a dependency's deploy) and then recovers loses
// nothing to the poison queue or the DLQ.
const (
	DefaultRedeliveryInitial    = time.Minute
	DefaultRedeliveryMultiplier = 2.0
	DefaultRedeliveryMax        = 15 * time.Minute
	DefaultRedeliveryJitter     = 0.2
)

// RedeliveryConfig is the schedule of delayed redeliveries (see
// RetryConfig.Redelivery): how long a message whose in-process retries are
// spent stays invisible before the broker delivers it again, by how many
// times it has been delivered (transport.MetadataReceiveCount). The zero
// value is the default schedule.
//
// Keep Max within the transport's Features.MaxRedeliveryDelay (SQS: 12
// hours) when it has one.
type RedeliveryConfig struct {
	// Delays, when set, is the schedule itself: Delays[n-1] after the n-th
	// failed delivery, the last one repeating. Initial and Multiplier are
	// then unused; Max still caps, Jitter still applies.
	Delays []time.Duration
	// Initial is the delay after the first failed delivery. Default
	// DefaultRedeliveryInitial.
	Initial time.Duration
	// Multiplier grows the delay after each further failed delivery.
	// Default DefaultRedeliveryMultiplier; at least 1.
	Multiplier float64
	// Max caps every delay. Default DefaultRedeliveryMax (or Initial, or
	// the largest of Delays, when larger).
	Max time.Duration
	// Jitter shortens each delay by a random fraction in [0, Jitter], so
	// that messages failing together do not come back together; a delay
	// is never longer than the schedule says. In [0, 1]; default
	// DefaultRedeliveryJitter unless NoJitter is set.
	Jitter float64
	// NoJitter makes the delays exact.
	NoJitter bool
}

// Validate reports every problem with c, joined.
func (c RedeliveryConfig) Validate() error {
	var errs []error
	for i, d := range c.Delays {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%w: redelivery: negative Delays[%d] %s", ErrInvalidConfig, i, d))
		}
	}
	if c.Initial < 0 || c.Max < 0 {
		errs = append(errs, fmt.Errorf("%w: redelivery: negative delay (initial %s, max %s)", ErrInvalidConfig, c.Initial, c.Max))
	}
	if c.Multiplier != 0 && c.Multiplier < 1 {
		errs = append(errs, fmt.Errorf("%w: redelivery: Multiplier %g < 1", ErrInvalidConfig, c.Multiplier))
	}
	if c.Jitter < 0 || c.Jitter > 1 {
		errs = append(errs, fmt.Errorf("%w: redelivery: Jitter %g not in [0, 1]", ErrInvalidConfig, c.Jitter))
	}
	return errors.Join(errs...)
}

func (c RedeliveryConfig) withDefaults() RedeliveryConfig {
	if c.Initial == 0 {
		c.Initial = DefaultRedeliveryInitial
	}
	if c.Multiplier == 0 {
		c.Multiplier = DefaultRedeliveryMultiplier
	}
	if c.Max == 0 {
		c.Max = max(DefaultRedeliveryMax, c.Initial)
		for _, d := range c.Delays {
			c.Max = max(c.Max, d)
		}
	}
	switch {
	case c.NoJitter:
		c.Jitter = 0
	case c.Jitter == 0:
		c.Jitter = DefaultRedeliveryJitter
	}
	return c
}

// Delay returns the delay before the delivery that follows the
// deliveries-th failed one (1 for the first delivery; a value below 1 counts
// as 1), jitter included. An invalid config gives 0.
func (c RedeliveryConfig) Delay(deliveries int) time.Duration {
	if c.Validate() != nil {
		return 0
	}
	return c.withDefaults().delay(deliveries, rand.Float64())
}

// delay is Delay on a config with defaults, with u in [0, 1) the random
// draw of the jitter.
func (c RedeliveryConfig) delay(deliveries int, u float64) time.Duration {
	n := max(deliveries, 1)
	var d time.Duration
	if len(c.Delays) > 0 {
		d = c.Delays[min(n, len(c.Delays))-1]
	} else {
		f := float64(c.Initial) * math.Pow(c.Multiplier, float64(n-1))
		if f >= float64(c.Max) || math.IsInf(f, 0) || math.IsNaN(f) {
			d = c.Max
		} else {
			d = time.Duration(f)
		}
	}
	d = min(d, c.Max)
	return d - time.Duration(float64(d)*c.Jitter*u)
}

// setRedeliveryDelay asks the transport to redeliver msg after the delay
// the schedule gives for its receive count.
func (c *RedeliveryConfig) setRedeliveryDelay(msg *message.Message) {
	n, _ := receiveCount(msg)
	transport.SetRedeliveryDelay(msg, c.delay(n, rand.Float64()))
}
