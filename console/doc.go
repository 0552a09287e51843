// Package console is an operator console for an eda system, as an
// http.Handler: mount it in a service's own mux, behind its own auth (as
// River UI is mounted), or run it standalone with edactl serve.
//
//	h, err := console.New(ctx, console.Config{
//		Postgres: &console.PostgresConfig{Pool: pool, Schema: "eda_orders_transport"},
//		Outbox:   store, // an outbox.Store: pgxstore or sqlitestore
//	})
//	mux.Handle("/console/", http.StripPrefix("/console", auth(h)))
//
// Its pages, server-rendered HTML with the assets embedded in the binary:
//
//   - Overview (/): the topology as a graph (topics, the queues subscribed
//     to them, their dead-letter queues and the poison queue, as the broker
//     reports them), each queue's visible, in-flight and delayed counts and
//     the age of its oldest message, and the outbox's pending, lag and
//     failed records; refreshed every Config.Refresh, with anything that
//     needs attention marked (a dead-letter queue that is not empty, an
//     outbox lag over Config.MaxOutboxLag, failed outbox records).
//   - Dead letters (/dlq?queue=q): the messages of a dead-letter or poison
//     queue, paged, with their type, id, reason, error, handler, attempts,
//     failures and payload; grouped by reason; redrive to the source queue
//     or discard one, a selection, a group or all, after a confirmation that
//     says how many. Browsing consumes nothing; on SQS a peek receives the
//     messages and releases them at once, which counts a receive on each.
//   - Outbox (/outbox): failed records with their reasons; retry or discard
//     one, a selection or all.
//   - Tail (/tail?queue=q): a queue's events as they arrive, through a
//     temporary queue subscribed to its topics (server-sent events).
//
// Every state-changing request is a POST carrying a CSRF token (a cookie
// the form repeats) from the same origin; Config.ReadOnly refuses them all.
// Each action is logged with slog: what, how many, from where. The
// dead-letter and outbox logic is internal/ops, which edactl calls too.
package console
