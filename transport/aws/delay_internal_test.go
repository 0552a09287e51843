package aws

import (
	"testing"
	"time"
)

func TestRedeliveryVisibility(t *testing.T) {
	for _, tc := range []struct {
		name          string
		sinceReceived time.Duration
		delay         time.Duration
		want          time.Duration
	}{
		{"none", 0, 0, 0},
		{"rounded up to seconds", 0, 1200 * time.Millisecond, 2 * time.Second},
		{"whole seconds kept", 0, 5 * time.Second, 5 * time.Second},
		{"capped at 12h", 0, 13 * time.Hour, 12*time.Hour - time.Second},
		{"within 12h of the receive", 11*time.Hour + 59*time.Minute, time.Hour, 59 * time.Second},
		{"past 12h", 13 * time.Hour, time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &held{received: time.Now().Add(-tc.sinceReceived)}
			got := redeliveryVisibility(h, tc.delay)
			// The cap depends on the clock: allow a second below it.
			if got > tc.want || got < tc.want-time.Second || got%time.Second != 0 {
				t.Errorf("redeliveryVisibility(received %s ago, %s) = %s, want %s", tc.sinceReceived, tc.delay, got, tc.want)
			}
		})
	}
}

func TestDelaySeconds(t *testing.T) {
	for d, want := range map[time.Duration]int32{
		time.Millisecond:             1,
		time.Second:                  1,
		1001 * time.Millisecond:      2,
		MaxDeliveryDelay:             900,
		MaxDeliveryDelay + time.Hour: 900,
	} {
		if got := delaySeconds(d); got != want {
			t.Errorf("delaySeconds(%s) = %d, want %d", d, got, want)
		}
	}
}
