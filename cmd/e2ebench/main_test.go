package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs both builds at one low rate, so that the benchmark keeps
// working end to end: every order final in both builds (run fails
// otherwise) and the table printed. It measures nothing.
func TestSmoke(t *testing.T) {
	var out bytes.Buffer
	c := config{
		dsn:      envOr("EDA_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"),
		endpoint: envOr("EDA_AWS_ENDPOINT", "http://127.0.0.1:4566"),
		rates:    []float64{20}, step: time.Second, drain: 30 * time.Second, p99Bound: 10 * time.Second,
		concurrency: 4, relayWorkers: 1, stockWorkers: 2, stockSchema: "queue", builds: []string{"eda", "stock"}, stages: true, out: &out,
	}
	if err := run(context.Background(), c); err != nil {
		t.Fatalf("%v (needs Postgres: scripts/postgres.sh, and the emulator: scripts/emulator.sh up)\n%s", err, out.String())
	}
	for _, want := range []string{"| offered/s | eda done/s", "stock p99.9", "\n| 20 | ", "eda at 20/s: POST done", "1 inventory p50", "2 order-status p50",
		"checked: every accepted order is final"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Log("\n" + out.String())
	}
}

func TestParseRates(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []float64
		err  bool
	}{
		{"50,100, 200", []float64{50, 100, 200}, false},
		{"100,50", nil, true},
		{"0", nil, true},
		{"x", nil, true},
	} {
		got, err := parseRates(tc.in)
		if (err != nil) != tc.err || (!tc.err && !equal(got, tc.want)) {
			t.Errorf("parseRates(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestQuantile(t *testing.T) {
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}} {
		if got := quantile(lat, tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing is not 0")
	}
}
