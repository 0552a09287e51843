package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs every Postgres phase of the benchmark with tiny numbers, so
// that the benchmark keeps working; it measures nothing.
func TestSmoke(t *testing.T) {
	dsn := os.Getenv("EDA_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	c := config{
		dsn: dsn, writers: 2, duration: 500 * time.Millisecond, drain: 300, claimRows: 2000, claimPending: 300, claimBacklog: 1000,
		phases: map[string]bool{"write": true, "relay": true, "claim": true}, out: f,
	}
	if err := run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(f.Name())
	for _, want := range []string{"eda outbox (pgxstore, NOTIFY", "stock forwarder, DefaultPostgreSQLSchema", "pending rows in the table"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Log("\n" + strings.TrimSpace(string(out)))
	}
}
