// Package ops is what an operator does to a running eda system, without a
// consumer: read and act on dead-letter and poison queues (DLQ: peek, page,
// group by reason, redrive, discard; AWSDLQ on SQS, PostgresDLQ on the
// Postgres transport's tables), draw the topology with each queue's depth
// (Topology), tail a queue's events through a temporary queue (Watcher),
// and retry or discard failed outbox records (OutboxAll).
//
// edactl (its dlq, tail and outbox commands) and the console (package
// console) both call it, so there is one copy of the logic and the wire
// formats come from the transports themselves (aws.DecodeSQS and
// aws.EncodeSQS, postgres.DecodeMetadata and postgres.EncodeMetadata).
package ops
