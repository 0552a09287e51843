package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/middleware"
)

// syncBuffer is a bytes.Buffer safe for the handler goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) records(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(s.b.Bytes()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestLoggingOneRecordPerDelivery(t *testing.T) {
	tr := newTransport(t)
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	poisoned := subscribe(t, tr, poisonQueue, poisonTopic)
	stack, err := middleware.Default(middleware.Config{
		Logger: logger,
		Retry:  middleware.RetryConfig{MaxAttempts: 2, InitialInterval: time.Millisecond},
		Poison: &middleware.PoisonConfig{Publisher: tr, Topic: poisonTopic, MaxDeliveries: 2},
	})
	must(t, err)
	app := newApp(t, tr, nil, stack...)
	must(t, eda.Handle(app, "ok", func(ctx context.Context, e placed) error { return nil }))
	must(t, eda.Handle(app, "bad", func(ctx context.Context, e placed) error { return errors.New("db down") }))
	start(t, app)
	must(t, app.Publish(context.Background(), placed{ID: "1"}))
	receive(t, poisoned)
	drained(t, tr, "bad")
	drained(t, tr, "ok")
	byMsg := map[string][]map[string]any{}
	for _, r := range buf.records(t) {
		byMsg[r["msg"].(string)] = append(byMsg[r["msg"].(string)], r)
	}
	handled := byMsg["eda: message handled"]
	if len(handled) != 1 || handled[0]["queue"] != "ok" || handled[0]["level"] != "DEBUG" || handled[0]["event_type"] != "test.Placed" ||
		handled[0]["event_id"] == "" || handled[0]["correlation_id"] != handled[0]["event_id"] {
		t.Errorf("handled records %v", handled)
	}
	failed := byMsg["eda: handler failed"]
	if len(failed) != 1 || failed[0]["queue"] != "bad" || failed[0]["error"] != "db down" || failed[0]["attempts"] != 2.0 || failed[0]["receive_count"] != "1" {
		t.Errorf("failed records %v", failed)
	}
	if p := byMsg["eda: message poisoned"]; len(p) != 2 { // Poison's own Error record and Logging's Warn
		t.Errorf("poisoned records %v", p)
	}
	if r := byMsg["eda: handler failed, retrying"]; len(r) != 2 {
		t.Errorf("retry records %v", r)
	}
}
