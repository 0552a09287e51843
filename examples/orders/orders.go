package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/edaproject/eda/eda"
)

// maxOrderBody is the largest POST /orders body accepted.
const maxOrderBody = 64 << 10

// orderService accepts orders over HTTP and keeps their status.
type orderService struct {
	db  *db
	app *eda.App
}

// orderRequest is the body of POST /orders.
type orderRequest struct {
	ID         string `json:"id"` // optional; a retried request with the same id creates nothing new
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
}

// errBadOrder is a client error: the message says what to fix.
var errBadOrder = errors.New("invalid order")

// validate checks the request against the catalogue.
func (s *orderService) validate(ctx context.Context, req orderRequest) error {
	var problems []string
	if strings.TrimSpace(req.CustomerID) == "" {
		problems = append(problems, "customer_id is required")
	}
	if len(req.Items) == 0 {
		problems = append(problems, "items: at least one item is required")
	}
	if len(req.Items) > 100 {
		problems = append(problems, "items: at most 100 items")
	}
	for i, it := range req.Items {
		if it.Qty <= 0 {
			problems = append(problems, fmt.Sprintf("items[%d]: qty must be positive, got %d", i, it.Qty))
		}
		if it.SKU == "" {
			problems = append(problems, fmt.Sprintf("items[%d]: sku is required", i))
			continue
		}
		var one int
		err := s.db.QueryRowContext(ctx, s.db.q(`SELECT 1 FROM products WHERE sku = ?`), it.SKU).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			problems = append(problems, fmt.Sprintf("items[%d]: unknown product %q", i, it.SKU))
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
			return nil // idempotent create: the order and its event exist
		}
		created = true
		return s.db.write(ctx, tx, s.app, OrderCreated{OrderID: req.ID, CustomerID: req.CustomerID, Items: req.Items})
	})
	return req.ID, created, err
}

// ServeHTTP serves POST /orders and GET /orders/{id}.
func (s *orderService) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /orders", s.handlePost)
	mux.HandleFunc("GET /orders/{id}", s.handleGet)
}

func (s *orderService) handlePost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxOrderBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields() // a typo in a field name is an error, not a silently ignored field
	var req orderRequest
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", tooBig.Limit))
		default:
			httpError(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		}
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		httpError(w, http.StatusBadRequest, "malformed JSON: data after the order object")
		return
	}
	id, created, err := s.placeOrder(r.Context(), req)
	switch {
	case errors.Is(err, errBadOrder):
		httpError(w, http.StatusUnprocessableEntity, err.Error())
		return
	case err != nil:
		// The database is down or failing: nothing was committed.
		httpError(w, http.StatusServiceUnavailable, "order store unavailable, retry later: "+err.Error())
		return
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]any{"id": id, "created": created})
}

func (s *orderService) handleGet(w http.ResponseWriter, r *http.Request) {
	var o struct {
		ID         string `json:"id"`
		CustomerID string `json:"customer_id"`
		Status     string `json:"status"`
		Reason     string `json:"reason,omitempty"`
	}
	err := s.db.QueryRowContext(r.Context(), s.db.q(`SELECT id, customer_id, status, reason FROM orders WHERE id = ?`),
		r.PathValue("id")).Scan(&o.ID, &o.CustomerID, &o.Status, &o.Reason)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		httpError(w, http.StatusNotFound, "no such order")
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, o)
	}
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
