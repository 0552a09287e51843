// Package inbox makes eda consumers idempotent: a durable record, per
// consumer, of the event ids (eda.MetadataID, CloudEvents "id") already
// processed, so that a duplicate delivery — SQS standard queues deliver at
// least once — does not repeat the effect.
//
// Two modes:
//
//   - Same transaction (package inbox/pgstore, pgstore.Tx): the handler gets
//     a pgx.Tx in which its own writes and the inbox mark commit together.
//     A duplicate finds the mark and is skipped; a concurrent duplicate
//     blocks on the mark's unique index until the first commits, then skips.
//     The effect happens exactly once, even if the process dies between
//     commit and ack. Use it whenever the effect is in the same Postgres
//     database.
//   - Standalone (New, with a Store: Memory or pgstore.Store): for effects
//     outside the database (an HTTP call, an email). The middleware claims
//     the event with a lease before calling the handler, marks it done after
//     success and releases the claim when the handler fails, so a
//     redelivery of a failed message runs again. Concurrent duplicates see
//     the claim and are retried later. A crash after the effect but before
//     the mark leaves a claim that expires after its lease, and the event
//     runs again: at least once, with the duplicate window narrowed to that
//     crash.
//
// Unlike Watermill's Deduplicator, which records a payload hash in process
// memory before the handler runs (so a failed handler's redelivery is
// dropped, and a restart forgets everything), the mark is durable, keyed on
// the event id, and recorded only with or after the effect.
//
// Marks are kept until Expire (or RunExpiry) deletes them: keep them longer
// than any duplicate can arrive (the SQS retention period, 4 days by
// default, is safe).
package inbox
