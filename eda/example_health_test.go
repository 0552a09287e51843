package eda_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport/memory"
)

// Serve liveness and readiness next to the service's API, with an extra
// readiness check.
func ExampleHealthHandler() {
	tr, _ := memory.New(memory.Config{})
	defer tr.Close()
	app, _ := eda.New(eda.Config{Transport: tr})
	_ = eda.Register[OrderCreated](app, "orders")
	_ = eda.Handle(app, "inventory", func(context.Context, OrderCreated) error { return nil })

	lagging := true
	health, _ := eda.HealthHandler(app, eda.HealthConfig{Checks: []eda.HealthCheck{{
		Name: "outbox",
		Check: func(context.Context) error {
			if lagging {
				return eda.Unhealthy("outbox lag 40s over 30s")
			}
			return nil
		},
	}}})
	mux := http.NewServeMux()
	mux.Handle("/healthz", health)
	mux.Handle("/readyz", health)
	get := func(path string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Print(rec.Code, " ", rec.Body.String())
	}

	get("/readyz") // before Run
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- app.Run(ctx) }()
	<-app.Running()
	get("/readyz")
	lagging = false
	get("/readyz")
	get("/healthz")
	stop()
	<-done
	get("/healthz")
	// Output:
	// 503 {"ready":false,"checks":[{"name":"subscriptions","ok":false,"reason":"not subscribed yet"},{"name":"transport","ok":true},{"name":"outbox","ok":false,"reason":"outbox lag 40s over 30s"}]}
	// 503 {"ready":false,"checks":[{"name":"subscriptions","ok":true},{"name":"transport","ok":true},{"name":"outbox","ok":false,"reason":"outbox lag 40s over 30s"}]}
	// 200 {"ready":true,"checks":[{"name":"subscriptions","ok":true},{"name":"transport","ok":true},{"name":"outbox","ok":true}]}
	// 200 {"live":true}
	// 503 {"live":false,"reason":"app stopped"}
}
