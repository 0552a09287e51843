package main

// The events of the orders system. Each names itself with a stable wire name;
// OrderCreated's ordering key is the customer, so on FIFO queues one
// customer's orders are handled in the order they were placed.

// Item is one line of an order.
type Item struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// OrderCreated is published (through the outbox) when an order is accepted.
type OrderCreated struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Items      []Item `json:"items"`
}

// EventName is the wire name.
func (OrderCreated) EventName() string { return "orders.OrderCreated" }

// OrderingKey groups a customer's orders.
func (e OrderCreated) OrderingKey() string { return e.CustomerID }

// StockReserved is published by the inventory service when every item of an
// order was reserved.
type StockReserved struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
}

// EventName is the wire name.
func (StockReserved) EventName() string { return "inventory.StockReserved" }

// OrderingKey groups a customer's orders.
func (e StockReserved) OrderingKey() string { return e.CustomerID }

// StockReservationFailed is published by the inventory service when an
// order cannot be served; the order becomes rejected.
type StockReservationFailed struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Reason     string `json:"reason"`
}

// EventName is the wire name.
func (StockReservationFailed) EventName() string { return "inventory.StockReservationFailed" }

// OrderingKey groups a customer's orders.
func (e StockReservationFailed) OrderingKey() string { return e.CustomerID }

// Topics and queues of the system.
const (
	topicOrders    = "orders"           // OrderCreated
	topicInventory = "inventory-events" // StockReserved, StockReservationFailed
	topicPoison    = "orders-poison"    // what the poison middleware routes

	queueInventory    = "inventory"    // inventory service ← orders
	queueNotification = "notification" // notification service ← orders
	queueOrderStatus  = "order-status" // order service ← inventory-events
	queuePoison       = "orders-poison"
)
