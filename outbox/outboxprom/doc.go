// Package outboxprom exports an outbox's metrics to Prometheus: pending
// count, oldest pending age (the outbox lag), failed count, and the relays'
// published, failed and retried counters. The same figures are available
// without Prometheus from outbox.Store.Stats and outbox.Relay.Stats.
package outboxprom
