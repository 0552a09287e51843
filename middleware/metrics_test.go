package middleware_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

func TestMetricsCountOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr := newTransport(t)
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	stack, err := middleware.Default(middleware.Config{
		Metrics: reg,
		Retry:   middleware.RetryConfig{MaxAttempts: 3, InitialInterval: time.Millisecond},
		Poison:  &middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: 2},
	})
	must(t, err)
	app := newApp(t, tr, nil, stack...)
	must(t, eda.Handle(app, "ok", func(ctx context.Context, e placed) error { return nil }))
	flaky := newCalls()
	must(t, eda.Handle(app, "flaky", func(ctx context.Context, e placed) error {
		if flaky.n() == 0 {
			return flaky.add(ctx, errFlaky)
		}
		return flaky.add(ctx, nil)
	}))
	must(t, eda.Handle(app, "bad", func(ctx context.Context, e placed) error { return errors.New("always") }))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	receive(t, poisoned)
	// Unknown event type: counted under "unknown".
	unknown := message.NewMessage("u", []byte("{}"))
	unknown.Metadata = message.Metadata{eda.MetadataID: "u", eda.MetadataType: "x.Hostile", eda.MetadataSchemaVersion: "1"}
	must(t, tr.Publish(placedTopic, unknown))
	for range 3 {
		receive(t, poisoned)
	}
	for _, q := range []string{"ok", "flaky", "bad"} {
		drained(t, tr, q)
	}
	want := map[string]float64{
		`eda_messages_handled_total{event_type="test.Placed",queue="ok"}`:                              1,
		`eda_messages_handled_total{event_type="test.Placed",queue="flaky"}`:                           1,
		`eda_messages_retried_total{event_type="test.Placed",queue="flaky"}`:                           1,
		`eda_messages_failed_total{event_type="test.Placed",queue="bad"}`:                              1, // delivery 1, nacked
		`eda_messages_retried_total{event_type="test.Placed",queue="bad"}`:                             4, // 2 per delivery
		`eda_messages_poisoned_total{event_type="test.Placed",queue="bad",reason="retries_exhausted"}`: 1,
		`eda_messages_poisoned_total{event_type="unknown",queue="ok",reason="permanent"}`:              1,
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	must(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + "{"
			for i, l := range m.GetLabel() {
				if i > 0 {
					key += ","
				}
				key += l.GetName() + `="` + l.GetValue() + `"`
			}
			key += "}"
			if m.GetCounter() != nil {
				got[key] = m.GetCounter().GetValue()
			}
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %g, want %g", k, got[k], v)
		}
	}
	if n := testutil.CollectAndCount(reg, "eda_handler_duration_seconds"); n == 0 {
		t.Error("no duration histogram")
	}
}

func TestMetricsConfig(t *testing.T) {
	if _, err := middleware.NewMetrics(middleware.MetricsConfig{}); !errors.Is(err, middleware.ErrInvalidConfig) {
		t.Errorf("nil registerer: %v", err)
	}
	reg := prometheus.NewRegistry()
	_, err := middleware.NewMetrics(middleware.MetricsConfig{Registerer: reg})
	must(t, err)
	if _, err := middleware.NewMetrics(middleware.MetricsConfig{Registerer: reg}); !errors.Is(err, middleware.ErrInvalidConfig) {
		t.Errorf("registering twice: %v", err)
	}
}
