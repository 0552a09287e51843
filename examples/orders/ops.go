package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/outbox/outboxprom"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/transportprom"
)

// Defaults of the operating endpoints.
const (
	defaultMaxOutboxLag  = 30 * time.Second
	defaultDepthInterval = 10 * time.Second
)

// ops mounts the operating endpoints on mux: /healthz and /readyz (the
// app's checks plus the outbox lag under o.MaxOutboxLag) and /metrics (the
// outbox and the depths of the app's queues and their DLQs, read every
// o.DepthInterval by a poller that runs until ctx ends).
func (s *system) ops(ctx context.Context, mux *http.ServeMux, wg *sync.WaitGroup) error {
	maxLag := s.opts.MaxOutboxLag
	if maxLag == 0 {
		maxLag = defaultMaxOutboxLag
	}
	health, err := eda.HealthHandler(s.app, eda.HealthConfig{
		Checks: []eda.HealthCheck{{Name: "outbox", Check: outboxLagCheck(s.db.outbox, maxLag)}},
		Logger: s.opts.Logger,
	})
	if err != nil {
		return err
	}
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /readyz", health)

	reg := prometheus.NewRegistry()
	var relays []*outbox.Relay
	if s.relay != nil { // NoRelay: another process drains the outbox
		relays = append(relays, s.relay)
	}
	oc, err := outboxprom.New(outboxprom.Config{Store: s.db.outbox, Relays: relays})
	if err != nil {
		return err
	}
	reg.MustRegister(oc)
	if in, ok := s.tr.(transport.Inspector); ok {
		interval := s.opts.DepthInterval
		if interval == 0 {
			interval = defaultDepthInterval
		}
		qc, err := transportprom.New(transportprom.Config{Inspector: in, Queues: transportprom.Queues(s.app.Queues()),
			Interval: interval, Logger: s.opts.Logger})
		if err != nil {
			return err
		}
		reg.MustRegister(qc)
		wg.Add(1)
		go func() { defer wg.Done(); _ = qc.Run(ctx) }()
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return nil
}

// outboxLagCheck fails while the oldest pending outbox record is older than
// bound: the relay is down or cannot reach the broker.
func outboxLagCheck(store outbox.Store, bound time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		st, err := store.Stats(ctx)
		if err != nil {
			return fmt.Errorf("outbox stats: %w", err)
		}
		if lag := st.Lag(time.Now()); lag > bound {
			return eda.Unhealthy("outbox lag %s over %s (%d pending)", lag.Round(time.Millisecond), bound, st.Pending)
		}
		return nil
	}
}
