// Package eda declares typed events and handlers and runs them on any
// transport.
//
// An event is a plain struct that names itself with an EventName method (and,
// optionally, SchemaVersion and OrderingKey). An App maps each event type to
// the topic it is published on (Register), binds typed handlers
// func(ctx, E) error to queues (Handle), publishes typed events (Publish) and
// runs the handlers on a Watermill Router until its context is cancelled
// (Run).
//
// Delayed delivery: Publish(ctx, After(d, e)) or At(t, e) delivers e no
// earlier than the given time (transport.MetadataDeliverAt) where the
// publisher can delay (transport.Features.DelayedDelivery, up to
// MaxDeliveryDelay), and fails with transport.ErrDelayUnsupported before
// publishing anything where it cannot. Written to an outbox, the same
// wrappers are held by the outbox until due, whatever the transport.
//
// Every message carries an envelope in its metadata whose keys map one to one
// onto CloudEvents 1.0 attributes (see the Metadata* constants), so that a
// consumer written in another language can read eda events from the same
// queue. The handled message's envelope travels in the handler's context:
// events published from a handler inherit its correlation id and take its
// event id as their causation id.
//
// Bad input never panics and is never dropped silently: an unknown event
// type, an undecodable payload or an unsupported schema version fail the
// message with an error that matches ErrUnknownEvent, ErrDecode or
// ErrSchemaVersion and is marked permanent (IsPermanent), which the poison
// middleware routes with its reason.
//
// HealthHandler serves an App's liveness (/healthz: Run has not returned)
// and readiness (/readyz: subscribed, the transport answers its Ping, and
// any extra checks, such as an outbox's lag, pass) for a service's own mux.
package eda
