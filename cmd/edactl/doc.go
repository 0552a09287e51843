// Command edactl is the operator's tool for systems built on eda: it applies
// the SNS/SQS topology, prints least-privilege IAM policies, inspects and
// repairs the outbox, looks into dead-letter and poison queues, moves their
// messages back, and watches events arrive on a queue.
//
//	edactl topology plan  -f topology.json [-aws-endpoint URL]
//	edactl topology apply -f topology.json
//	edactl iam -f topology.json [-service name] -account 123456789012 -region eu-west-1
//	edactl iam -f topology.json -role deploy|operator|relay
//	edactl outbox status  -db postgres://... [-schema s -table t]   (or -db path/to/app.db for SQLite)
//	edactl outbox failed | retry [seq...|-all] | discard [seq...|-all]
//	edactl dlq list       -transport aws|postgres
//	edactl dlq show  -queue inventory-dlq [-n 20]
//	edactl dlq redrive -queue inventory-dlq [event-id...] [-type t] [-reason r] [-since 1h] [-until t] [-to queue] [-n count] [-dry-run]
//	edactl tail -queue inventory [-topic t] [-n count]
//
// Every command prints a human-readable table, or JSON with -o json (tail
// prints one JSON object per line). Bad input exits with status 2 and says
// what is wrong; an unreachable server or a failed operation exits with 1.
//
// # Topology file
//
// topology plan|apply and iam read a JSON file (see
// testdata/orders-topology.json, the examples/orders system):
//
//	{
//	  "topics":   [{"name": "orders", "fifo": false}],
//	  "queues":   [{"name": "inventory", "topics": ["orders"], "fifo": false,
//	                "visibilityTimeout": "30s", "maxReceiveCount": 5,
//	                "deadLetterQueue": "inventory-dlq",
//	                "filterPolicies": {"orders": {"ce_type": ["orders.OrderCreated"]}}}],
//	  "services": [{"name": "inventory", "publishes": ["inventory-events"],
//	                "consumes": ["inventory"], "readDeadLetters": false}]
//	}
//
// Unknown fields are errors. visibilityTimeout is a Go duration ("30s") or a
// number of seconds; deadLetterQueue defaults to name + "-dlq" when
// maxReceiveCount is set; filterPolicies map some of the queue's topics to
// an SNS filter policy on the message attributes (the eda envelope: ce_type,
// ce_source...). -prefix puts a prefix before every topic and queue name
// (several environments in one account).
//
// # IAM
//
// iam prints, for each service of the file's "services" section, the
// least-privilege policy of transport/aws ServicePolicy: publish to its
// topics, consume its queues. -role deploy prints what topology apply needs
// (create and configure topics, queues, subscriptions; delete nothing);
// -role operator what dlq and tail need (read, redrive and send on the
// topology's queues, publish to its topics, and create and delete tail's
// edactl-tail-* queues); -role relay what an outbox relay draining the
// services' shared outbox needs (publish to every topic they publish to).
// IAM authorizes Unsubscribe on the subscription's topic, so it cannot be
// limited to tail's own subscriptions: the operator role may unsubscribe
// any subscription of the topology's topics.
//
// # Dead letters
//
// A dead-letter queue is a queue another queue's redrive policy (SQS
// maxReceiveCount; the Postgres transport's MaxReceiveCount) moves messages
// to; a poison queue receives what the poison middleware
// (middleware.Poison) routes, with the reason in the metadata. dlq list shows
// both (and any queue whose name contains "poison" or ends in "-dlq"). dlq
// show peeks without consuming: on SQS it receives with a visibility timeout
// (-visibility) and makes the messages visible again at once, which counts as
// a receive (a dead-letter queue has no redrive policy of its own, so this is
// harmless); on Postgres it only reads the transport's tables.
//
// The operator owns these queues, through edactl: nothing in eda (nor the
// examples) consumes or acknowledges a dead-letter or poison queue, so a
// message stays there until dlq redrive moves it.
//
// dlq redrive sends each message back where it came from (the dead-letter
// source queue, else the poison metadata's queue, else its topic, or -to)
// and deletes it from the dead-letter queue only once the send succeeded (on
// Postgres, all in one transaction). It is bounded: it moves only what was
// in the queue when it started (on SQS a SentTimestamp no later than its
// start and each message id once; on Postgres one snapshot), so a consumer
// that poisons the message again does not make it loop; messages it
// received and did not move are made visible again as soon as it is done.
// It moves what the event ids given as arguments, -type, -reason (permanent,
// retries_exhausted, max_receive_count) and -since/-until (on the last
// failure time; for a message the broker moved, its enqueue time) select,
// all of them by default, at most -n; -dry-run lists what would move. It
// prints how many went to each target; a selection that matches nothing
// prints "0 moved" and exits 0; a -to queue that does not exist is an error
// and moves nothing.
//
// The redriven message loses the last round's poison metadata and the
// transport's bookkeeping, and carries its history: the first failure
// (middleware.MetadataPoisonFirstFailure), the deliveries so far
// (MetadataPoisonTotalDeliveries; for a message the broker moved, the source
// queue's max receive count is added) and the redrive count
// (MetadataPoisonRedrives, incremented). When it is poisoned again the poison
// middleware keeps the first failure, adds up the deliveries and carries the
// redrive count, and dlq show prints them.
//
// # tail
//
// tail never takes messages from the queue it watches: it creates a
// temporary queue subscribed to the same topics (with the same filter
// policies on SNS), prints what arrives, and deletes the temporary queue
// when it stops (Ctrl-C, -n messages, or -for elapsed).
package main
