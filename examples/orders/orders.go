package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/pgddl"
)

// maxOrderBody is the largest POST /orders body accepted.
const maxOrderBody = 64 << 10

// orderService accepts orders over HTTP and keeps their status.
type orderService struct {
	db  *db
	app *eda.App
	log *slog.Logger // nil: slog.Default()
}

// orderRequest is the body of POST /orders.
type orderRequest struct {
	ID         string `json:"id"` // optional; a retried request with the same id creates nothing new
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
}

// validate checks the request against the catalogue; decodeOrder checked
// the rest.
func (s *orderService) validate(ctx context.Context, req orderRequest) error {
	var problems []string
	for i, it := range req.Items {
		var one int
		err := s.db.QueryRowContext(ctx, s.db.q(`SELECT 1 FROM products WHERE sku = ?`), it.SKU).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			problems = append(problems, fmt.Sprintf("items[%d].sku: unknown product %q", i, it.SKU))
		} else if err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", errBadOrder, strings.Join(problems, "; "))
	}
	return nil
}

// placeOrder validates req and inserts the order and its OrderCreated event
// in one transaction. A known id returns the stored order (created false).
// req comes from decodeOrder.
func (s *orderService) placeOrder(ctx context.Context, req orderRequest) (id string, created bool, err error) {
	if err := s.validate(ctx, req); err != nil {
		return "", false, err
	}
	if req.ID == "" {
		req.ID = uuid.NewString()
	}
	items, _ := json.Marshal(req.Items)
	err = s.db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.q(`INSERT INTO orders (id, customer_id, items, status, created_at)
			VALUES (?, ?, ?, 'pending', ?) ON CONFLICT (id) DO NOTHING`),
			req.ID, req.CustomerID, string(items), time.Now().UnixNano())
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// Idempotent create: the order and its event exist, if
			// it is the same order.
			return s.sameOrder(ctx, tx, req)
		}
		created = true
		return s.db.write(ctx, tx, s.app, OrderCreated{OrderID: req.ID, CustomerID: req.CustomerID, Items: req.Items})
	})
	return req.ID, created, err
}

// sameOrder compares req with the stored order of the same id: a retry
// (same customer, same items in the same order) is fine; anything else is
// errOrderConflict naming what differs.
func (s *orderService) sameOrder(ctx context.Context, tx *sql.Tx, req orderRequest) error {
	var customer, items string
	err := tx.QueryRowContext(ctx, s.db.q(`SELECT customer_id, items FROM orders WHERE id = ?`), req.ID).Scan(&customer, &items)
	if err != nil {
		return err
	}
	var stored []Item
	if err := json.Unmarshal([]byte(items), &stored); err != nil {
		return fmt.Errorf("order %s: stored items: %w", req.ID, err)
	}
	var differs []string
	if customer != req.CustomerID {
		differs = append(differs, "another customer_id")
	}
	if !slices.Equal(stored, req.Items) {
		differs = append(differs, "other items")
	}
	if len(differs) > 0 {
		return fmt.Errorf("%w: order %q exists with %s; a new order needs a new id", errOrderConflict, req.ID, strings.Join(differs, " and "))
	}
	return nil
}

// ServeHTTP serves POST /orders and GET /orders/{id}.
func (s *orderService) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /orders", s.handlePost)
	mux.HandleFunc("GET /orders/{id}", s.handleGet)
}

func (s *orderService) handlePost(w http.ResponseWriter, r *http.Request) {
	// The raw bytes, not a decoder on the stream: decodeOrder checks them
	// before encoding/json rewrites invalid UTF-8.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOrderBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", tooBig.Limit))
			return
		}
		httpError(w, http.StatusBadRequest, "reading the body failed")
		return
	}
	req, err := decodeOrder(body)
	if err == nil {
		var id string
		var created bool
		if id, created, err = s.placeOrder(r.Context(), req); err == nil {
			status := http.StatusCreated
			if !created {
				status = http.StatusOK
			}
			writeJSON(w, status, map[string]any{"id": id, "created": created})
			return
		}
	}
	switch {
	case errors.Is(err, errBadRequest):
		httpError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, errBadOrder):
		httpError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, errOrderConflict):
		httpError(w, http.StatusConflict, err.Error())
	default:
		s.storeError(w, r, "place order", err)
	}
}

func (s *orderService) handleGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := checkText("id", id); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	var o struct {
		ID         string `json:"id"`
		CustomerID string `json:"customer_id"`
		Status     string `json:"status"`
		Reason     string `json:"reason,omitempty"`
	}
	err := s.db.QueryRowContext(r.Context(), s.db.q(`SELECT id, customer_id, status, reason FROM orders WHERE id = ?`),
		id).Scan(&o.ID, &o.CustomerID, &o.Status, &o.Reason)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		httpError(w, http.StatusNotFound, "no such order")
	case err != nil:
		s.storeError(w, r, "get order", err)
	default:
		writeJSON(w, http.StatusOK, o)
	}
}

// storeError answers a request the database failed: the error is logged,
// never sent (it may quote the request or the schema). 503 only when the
// database is unavailable (unreachable, closed, the request timed out):
// retrying later may work. Anything else is a bug or a broken schema: 500.
func (s *orderService) storeError(w http.ResponseWriter, r *http.Request, op string, err error) {
	down := s.unavailable(r.Context(), err)
	s.logger().ErrorContext(r.Context(), "orders: "+op+" failed", "method", r.Method, "path", r.URL.Path, "unavailable", down, "error", err)
	if down {
		httpError(w, http.StatusServiceUnavailable, "order store unavailable, retry later")
		return
	}
	httpError(w, http.StatusInternalServerError, "internal error (logged); nothing was stored")
}

// unavailable reports whether err means the database cannot be reached now
// rather than that it refused this statement.
func (s *orderService) unavailable(ctx context.Context, err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || pgddl.Unreachable(err) {
		return true
	}
	// A statement error from a database that still answers is not an
	// outage; one that no longer answers is.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	return s.db.PingContext(ctx) != nil
}

func (s *orderService) logger() *slog.Logger {
	if s.log != nil {
		return s.log
	}
	return slog.Default()
}

// onReserved and onRejected move an order to its final state. Both are
// idempotent by their WHERE clause; the inbox makes the redelivery a no-op
// before it gets there.
func (s *orderService) onReserved(ctx context.Context, tx *sql.Tx, e StockReserved) error {
	return s.finish(ctx, tx, e.OrderID, "reserved", "")
}

func (s *orderService) onRejected(ctx context.Context, tx *sql.Tx, e StockReservationFailed) error {
	return s.finish(ctx, tx, e.OrderID, "rejected", e.Reason)
}

func (s *orderService) finish(ctx context.Context, tx *sql.Tx, id, status, reason string) error {
	_, err := tx.ExecContext(ctx, s.db.q(`UPDATE orders SET status = ?, reason = ?, final_at = ? WHERE id = ? AND status = 'pending'`),
		status, reason, time.Now().UnixNano(), id)
	return err
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
