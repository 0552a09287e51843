package eda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edaproject/eda/transport"
)

// DefaultHealthTimeout bounds one readiness check when HealthConfig.Timeout
// is zero.
const DefaultHealthTimeout = 2 * time.Second

// Names of the readiness checks the App runs itself.
const (
	// CheckTransport pings the transport (when it is a transport.Pinger).
	CheckTransport = "transport"
	// CheckSubscriptions: Run has subscribed every handler and none of the
	// subscriptions has ended.
	CheckSubscriptions = "subscriptions"
)

// HealthCheck is one readiness check: Check returns nil when ready. Its error
// is logged in full; the readiness body shows only a short reason (see
// Unhealthy).
type HealthCheck struct {
	// Name identifies the check in the readiness body. Required, unique.
	Name string
	// Check reports whether this part is ready. Required.
	Check func(ctx context.Context) error
}

// HealthConfig configures Ready and HealthHandler.
type HealthConfig struct {
	// Checks are readiness checks run besides the App's own
	// (CheckTransport, CheckSubscriptions): an outbox relay's lag, a
	// database the handlers need.
	Checks []HealthCheck
	// Timeout bounds each check. Default DefaultHealthTimeout.
	Timeout time.Duration
	// Logger receives the errors of failing checks. Nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c HealthConfig) Validate() error {
	var errs []error
	seen := map[string]bool{CheckTransport: true, CheckSubscriptions: true}
	for i, ch := range c.Checks {
		switch {
		case strings.TrimSpace(ch.Name) == "":
			errs = append(errs, fmt.Errorf("%w: health check %d has no name", ErrInvalidConfig, i))
		case seen[ch.Name]:
			errs = append(errs, fmt.Errorf("%w: health check %q twice (or a built-in name)", ErrInvalidConfig, ch.Name))
		}
		seen[ch.Name] = true
		if ch.Check == nil {
			errs = append(errs, fmt.Errorf("%w: health check %q: nil Check", ErrInvalidConfig, ch.Name))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%w: negative health Timeout %s", ErrInvalidConfig, c.Timeout))
	}
	return errors.Join(errs...)
}

// HealthError is a check failure whose Reason is safe to show in the
// readiness body as is. Build it with Unhealthy.
type HealthError struct{ Reason string }

func (e *HealthError) Error() string { return e.Reason }

// Unhealthy returns a check error whose message the readiness body shows
// ("outbox lag 12s over 5s"). Other errors show as a classified reason only
// (unavailable, timeout, closed, failed), so that no driver or database text
// reaches the probe's caller; they are logged in full.
func Unhealthy(format string, args ...any) error {
	return &HealthError{Reason: fmt.Sprintf(format, args...)}
}

// CheckResult is the outcome of one readiness check.
type CheckResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// HealthReport is the outcome of every readiness check.
type HealthReport struct {
	Ready  bool          `json:"ready"`
	Checks []CheckResult `json:"checks"`
}

// Failing returns the names of the failing checks.
func (r HealthReport) Failing() []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

// Live reports whether the app is alive: nil until Run returns (also before
// Run starts, while the process starts up), an error after.
func (a *App) Live() error {
	select {
	case <-a.done:
		return errors.New("eda: Run has returned")
	default:
		return nil
	}
}

// Ready runs the readiness checks at once, each bounded by cfg.Timeout:
// CheckSubscriptions, CheckTransport when the transport is a
// transport.Pinger, then cfg.Checks; the app is ready when every check
// passes. A check of an invalid cfg (HealthConfig.Validate) fails.
func (a *App) Ready(ctx context.Context, cfg HealthConfig) HealthReport {
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultHealthTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	checks := []HealthCheck{{Name: CheckSubscriptions, Check: a.checkSubscriptions}}
	if p, ok := a.cfg.Transport.(transport.Pinger); ok {
		checks = append(checks, HealthCheck{Name: CheckTransport, Check: p.Ping})
	}
	checks = append(checks, cfg.Checks...)

	rep := HealthReport{Ready: true, Checks: make([]CheckResult, len(checks))}
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var err error
			if c.Check == nil { // an invalid HealthConfig: fail, do not panic
				err = Unhealthy("check has no Check function")
			} else {
				err = c.Check(cctx)
			}
			rep.Checks[i] = CheckResult{Name: c.Name, OK: err == nil}
			if err != nil {
				rep.Checks[i].Reason = healthReason(cctx, err)
				log.Warn("eda: readiness check failed", "check", c.Name, "error", err)
			}
		}()
	}
	wg.Wait()
	for _, c := range rep.Checks {
		rep.Ready = rep.Ready && c.OK
	}
	return rep
}

func (a *App) checkSubscriptions(context.Context) error {
	select {
	case <-a.done:
		return Unhealthy("Run has returned")
	default:
	}
	select {
	case <-a.running:
	default:
		return Unhealthy("not subscribed yet")
	}
	a.mu.RLock()
	handlers := a.handlers
	a.mu.RUnlock()
	var stopped []string
	for name, h := range handlers {
		select {
		case <-h.Stopped():
			stopped = append(stopped, name)
		default:
		}
	}
	if len(stopped) > 0 {
		slices.Sort(stopped)
		return Unhealthy("subscription ended: %s", strings.Join(stopped, ", "))
	}
	return nil
}

// healthReason is what the readiness body says about err.
func healthReason(ctx context.Context, err error) string {
	var he *HealthError
	switch {
	case errors.As(err, &he):
		return he.Reason
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return "timeout"
	case errors.Is(err, transport.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, transport.ErrClosed):
		return "closed"
	}
	return "failed"
}

// HealthHandler serves the app's probes, for mounting on the service's own
// mux (mux.Handle("/healthz", h); mux.Handle("/readyz", h)):
//
//   - GET /healthz (liveness): 200 while the app is alive (Live), else 503;
//   - GET /readyz (readiness): runs Ready per request; 200 with a JSON
//     HealthReport listing every check when ready, else 503 with the same
//     body, whose failing checks carry their reason.
//
// Other paths are 404.
func HealthHandler(a *App, cfg HealthConfig) (http.Handler, error) {
	if a == nil {
		return nil, fmt.Errorf("%w: HealthHandler: nil App", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		body := struct {
			Live   bool   `json:"live"`
			Reason string `json:"reason,omitempty"`
		}{Live: true}
		status := http.StatusOK
		if err := a.Live(); err != nil {
			body.Live, body.Reason, status = false, "app stopped", http.StatusServiceUnavailable
		}
		writeJSON(w, status, body)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rep := a.Ready(r.Context(), cfg)
		status := http.StatusOK
		if !rep.Ready {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, rep)
	})
	return mux, nil
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
