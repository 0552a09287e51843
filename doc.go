// Package eda is the documentation of the module github.com/edaproject/eda:
// it holds no code and is not imported. The library's packages and their
// import paths:
//
//	github.com/edaproject/eda/eda                  typed events, handlers, the envelope, the App
//	github.com/edaproject/eda/eda/edatest          test harness: the same test on memory, Postgres or SNS/SQS
//	github.com/edaproject/eda/transport            the transport contract; Adapt for any Watermill Pub/Sub
//	github.com/edaproject/eda/transport/memory     in-process transport with SNS/SQS semantics
//	github.com/edaproject/eda/transport/postgres   durable transport on PostgreSQL
//	github.com/edaproject/eda/transport/aws        SNS topics fanning out to SQS queues
//	github.com/edaproject/eda/transport/transporttest  the conformance suite every transport passes
//	github.com/edaproject/eda/transport/transportprom  Prometheus collector of queue depths
//	github.com/edaproject/eda/middleware           retry, redelivery, poison queue, timeout, logging, tracing, metrics
//	github.com/edaproject/eda/middleware/inbox/... idempotent handlers (pgstore, sqlstore)
//	github.com/edaproject/eda/outbox               transactional outbox and relay (pgxstore, sqlitestore)
//	github.com/edaproject/eda/cmd/edactl           the operator's CLI
//	github.com/edaproject/eda/examples/orders      the orders system, end to end
//
// A first program:
//
//	import (
//		"github.com/edaproject/eda/eda"
//		"github.com/edaproject/eda/transport/memory"
//	)
//
//	tr, _ := memory.New(memory.Config{})
//	app, _ := eda.New(eda.Config{Transport: tr, Source: "orders-service"})
//
// The first build downloads and compiles the dependencies (Watermill, the AWS
// SDK, pgx, SQLite): a few minutes on a fresh machine.
package eda
