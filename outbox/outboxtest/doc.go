// Package outboxtest is the conformance suite every outbox.Store runs
// (outboxtest.Run from the store's own test), plus the helpers it uses: an
// App with test events, and Sink, a recording message.Publisher that can
// play a broker that is down or rejects poison messages.
//
// The suite shows, rather than claims, the outbox guarantees: a rolled-back
// transaction publishes nothing; concurrent claims are disjoint; with 2 and 4
// relays every event arrives once and each ordering key in order; a broker
// outage delays but loses nothing while the lag rises and falls; a poison
// record is parked as failed with its reason, blocks only its own key, and
// can be retried or discarded; retention deletes only settled records.
package outboxtest
