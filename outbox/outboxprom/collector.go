package outboxprom

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edaproject/eda/outbox"
)

// DefaultTimeout bounds the store query of one scrape.
const DefaultTimeout = 5 * time.Second

// Config configures a Collector.
type Config struct {
	// Store whose backlog is reported. Required.
	Store outbox.Store
	// Relays whose counters are reported (summed). Optional.
	Relays []*outbox.Relay
	// Namespace prefixes the metric names. Default "eda".
	Namespace string
	// ConstLabels are added to every metric (e.g. the service or table).
	ConstLabels prometheus.Labels
	// Timeout bounds the store query of one scrape. Default DefaultTimeout.
	Timeout time.Duration
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, fmt.Errorf("%w: outboxprom: Store is nil", outbox.ErrInvalidConfig))
	}
	for i, r := range c.Relays {
		if r == nil {
			errs = append(errs, fmt.Errorf("%w: outboxprom: Relays[%d] is nil", outbox.ErrInvalidConfig, i))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%w: outboxprom: negative Timeout %s", outbox.ErrInvalidConfig, c.Timeout))
	}
	return errors.Join(errs...)
}

// Collector is a prometheus.Collector for an outbox. Each scrape runs one
// Stats query on the store.
//
// Metrics (with the default namespace):
//   - eda_outbox_pending (gauge): records not yet published;
//   - eda_outbox_oldest_pending_age_seconds (gauge): the outbox lag;
//   - eda_outbox_failed (gauge): records in the failed state;
//   - eda_outbox_published_total, eda_outbox_failures_total,
//     eda_outbox_retries_total (counters): what the relays did; use
//     rate(eda_outbox_published_total[1m]) for published/sec;
//   - eda_outbox_scrape_errors_total (counter): failed Stats queries.
type Collector struct {
	cfg                          Config
	pending, lag, failed         *prometheus.Desc
	published, failures, retries *prometheus.Desc
	scrapeErrors                 prometheus.Counter
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector; register it with your registry.
func New(cfg Config) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "eda"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(cfg.Namespace, "outbox", name), help, nil, cfg.ConstLabels)
	}
	return &Collector{
		cfg:       cfg,
		pending:   d("pending", "Outbox records not yet published."),
		lag:       d("oldest_pending_age_seconds", "Age of the oldest pending outbox record (the outbox lag)."),
		failed:    d("failed", "Outbox records in the failed state, waiting for Retry or Discard."),
		published: d("published_total", "Outbox records the relays published."),
		failures:  d("failures_total", "Outbox records the relays moved to the failed state."),
		retries:   d("retries_total", "Transient publish failures of outbox records (retried with backoff)."),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: cfg.Namespace, Subsystem: "outbox", Name: "scrape_errors_total",
			Help: "Failed outbox Stats queries during scrapes.", ConstLabels: cfg.ConstLabels,
		}),
	}, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.lag, c.failed, c.published, c.failures, c.retries} {
		ch <- d
	}
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	st, err := c.cfg.Store.Stats(ctx)
	if err != nil {
		c.scrapeErrors.Inc()
		ch <- prometheus.NewInvalidMetric(c.pending, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, st.Lag(time.Now()).Seconds())
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.GaugeValue, float64(st.Failed))
	}
	if len(c.cfg.Relays) > 0 {
		var sum outbox.RelayStats
		for _, r := range c.cfg.Relays {
			s := r.Stats()
			sum.Published += s.Published
			sum.Failed += s.Failed
			sum.Retried += s.Retried
		}
		ch <- prometheus.MustNewConstMetric(c.published, prometheus.CounterValue, float64(sum.Published))
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(sum.Failed))
		ch <- prometheus.MustNewConstMetric(c.retries, prometheus.CounterValue, float64(sum.Retried))
	}
	c.scrapeErrors.Collect(ch)
}
