// Package outbox is the transactional outbox: events are written in the
// caller's own database transaction and a relay publishes every committed
// event through an eda transport (or any Watermill publisher), even across
// crashes, broker outages and several relays running at once; a transaction
// that rolls back publishes nothing.
//
// # Writing
//
// A store writes events in the caller's transaction type:
// pgxstore.Store.Write takes a pgx.Tx (also one started from a pgxpool),
// pgxstore.Store.WriteSQL a database/sql transaction, pgxstore.Store.Queue
// adds the insert to the caller's pgx.Batch (one round trip for the business
// row and its events), and sqlitestore.Store.Write an SQLite *sql.Tx. Events
// are encoded by an Encoder, normally the *eda.App, so a stored record
// carries the whole eda envelope (id, type, schema version, source, time,
// correlation and causation ids, ordering key, dedup id) with
// its topic and payload, and any other metadata the message has (trace
// context, for example). The schema is created by each store's versioned
// Migrate, never at first use; the SQL is exported (Migrations) for those
// who run their own migration tool.
//
// # Relaying
//
// A Relay claims batches of records from a Store and publishes them, one
// Publish(topic, msgs...) per topic and batch. While a full batch is being
// published, each worker already claims the next (passing the first
// batch's records as ClaimRequest.InFlight) and marks the previous one, so
// the publisher is not left idle during claims and marks; the next batch
// is published only after the current one's Publish returned, without the
// records of any key the current batch did not publish whole. The
// guarantees:
//
//   - a record is marked published only after Publish returned nil; a relay
//     that dies in between leaves it to be published again (at least once;
//     consumers deduplicate on the event id);
//   - concurrent claims are disjoint (Postgres: FOR UPDATE SKIP LOCKED; SQLite:
//     in-process claim set), so N relays share the work;
//   - a record is only claimed when every older record of its ordering key
//     is settled or in the same claim, so a key is never published out of
//     order, whatever the number of relays; records without a key are not
//     ordered;
//   - a transient publish error (ErrUnavailable, throttling) backs the
//     record off exponentially; it delays only its own key;
//   - a permanent error (RelayConfig.Permanent: too large, unknown topic,
//     invalid...) moves the record to the Failed state with its reason; it
//     blocks its own key until Store.Retry or Store.Discard; nothing is
//     deleted silently;
//   - a delayed event (eda.At, eda.After) is stored with its due time
//     (Record.DeliverAt) and published no earlier: when the publisher delays
//     delivery (Features() with DelayedDelivery, e.g. SQS up to 15
//     minutes) the relay claims it up to MaxDeliveryDelay ahead and
//     publishes it with the remaining delay (transport.MetadataDeliverAt);
//     otherwise the outbox holds it until due (then within PollInterval)
//     and publishes it without. A publisher that refuses the delay
//     (transport.ErrDelayUnsupported: SNS FIFO topics) leaves it pending
//     until due, never failed for it. A delayed record is outside its
//     ordering key's order: it neither waits for older records of its key
//     nor holds back newer ones, since it is explicitly scheduled;
//   - published and discarded records are deleted after
//     RelayConfig.Retention;
//   - wake-up: the store's notification (Postgres LISTEN/NOTIFY, SQLite
//     data_version), with PollInterval polling as the fallback;
//   - Run returns nil once its context is cancelled and the claim in
//     progress is settled.
//
// Several relays are safe, not faster per key: a key's records go out one
// claim at a time, so when every batch spans most keys (a few hundred busy
// customers, say), separate relays mostly take turns. The workers of one
// relay do not (RelayConfig.Workers): with a PartitionedStore (pgxstore)
// each claims its own share of the keys, so they publish side by side; in
// cmd/outboxbench 4 workers keep up with 1 into a no-op sink and overlap
// their round trips into SNS. Run a second relay for availability.
//
// Where it departs from Watermill's components/forwarder, which this
// package does not build on: the forwarder consumes a watermill-sql
// subscription and forwards messages one at a time, so several forwarders
// either serialise on one consumer offset or would need consumer groups that
// each get every message; it has no per-key order across instances, no
// batch Publish, no per-message backoff (a failing message is nacked and
// blocks or spins its subscription), and no visible failed state.
//
// # Metrics
//
// Store.Stats gives the pending count, oldest pending record (Lag) and
// failed count; Relay.Stats the published, failed and retried counters and
// the published rate. Package outboxprom exports both to Prometheus.
//
// # Stores
//
// pgxstore (Postgres, pgx/v5) and sqlitestore (SQLite, pure Go) implement
// Store; both pass the shared suite in outboxtest.
package outbox
