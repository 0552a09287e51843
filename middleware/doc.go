// Package middleware holds the Watermill handler middleware an eda consumer
// needs to survive an at-least-once world: retries with backoff, a durable
// idempotent-consumer inbox, a poison queue with reasons, and the operational
// middleware (recovery, timeouts, logging, tracing, metrics, throttling).
//
// Each middleware is a message.HandlerMiddleware, usable on any transport
// and composable in eda.Config.Middleware.
package middleware
