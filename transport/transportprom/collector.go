package transportprom

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edaproject/eda/transport"
)

// Defaults of Config.
const (
	// DefaultInterval is how often the queues are read.
	DefaultInterval = 15 * time.Second
	// DefaultTimeout bounds one reading of one queue.
	DefaultTimeout = 5 * time.Second
	// DefaultNamespace prefixes the metric names.
	DefaultNamespace = "eda"
)

// Config configures a Collector.
type Config struct {
	// Inspector reads the depths: the transport. Required.
	Inspector transport.Inspector
	// Queues are the names of the queues to report, as declared; Queues
	// (the function) lists an App's queues and their dead-letter queues.
	// Required, no duplicates.
	Queues []string
	// Interval is how often the poller reads every queue. Default
	// DefaultInterval.
	Interval time.Duration
	// Timeout bounds the reading of one queue. Default DefaultTimeout.
	Timeout time.Duration
	// Namespace prefixes the metric names. Default DefaultNamespace.
	Namespace string
	// ConstLabels are added to every metric (e.g. the service).
	ConstLabels prometheus.Labels
	// Logger receives failed readings. Nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Inspector == nil {
		errs = append(errs, fmt.Errorf("%w: transportprom: Inspector is nil", transport.ErrInvalidConfig))
	}
	if len(c.Queues) == 0 {
		errs = append(errs, fmt.Errorf("%w: transportprom: no Queues", transport.ErrInvalidConfig))
	}
	seen := map[string]bool{}
	for i, q := range c.Queues {
		switch {
		case q == "":
			errs = append(errs, fmt.Errorf("%w: transportprom: Queues[%d] is empty", transport.ErrInvalidConfig, i))
		case seen[q]:
			errs = append(errs, fmt.Errorf("%w: transportprom: queue %q listed twice", transport.ErrInvalidConfig, q))
		}
		seen[q] = true
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("%w: transportprom: negative Interval %s", transport.ErrInvalidConfig, c.Interval))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%w: transportprom: negative Timeout %s", transport.ErrInvalidConfig, c.Timeout))
	}
	return errors.Join(errs...)
}

// Queues returns the names of qs and of their dead-letter queues, each
// once, in order: what Config.Queues usually lists (pass app.Queues()).
func Queues(qs []transport.Queue) []string {
	var out []string
	for _, q := range qs {
		q = q.WithDefaults()
		for _, name := range []string{q.Name, q.DeadLetterQueue} {
			if name != "" && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out
}

// Collector is a prometheus.Collector of queue depths. Register it, and run
// its poller with Run; until the first reading it reports no depths.
//
// Metrics (with the default namespace):
//   - eda_queue_messages{queue, state} (gauge): messages in the queue by
//     state: "visible" (waiting to be received), "inflight" (received, not
//     settled) and "delayed" (a delivery time to come);
//   - eda_queue_oldest_message_age_seconds{queue} (gauge): the age of the
//     oldest message at the reading, 0 when the queue is empty; absent
//     where the transport does not know it (SQS: use CloudWatch's
//     ApproximateAgeOfOldestMessage);
//   - eda_queue_last_read_timestamp_seconds{queue} (gauge): when the
//     reported reading was taken (Unix time);
//   - eda_queue_read_errors_total{queue} (counter): failed readings. A
//     queue whose last reading failed reports no depth until one succeeds,
//     rather than a stale one.
type Collector struct {
	cfg        Config
	messages   *prometheus.Desc
	age        *prometheus.Desc
	readAt     *prometheus.Desc
	readErrors *prometheus.CounterVec

	mu       sync.Mutex
	readings map[string]reading // by queue; absent until read, or after a failure
}

type reading struct {
	depth transport.Depth
	at    time.Time
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector.
func New(cfg Config) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Queues = slices.Clone(cfg.Queues)
	name := func(n string) string { return prometheus.BuildFQName(cfg.Namespace, "queue", n) }
	return &Collector{
		cfg: cfg,
		messages: prometheus.NewDesc(name("messages"),
			"Messages in the queue by state (visible, inflight, delayed), at the last reading.", []string{"queue", "state"}, cfg.ConstLabels),
		age: prometheus.NewDesc(name("oldest_message_age_seconds"),
			"Age of the oldest message in the queue at the last reading; 0 when empty.", []string{"queue"}, cfg.ConstLabels),
		readAt: prometheus.NewDesc(name("last_read_timestamp_seconds"),
			"When the reported depth of the queue was read (Unix time).", []string{"queue"}, cfg.ConstLabels),
		readErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: cfg.Namespace, Subsystem: "queue", Name: "read_errors_total",
			Help: "Failed readings of the queue's depth.", ConstLabels: cfg.ConstLabels,
		}, []string{"queue"}),
		readings: map[string]reading{},
	}, nil
}

// Run reads every queue at once and then every Config.Interval until ctx
// ends; it returns nil then. Failed readings are logged and counted, not
// returned.
func (c *Collector) Run(ctx context.Context) error {
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		c.Read(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Read reads every queue once, one after another, and caches the readings
// for the next scrapes. Run calls it; call it yourself to refresh on demand.
func (c *Collector) Read(ctx context.Context) {
	for _, q := range c.cfg.Queues {
		if ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		at := time.Now()
		d, err := c.cfg.Inspector.QueueDepth(rctx, q)
		cancel()
		if ctx.Err() != nil {
			return // stopping: not a failed reading
		}
		c.mu.Lock()
		if err != nil {
			delete(c.readings, q)
		} else {
			c.readings[q] = reading{depth: d, at: at}
		}
		c.mu.Unlock()
		if err != nil {
			c.readErrors.WithLabelValues(q).Inc()
			c.cfg.Logger.Warn("transportprom: read queue depth", "queue", q, "error", err)
		}
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.age
	ch <- c.readAt
	c.readErrors.Describe(ch)
}

// Collect implements prometheus.Collector: the cached readings, without
// calling the broker.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.cfg.Queues {
		r, ok := c.readings[q]
		if !ok {
			continue
		}
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		gauge(c.messages, float64(r.depth.Visible), q, "visible")
		gauge(c.messages, float64(r.depth.InFlight), q, "inflight")
		gauge(c.messages, float64(r.depth.Delayed), q, "delayed")
		if r.depth.OldestAgeKnown {
			gauge(c.age, r.depth.OldestAge.Seconds(), q)
		}
		gauge(c.readAt, float64(r.at.UnixNano())/1e9, q)
	}
	c.readErrors.Collect(ch)
}
