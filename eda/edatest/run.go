package edatest

import (
	"context"
	"sync"
	"time"

	"github.com/edaproject/eda/eda"
)

// RunTimeout bounds how long Run waits for an app to be running.
const RunTimeout = 10 * time.Second

// Run runs app, on whatever transport it has, until the test ends or stop
// is called, and returns once every handler is subscribed. A Run error fails
// the test. Harness.Start uses it; call it for an app of your own (on
// Postgres or SNS/SQS, say).
func Run(t TB, app *eda.App) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("edatest: app.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-app.Running():
	case err := <-done:
		once.Do(cancel)
		t.Fatalf("edatest: app.Run: %v", err)
	case <-time.After(RunTimeout):
		t.Fatalf("edatest: app not running after %s", RunTimeout)
	}
	return stop
}
