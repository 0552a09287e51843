package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/transport/postgres"
)

// The services as separate processes on one Postgres: the inventory and
// notification services run as child processes of the built example, the
// order service in the test; every order reaches its final state.
func TestServicesAsSeparateProcesses(t *testing.T) {
	o := scenario(t, "postgres")
	bin := filepath.Join(t.TempDir(), "orders")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, role := range []string{"inventory", "notification"} {
		cmd := exec.CommandContext(ctx, bin, "-role", role, "-db", o.DB, "-transport", "postgres",
			"-schema", o.Schema, "-prefix", o.Prefix)
		cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	}
	o.Role = "orders"
	s, err := start(ctx, o)
	must(t, err)
	defer s.stop()
	// A topic delivers only to the queues subscribed when a message is
	// published (SNS semantics): orders go out once both services have
	// declared theirs, as a deployment applies its topology first.
	tr := s.tr.(*postgres.Transport)
	for _, q := range []string{queueInventory, queueNotification} {
		if !poll.Until(60*time.Second, func() bool { _, _, err := tr.Depth(ctx, o.name(q)); return err == nil }) {
			t.Fatalf("the %s service did not declare its queue within 60s", q)
		}
	}
	dctx, dcancel := context.WithTimeout(ctx, 90*time.Second)
	defer dcancel()
	sum, err := s.demo(dctx, 20, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Placed != 20 || sum.Pending != 0 || sum.Notified != 20 || len(sum.DeadLettered) != 2 {
		t.Fatalf("summary %+v: want 20 placed, all final and notified, 2 dead-lettered", sum)
	}
}
