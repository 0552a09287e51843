package middleware

import (
	"testing"
	"time"
)

func TestRedeliverySchedule(t *testing.T) {
	const almost1 = 0.999999
	for _, tc := range []struct {
		name string
		cfg  RedeliveryConfig
		n    int
		u    float64
		want time.Duration
	}{
		{"default first", RedeliveryConfig{}, 1, 0, time.Minute},
		{"default second", RedeliveryConfig{}, 2, 0, 2 * time.Minute},
		{"default third", RedeliveryConfig{}, 3, 0, 4 * time.Minute},
		{"default fourth", RedeliveryConfig{}, 4, 0, 8 * time.Minute},
		{"default capped", RedeliveryConfig{}, 5, 0, 15 * time.Minute},
		{"default capped far out", RedeliveryConfig{}, 10000, 0, 15 * time.Minute},
		{"no receive count counts as first", RedeliveryConfig{}, 0, 0, time.Minute},
		{"default jitter", RedeliveryConfig{}, 2, 0.75, 102 * time.Second},
		{"half jitter", RedeliveryConfig{}, 1, 0.5, 54 * time.Second},
		{"no jitter", RedeliveryConfig{NoJitter: true}, 1, almost1, time.Minute},
		{"own growth", RedeliveryConfig{Initial: time.Second, Multiplier: 3, Max: 20 * time.Second, NoJitter: true}, 3, 0, 9 * time.Second},
		{"own cap", RedeliveryConfig{Initial: time.Second, Multiplier: 3, Max: 20 * time.Second, NoJitter: true}, 4, 0, 20 * time.Second},
		{"delays first", RedeliveryConfig{Delays: []time.Duration{time.Second, 5 * time.Second}}, 1, 0, time.Second},
		{"delays second", RedeliveryConfig{Delays: []time.Duration{time.Second, 5 * time.Second}}, 2, 0, 5 * time.Second},
		{"delays last repeats", RedeliveryConfig{Delays: []time.Duration{time.Second, 5 * time.Second}}, 7, 0, 5 * time.Second},
		{"delays capped", RedeliveryConfig{Delays: []time.Duration{time.Second, time.Hour}, Max: 10 * time.Second}, 2, 0, 10 * time.Second},
		{"delays longer than default max", RedeliveryConfig{Delays: []time.Duration{time.Hour}}, 1, 0, time.Hour},
		{"delays jittered", RedeliveryConfig{Delays: []time.Duration{10 * time.Second}, Jitter: 0.5}, 1, 0.5, 7500 * time.Millisecond},
	} {
		if got := tc.cfg.withDefaults().delay(tc.n, tc.u); got != tc.want {
			t.Errorf("%s: delay(%d, %g) = %s, want %s", tc.name, tc.n, tc.u, got, tc.want)
		}
	}
}
