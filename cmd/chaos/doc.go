// Command chaos is the fault harness of the orders system: it runs the
// example (examples/orders) as separate processes on Postgres and its own
// SNS/SQS emulator, drives orders over HTTP, injects faults on a seeded
// schedule and, at the end, checks what the databases and the broker hold.
//
// It has the Jepsen shape: a generator of operations (concurrent clients
// that place orders and retry them by order id until accepted), a nemesis
// (faults on a schedule drawn from -seed and printed at the start), a
// recorded history (what each client was told, and when) and a checker that
// judges the final state, never the logs.
//
// Per mode (standard and FIFO queues, one after the other) it starts:
//
//   - 2 order services (with their outbox relays), 2 inventory and 2
//     notification consumers, each a process of the built example;
//   - an in-process Toxiproxy with two proxies per process, one to
//     Postgres and one to the emulator, so a fault on a link hits one
//     process;
//   - the harness's own emulator (fauxqs, persistent: its state survives
//     the restart the nemesis does) on a free port; the shared one on 4566
//     is never touched.
//
// The faults (each bounded in time): SIGKILL of a service process (it is
// restarted, as a supervisor would), link cuts (the proxy closes every
// connection and refuses new ones), black holes (the proxy swallows the
// bytes), latency and bandwidth toxics, pg_terminate_backend of one
// process's connections, an emulator pause (SIGSTOP … SIGCONT), an emulator
// restart, and duplicate deliveries (published outbox records sent again,
// with the same event id).
//
// After the load, the faults stop and the harness waits (with a deadline)
// until the system is quiet, then checks: every accepted order reached its
// final state; every order has exactly one reservation and one notification;
// stock taken equals the quantities of the reserved orders; no outbox record
// pending or failed, one per effect; on FIFO, each customer's orders were
// handled in the order they were placed; the poison queue holds exactly the
// poison messages the harness injected, each with its reason; every work
// queue and DLQ is empty with nothing in flight; no process's resident
// memory grew from the first orders to the last. A violation fails the run
// and prints the order ids involved and the fault schedule; the same -seed
// draws the same schedule.
//
//	go run ./cmd/chaos -orders 3000            # make chaos-short
//	go run ./cmd/chaos -orders 100000          # make chaos
package main
