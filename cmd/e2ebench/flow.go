package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
)

// What both builds share: the events, the tables, the handlers' SQL and
// the HTTP front. Only the plumbing between them differs.

// Item is one line of an order.
type Item struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// OrderCreated is written with the order, in its transaction.
type OrderCreated struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
}

// EventName implements eda.Event.
func (OrderCreated) EventName() string { return "orders.OrderCreated" }

// StockReserved is published by the inventory handler when every item was
// reserved.
type StockReserved struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
}

// EventName implements eda.Event.
func (StockReserved) EventName() string { return "inventory.StockReserved" }

// StockReservationFailed is published by the inventory handler when an
// item is out of stock.
type StockReservationFailed struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Reason     string `json:"reason"`
}

// EventName implements eda.Event.
func (StockReservationFailed) EventName() string { return "inventory.StockReservationFailed" }

// Topics and queues of the flow; each build prefixes them.
const (
	topicOrders       = "orders"
	topicInventory    = "inventory-events"
	topicPoison       = "poison"
	queueInventory    = "inventory"
	queueNotification = "notification"
	queueOrderStatus  = "order-status"
	queuePoison       = "poison"
)

// Products: skus SKUs with plenty of stock, and one that is sold out, so
// that some orders take the rejected path.
const (
	skus       = 1000
	soldOutSKU = "sold-out"
)

// createTables creates schema with the flow's tables and fills products.
// The stock build's processed_events table is its idempotency record; the
// eda build's inbox table is created by pgstore.Migrate.
func createTables(ctx context.Context, conn *pgx.Conn, schema string) error {
	_, err := conn.Exec(ctx, fmt.Sprintf(`CREATE SCHEMA %[1]s;
		CREATE TABLE %[1]s.orders (
			id text PRIMARY KEY,
			customer_id text NOT NULL,
			items jsonb NOT NULL,
			status text NOT NULL,
			reason text NOT NULL DEFAULT '',
			created_at timestamptz NOT NULL DEFAULT now(),
			final_at timestamptz
		);
		CREATE TABLE %[1]s.products (sku text PRIMARY KEY, stock bigint NOT NULL CHECK (stock >= 0));
		CREATE TABLE %[1]s.reservations (order_id text PRIMARY KEY, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE %[1]s.notifications (event_id text PRIMARY KEY, order_id text NOT NULL, kind text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE %[1]s.processed_events (consumer text NOT NULL, event_id text NOT NULL, processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, event_id));
		INSERT INTO %[1]s.products SELECT 'sku-' || g, 1000000000000 FROM generate_series(1, %[2]d) g;
		INSERT INTO %[1]s.products VALUES ('%[3]s', 0)`, schema, skus, soldOutSKU))
	return err
}

// The handlers' SQL, the same in both builds.
const (
	sqlInsertOrder = `INSERT INTO orders (id, customer_id, items, status) VALUES ($1, $2, $3, 'pending')`
	// sqlReserve takes every item or none, in one statement.
	sqlReserve = `WITH want AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS w(sku, qty)),
		ok AS (SELECT count(*) = (SELECT count(*) FROM want) AS all_ok FROM products p JOIN want w USING (sku) WHERE p.stock >= w.qty)
		UPDATE products p SET stock = p.stock - w.qty FROM want w, ok WHERE p.sku = w.sku AND ok.all_ok`
	sqlReservation = `INSERT INTO reservations (order_id, status) VALUES ($1, $2)`
	sqlNotify      = `INSERT INTO notifications (event_id, order_id, kind) VALUES ($1, $2, 'order_received')`
	sqlFinish      = `UPDATE orders SET status = $1, reason = $2, final_at = now() WHERE id = $3 AND status = 'pending'`
)

// reserve is the inventory handler's effect: it reserves e's items (all or
// none), records the reservation and returns the event to publish, which
// the caller writes to its outbox in the same transaction.
func reserve(ctx context.Context, tx pgx.Tx, e OrderCreated) (reserved bool, reason string, err error) {
	skus := make([]string, len(e.Items))
	qtys := make([]int64, len(e.Items))
	for i, it := range e.Items {
		skus[i], qtys[i] = it.SKU, int64(it.Qty)
	}
	tag, err := tx.Exec(ctx, sqlReserve, skus, qtys)
	if err != nil {
		return false, "", err
	}
	status := "reserved"
	if tag.RowsAffected() != int64(len(e.Items)) {
		status, reason = "rejected", "out of stock"
	}
	if _, err := tx.Exec(ctx, sqlReservation, e.OrderID, status); err != nil {
		return false, "", err
	}
	return status == "reserved", reason, nil
}

// notify is the notification handler's effect.
func notify(ctx context.Context, tx pgx.Tx, eventID string, e OrderCreated) error {
	_, err := tx.Exec(ctx, sqlNotify, eventID, e.OrderID)
	return err
}

// finish is the order-status handler's effect: the order's final state.
func finish(ctx context.Context, tx pgx.Tx, id, status, reason string) error {
	_, err := tx.Exec(ctx, sqlFinish, status, reason, id)
	return err
}

// orderRequest is the body of POST /orders. The load generator picks the
// id, so that it can match the final state to the request.
type orderRequest struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
}

var errBadOrder = errors.New("invalid order")

// orderHandler is the HTTP front of both builds: POST /orders decodes the
// order and calls place, which commits the order and its event.
func orderHandler(place func(context.Context, orderRequest, []byte) error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req orderRequest
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, "malformed JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		if req.ID == "" || req.CustomerID == "" || len(req.Items) == 0 {
			http.Error(w, errBadOrder.Error()+": id, customer_id and items are required", http.StatusUnprocessableEntity)
			return
		}
		items, _ := json.Marshal(req.Items)
		if err := place(r.Context(), req, items); err != nil {
			http.Error(w, "order store unavailable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	return mux
}

// settleTimeout bounds the cleanup calls.
const settleTimeout = 30 * time.Second
