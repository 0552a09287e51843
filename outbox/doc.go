// Package outbox is the transactional outbox: events are written in the
// caller's own database transaction and a relay publishes every committed
// event through an eda transport, even across crashes.
package outbox
