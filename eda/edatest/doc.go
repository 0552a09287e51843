// Package edatest runs a service's eda handlers in a test, on the memory
// transport, Postgres or SNS/SQS, and asserts what was published, handled,
// failed and dead-lettered, waiting on signals instead of sleeping:
//
//	h := edatest.New(t, edatest.Config{})
//	eda.Register[OrderCreated](h.App, "orders")
//	eda.Handle(h.App, "inventory", reserveStock)
//	h.Start()
//	h.Publish(OrderCreated{ID: "o-1"})
//	h.WaitHandled("inventory", 1)
//	edatest.RequirePublished[StockReserved](t, h, 1)
//
// The same test body runs on every transport. Config.Transport chooses one;
// when it is empty the environment does: EDA_TEST_TRANSPORT=memory (the
// default), postgres or aws:
//
//	go test ./...                             # memory
//	EDA_TEST_TRANSPORT=postgres go test ./... # Postgres at EDA_TEST_POSTGRES_DSN
//	EDA_TEST_TRANSPORT=aws go test ./...      # SNS/SQS at EDA_AWS_ENDPOINT
//
// Each harness gets its own isolation, removed by t.Cleanup: a fresh memory
// transport, a Postgres schema (edatest_<id>), or a name prefix
// (edatest-<id>-) on every SNS/SQS topic and queue, so tests run in parallel
// with the same names. When the server is absent the test fails with the
// command that starts it (StartPostgres, StartEmulator). Each runs a body on
// every transport as subtests.
//
// The recorders are decorators, so they see the same on every transport:
// Harness.Publisher (the app's publisher) records what is published, a
// handler middleware records what was handled and failed, and the
// dead-letter queues of declared queues, plus poison messages published on
// Harness.Publisher, are what was dead-lettered.
//
// For code that builds its own system (its own transport from a name prefix
// or schema), NewEnv gives the isolated place alone, and Run runs an
// eda.App until the test ends.
package edatest
