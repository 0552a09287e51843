package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, string(b)
}

// The order service serves /healthz, /readyz (with the outbox lag check)
// and /metrics (outbox and queue depths); readiness fails while the outbox
// lags behind a broker that is down, and recovers when it is back.
func TestOpsEndpoints(t *testing.T) {
	o := scenario(t, "memory")
	o.MaxOutboxLag, o.DepthInterval = 300*time.Millisecond, 50*time.Millisecond
	f := &flaky{}
	o.WrapPublisher = func(p message.Publisher) message.Publisher { f.Publisher = p; return f }
	s, err := start(context.Background(), o)
	must(t, err)
	defer s.stop()
	must(t, s.seed(context.Background()))
	base := "http://" + s.addr

	if code, body := get(t, base+"/healthz"); code != http.StatusOK || !strings.Contains(body, `"live":true`) {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	code, body := get(t, base+"/readyz")
	if code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	for _, c := range []string{`{"name":"subscriptions","ok":true}`, `{"name":"transport","ok":true}`, `{"name":"outbox","ok":true}`} {
		if !strings.Contains(body, c) {
			t.Errorf("/readyz body %s lacks %s", body, c)
		}
	}
	inventory := o.name(queueInventory)
	eventually(t, 5*time.Second, "/metrics shows the queue depths and the outbox", func() bool {
		_, m := get(t, base+"/metrics")
		return strings.Contains(m, `eda_queue_messages{queue="`+inventory+`",state="visible"}`) &&
			strings.Contains(m, `eda_queue_messages{queue="`+inventory+`-dlq",state="inflight"}`) &&
			strings.Contains(m, `eda_queue_oldest_message_age_seconds{queue="`+inventory+`"}`) &&
			strings.Contains(m, "eda_outbox_pending ")
	})

	f.down.Store(true)
	if code, body := rawPost(t, base+"/orders", `{"id":"o-lag","customer_id":"c","items":[{"sku":"sku-apple","qty":1}]}`); code != 201 {
		t.Fatalf("POST: %d %s", code, body)
	}
	eventually(t, 10*time.Second, "/readyz fails on the outbox lag", func() bool {
		code, body = get(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `{"name":"outbox","ok":false,"reason":"outbox lag `)
	})
	if !strings.Contains(body, `{"name":"subscriptions","ok":true}`) {
		t.Errorf("lagging: %s", body)
	}
	f.down.Store(false)
	eventually(t, 10*time.Second, "/readyz recovers once the relay publishes", func() bool {
		code, _ = get(t, base+"/readyz")
		return code == http.StatusOK
	})
	waitStatus(t, s, "o-lag", "reserved")
}
