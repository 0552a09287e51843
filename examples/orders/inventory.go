package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/edaproject/eda/eda"
)

// inventoryService reserves stock for new orders in its own table.
type inventoryService struct {
	db  *db
	app *eda.App
}

// onOrderCreated reserves every item or none. The reservation and the event
// it publishes (through the outbox) commit with the inbox mark.
func (s *inventoryService) onOrderCreated(ctx context.Context, tx *sql.Tx, e OrderCreated) error {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT reserve`); err != nil {
		return err
	}
	var short []string
	for _, it := range e.Items {
		res, err := tx.ExecContext(ctx, s.db.q(`UPDATE products SET stock = stock - ? WHERE sku = ? AND stock >= ?`), it.Qty, it.SKU, it.Qty)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			short = append(short, it.SKU)
		}
	}
	status := "reserved"
	var out eda.Event = StockReserved{OrderID: e.OrderID, CustomerID: e.CustomerID}
	if len(short) > 0 {
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT reserve`); err != nil {
			return err
		}
		status = "rejected"
		out = StockReservationFailed{OrderID: e.OrderID, CustomerID: e.CustomerID,
			Reason: fmt.Sprintf("out of stock: %s", strings.Join(short, ", "))}
	}
	if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT reserve`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.db.q(`INSERT INTO reservations (order_id, status, created_at) VALUES (?, ?, ?)`),
		e.OrderID, status, time.Now().UnixNano()); err != nil {
		return err
	}
	return s.db.write(ctx, tx, s.app, out)
}

// notificationService records a notification per new order (a real one would
// send an e-mail; the row is what the summary and tests count).
type notificationService struct {
	db *db
}

func (s *notificationService) onOrderCreated(ctx context.Context, tx *sql.Tx, e OrderCreated) error {
	env, _ := eda.EnvelopeFromContext(ctx)
	_, err := tx.ExecContext(ctx, s.db.q(`INSERT INTO notifications (event_id, order_id, kind, created_at) VALUES (?, ?, 'order_received', ?)`),
		env.ID, e.OrderID, time.Now().UnixNano())
	return err
}
