// Package postgres is an eda transport on PostgreSQL: the durable transport
// for tests and small deployments, with the semantics of SNS→SQS that
// transport/memory models and the transport conformance suite checks.
//
// # Model
//
// Declare records a queue, its dead-letter queue and its topic
// subscriptions in tables. Publish writes one row per subscribed queue, for
// every message, in one transaction (PublishTx writes them in the caller's
// own pgx.Tx, so events commit or roll back with the business data).
// Consumers of a queue compete for its rows with FOR UPDATE SKIP LOCKED;
// the consumers of a queue within one Transport share one stream of
// receives (one query at a time, into a batch each takes its next message
// from), so that they do not contend with each other on the server.
// Receiving a row leases it: visible_at moves one visibility timeout ahead and
// receive_count grows by one (delivered as transport.MetadataReceiveCount).
// Ack deletes the row; nack makes it visible again at once, or after the
// message's transport.RedeliveryDelay; a consumer that dies simply lets the
// lease run out, and the row is delivered again. While a handler holds a
// message its consumer renews the lease every third of the visibility
// timeout (heartbeat), so handlers may run longer than the timeout. A message
// published with transport.MetadataDeliverAt in the future is stored with
// visible_at at that time (any delay; on a FIFO queue it holds back the rest
// of its group). Delays are visible_at too, so they survive restarts; neither
// delay key is stored or delivered. A row
// received more than the queue's MaxReceiveCount times moves to the
// dead-letter queue, with transport.MetadataDeadLetterSource set. On a FIFO
// queue only the oldest row of each message group can be received, so a group
// has one message in flight and keeps its order; deduplication ids
// (transport.DedupID) are remembered for Config.DedupWindow. Receiving from a
// FIFO queue walks the queue in order past the rows of groups that have a
// message in flight, so its cost grows with the backlog of those groups:
// fine for tests and small deployments, not for millions of queued FIFO
// messages.
//
// Consumers wake on LISTEN/NOTIFY when messages are published, poll every
// Config.PollInterval in case a notification was lost, and wake when the
// earliest lease of their queue expires. Acks and nacks are written with the
// consumer's next receive query (or within a quarter of the visibility
// timeout, at most 50ms), so a consumer costs about one round trip per batch
// of Config.BatchSize messages, or up to Config.MaxBatchSize while its
// handlers finish a batch faster than the database answers a query. That consumer-side bookkeeping commits with
// synchronous_commit off: a database crash can undo the last leases, acks and
// nacks, which only means a message is delivered again. Publishing commits
// synchronously.
//
// Behind a connection pooler in transaction mode (PgBouncer) LISTEN does not
// work: set Config.DisableNotify and a short PollInterval. Postgres
// serializes the commits of transactions that NOTIFY, so Publish sends its
// NOTIFY after the publishing transaction has committed, coalescing the
// topics published meanwhile into one statement; PublishTx has to NOTIFY
// inside the caller's transaction.
//
// # Schema
//
// Nothing is created at first use. Run Migrate (versioned, idempotent,
// safe to run concurrently) before New, or apply SchemaSQL with your own
// migration tool and record the version; New fails with ErrSchemaVersion
// otherwise. Everything lives in one Postgres schema (Config.Schema), so
// several independent transports can share a database.
//
// # Why not watermill-sql's queue schema
//
// watermill-sql v4 (PostgreSQLQueueSchema with PostgreSQLQueueOffsetsAdapter)
// keeps one table per topic with an acked flag. Its subscriber selects rows
// FOR UPDATE (without SKIP LOCKED) and holds that transaction, its row locks
// and a pooled connection open while the handler runs: competing consumers
// of a queue wait for each other, a long handler pins a connection, and there
// is no visibility timeout, receive count, dead-letter queue, FIFO group or
// deduplication, and no fan-out from a topic to several queues. Extending it
// would mean replacing its select, ack and schema queries, that is all of it,
// so this package writes its own tables and claiming queries with pgx v5
// (about as much SQL as the adapters it would replace) and keeps a lease
// instead of an open transaction per message.
package postgres
