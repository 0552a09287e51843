package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Services started at the same moment on a fresh Postgres schema all come
// up: every DDL statement, CREATE SCHEMA included, takes turns. Each round
// starts the three roles at once on a new schema; a process that exits, or
// does not report that it started within the deadline, fails the round with
// its output. EDA_STARTUP_ROUNDS sets the number of rounds (default 20).
func TestServicesStartTogetherOnFreshSchema(t *testing.T) {
	requirePostgres(t)
	rounds := 20
	if v := os.Getenv("EDA_STARTUP_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("EDA_STARTUP_ROUNDS=%q: want a positive integer", v)
		}
		rounds = n
	}
	bin := filepath.Join(t.TempDir(), "orders")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for r := range rounds {
		schema := "eda_orders_start_" + randomID()
		prefix := "start" + randomID() + "-"
		t.Cleanup(func() { dropSchemas(schema, schema+"_transport") })
		if err := startTogether(bin, schema, prefix); err != nil {
			t.Fatalf("round %d of %d (schema %s): %v", r+1, rounds, schema, err)
		}
		dropSchemas(schema, schema+"_transport")
	}
}

// startTogether starts one process per role at once and waits until each
// has printed its start line, then stops them.
func startTogether(bin, schema, prefix string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	roles := []string{"orders", "inventory", "notification"}
	errs := make([]error, len(roles))
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, role := range roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = startRole(ctx, gate, bin, role, schema, prefix)
		}()
	}
	close(gate)
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", roles[i], err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d processes did not come up:\n%s", len(failed), len(roles), strings.Join(failed, "\n"))
	}
	return nil
}

func startRole(ctx context.Context, gate <-chan struct{}, bin, role, schema, prefix string) error {
	cmd := exec.CommandContext(ctx, bin, "-role", role, "-db", pgDSN, "-transport", "postgres",
		"-schema", schema, "-prefix", prefix, "-orders", "0", "-serve", "-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	<-gate
	if err := cmd.Start(); err != nil {
		return err
	}
	started := make(chan struct{})
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "orders example: role "+role) {
				close(started)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	select {
	case <-started:
		return nil
	case err := <-exited:
		exited <- err
		return fmt.Errorf("exited before it started (%v): %s", err, strings.TrimSpace(stderr.String()))
	case <-ctx.Done():
		return fmt.Errorf("did not start within the deadline: %s", strings.TrimSpace(stderr.String()))
	}
}
