package postgres

import "strconv"

// queries holds the SQL of one schema, built once in New.
type queries struct {
	insertPlainQueue, insertQueue, selectQueueForUpdate, upgradeQueue, insertSubscriptions string
	selectQueue, lockGroups, insertMessages, insertUngrouped, insertOne, notify, depth     string
	nextVisible, ack, nack, extend, release, deadLetter, cleanDedup                        string

	// claim and claimFIFO per batch size: BatchSize, times growth until
	// MaxBatchSize (see consumer.fetch).
	claim, claimFIFO []string
	sizes            []int
}

// growth is the factor between a consumer's successive batch sizes.
const growth = 10

func newQueries(schema string, batchSize, maxBatchSize int) queries {
	q := newFixedQueries(schema)
	for size := batchSize; ; size = min(growth*size, maxBatchSize) {
		claim, claimFIFO := claimQueries(schema, size)
		q.claim, q.claimFIFO = append(q.claim, claim), append(q.claimFIFO, claimFIFO)
		q.sizes = append(q.sizes, size)
		if size == maxBatchSize {
			return q
		}
	}
}

func newFixedQueries(schema string) queries {
	x := func(sql string) string { return expand(sql, schema) }
	return queries{
		insertPlainQueue: x(`
INSERT INTO {{schema}}.queues (name, fifo, visibility_timeout_us, max_receive_count, plain)
VALUES ($1, $2, $3, 0, true)
ON CONFLICT (name) DO NOTHING`),
		insertQueue: x(`
INSERT INTO {{schema}}.queues (name, fifo, visibility_timeout_us, max_receive_count, dead_letter_queue)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO NOTHING`),
		selectQueueForUpdate: x(`
SELECT fifo, visibility_timeout_us, max_receive_count, dead_letter_queue, plain
FROM {{schema}}.queues WHERE name = $1 FOR UPDATE`),
		upgradeQueue: x(`
UPDATE {{schema}}.queues
SET visibility_timeout_us = $2, max_receive_count = $3, dead_letter_queue = $4, plain = false
WHERE name = $1`),
		insertSubscriptions: x(`
INSERT INTO {{schema}}.subscriptions (topic, queue, fifo)
SELECT t, $1, $3 FROM unnest($2::text[]) AS t
ON CONFLICT DO NOTHING`),
		selectQueue: x(`
SELECT fifo, visibility_timeout_us, max_receive_count, coalesce(dead_letter_queue, '')
FROM {{schema}}.queues WHERE name = $1`),
		// Publishing: $1 topic; per message $2 uuid, $3 payload, $4 metadata,
		// $5 group id (NULL if none), $6 dedup id, $8 delivery delay in µs (0:
		// none); $7 dedup window in µs.
		//
		// lockGroups takes an advisory lock per (FIFO queue, group) the
		// messages go to, in one order for every publisher, so that a group's
		// rows are numbered in commit order.
		lockGroups: x(`
SELECT pg_advisory_xact_lock(k) FROM (
	SELECT DISTINCT hashtextextended($3 || '/' || s.queue || '/' || g, 0) AS k
	FROM {{schema}}.subscriptions s
	CROSS JOIN unnest($2::text[]) AS g
	WHERE s.topic = $1 AND s.fifo AND g IS NOT NULL
	ORDER BY k
) l`),
		// insertMessages writes one row per (message, subscribed queue), in
		// message order. A FIFO queue takes the group id (a message without
		// one fails the statement with SQLSTATE EDA01, so nothing is stored)
		// and the dedup id: the first row of each (queue, dedup id) claims it
		// in the dedup table, or takes over an expired claim; rows whose id is
		// taken are not inserted.
		insertMessages: x(`
WITH subs AS (
	SELECT s.queue, s.fifo FROM {{schema}}.subscriptions s WHERE s.topic = $1
), input AS (
	SELECT s.queue, m.uuid, m.payload, m.metadata,
		CASE WHEN s.fifo THEN coalesce(m.group_id, {{schema}}.missing_group(s.queue, m.uuid)) END AS group_id,
		CASE WHEN s.fifo THEN m.dedup_id END AS dedup_id,
		now() + m.delay_us * interval '1 microsecond' AS visible_at,
		row_number() OVER (ORDER BY m.ord, s.queue) AS ord
	FROM unnest($2::text[], $3::bytea[], $4::bytea[], $5::text[], $6::text[], $8::bigint[])
		WITH ORDINALITY AS m(uuid, payload, metadata, group_id, dedup_id, delay_us, ord)
	CROSS JOIN subs s
), firsts AS (
	SELECT DISTINCT ON (queue, dedup_id) queue, dedup_id, ord
	FROM input WHERE dedup_id IS NOT NULL
	ORDER BY queue, dedup_id, ord
), fresh AS (
	INSERT INTO {{schema}}.dedup AS d (queue, dedup_id, expires_at)
	SELECT queue, dedup_id, now() + $7::bigint * interval '1 microsecond' FROM firsts ORDER BY queue, dedup_id
	ON CONFLICT (queue, dedup_id) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE d.expires_at <= now()
	RETURNING d.queue, d.dedup_id
)
INSERT INTO {{schema}}.messages (queue, uuid, payload, metadata, group_id, visible_at)
SELECT i.queue, i.uuid, i.payload, i.metadata, i.group_id, i.visible_at
FROM input i
WHERE i.dedup_id IS NULL
   OR i.ord IN (SELECT f.ord FROM firsts f JOIN fresh r ON r.queue = f.queue AND r.dedup_id = f.dedup_id)
ORDER BY i.ord`),
		// notify wakes the consumers of the queues subscribed to topics $1.
		// insertUngrouped is insertMessages for messages without group ids,
		// the common case, in a cheaper statement: no FIFO queue can take
		// them, so there is no dedup id to check. $5 are the delivery delays
		// in µs.
		insertUngrouped: x(`
INSERT INTO {{schema}}.messages (queue, uuid, payload, metadata, group_id, visible_at)
SELECT s.queue, m.uuid, m.payload, m.metadata,
	CASE WHEN s.fifo THEN {{schema}}.missing_group(s.queue, m.uuid) END,
	now() + m.delay_us * interval '1 microsecond'
FROM unnest($2::text[], $3::bytea[], $4::bytea[], $5::bigint[]) WITH ORDINALITY AS m(uuid, payload, metadata, delay_us, ord)
CROSS JOIN {{schema}}.subscriptions s
WHERE s.topic = $1
ORDER BY m.ord, s.queue`),
		// insertOne is insertUngrouped for a single message: its values as
		// parameters instead of arrays, so the database neither unnests nor
		// sorts (a publish of one message is the common call).
		insertOne: x(`
INSERT INTO {{schema}}.messages (queue, uuid, payload, metadata, group_id, visible_at)
SELECT s.queue, $2, $3, $4,
	CASE WHEN s.fifo THEN {{schema}}.missing_group(s.queue, $2) END,
	now() + $5::bigint * interval '1 microsecond'
FROM {{schema}}.subscriptions s
WHERE s.topic = $1`),
		notify: x(`
SELECT pg_notify($2, queue)
FROM (SELECT DISTINCT queue FROM {{schema}}.subscriptions WHERE topic = ANY($1::text[])) s`),

		depth: x(`
SELECT EXISTS (SELECT 1 FROM {{schema}}.queues WHERE name = $1),
	count(*) FILTER (WHERE visible_at <= now()),
	count(*) FILTER (WHERE visible_at > now())
FROM {{schema}}.messages WHERE queue = $1`),

		// How long until the next lease of the queue expires (NULL: none
		// found). Leased rows are the oldest (received in id order), so the
		// first rows of the queue are enough; a lease or delay further back
		// (a delayed message behind a backlog) is picked up by the poll.
		nextVisible: x(`
SELECT extract(epoch FROM min(visible_at) - now())::float8
FROM (SELECT visible_at FROM {{schema}}.messages WHERE queue = $1 ORDER BY id LIMIT 1000) m
WHERE visible_at > now()`),

		// Settling checks the receipt (receive_count): a consumer whose lease
		// expired and whose message was received again cannot settle it.
		// $1 are ids, $2 the receive counts they were received with, $3 the
		// queue; nack's $4 the redelivery delays in µs (0: visible now).
		ack: x(`
DELETE FROM {{schema}}.messages m
WHERE m.queue = $3 AND m.id = ANY($1::bigint[])
  AND m.receive_count = ($2::integer[])[array_position($1::bigint[], m.id)]`),
		nack: x(`
UPDATE {{schema}}.messages m
SET visible_at = now() + ($4::bigint[])[array_position($1::bigint[], m.id)] * interval '1 microsecond'
WHERE m.queue = $3 AND m.id = ANY($1::bigint[])
  AND m.receive_count = ($2::integer[])[array_position($1::bigint[], m.id)]`),
		// The heartbeat: the lease of messages in handlers is renewed for $4
		// µs from now.
		extend: x(`
UPDATE {{schema}}.messages m SET visible_at = now() + $4::bigint * interval '1 microsecond'
WHERE m.queue = $3 AND m.id = ANY($1::bigint[])
  AND m.receive_count = ($2::integer[])[array_position($1::bigint[], m.id)]`),
		// Giving back messages received but never handed to a handler: they
		// were not really received, so the receive count is restored.
		release: x(`
UPDATE {{schema}}.messages m SET visible_at = now(), receive_count = m.receive_count - 1
WHERE m.queue = $3 AND m.id = ANY($1::bigint[])
  AND m.receive_count = ($2::integer[])[array_position($1::bigint[], m.id)]`),
		// Moving messages over MaxReceiveCount to the dead-letter queue, in
		// their order, as new rows (receive count 0) that remember the source.
		deadLetter: x(`
WITH moved AS (
	DELETE FROM {{schema}}.messages m
	WHERE m.queue = $4 AND m.id = ANY($1::bigint[])
	  AND m.receive_count = ($2::integer[])[array_position($1::bigint[], m.id)]
	RETURNING m.id, m.uuid, m.payload, m.metadata, m.group_id
)
INSERT INTO {{schema}}.messages (queue, uuid, payload, metadata, group_id, dead_letter_source)
SELECT $3, uuid, payload, metadata, group_id, $4 FROM moved ORDER BY id`),
		cleanDedup: x(`DELETE FROM {{schema}}.dedup WHERE expires_at < now()`),
	}
}

// claimQueries returns the receiving statements for batches of limit.
func claimQueries(schema string, limit int) (claim, claimFIFO string) {
	x := func(sql string) string { return expand(sql, schema) }
	lim := strconv.Itoa(limit)
	// Receiving leases up to limit visible messages for $2 µs,
	// oldest first, skipping rows another consumer is claiming right now.
	//
	// The statements run as prepared statements, and Postgres switches to
	// a generic plan after a few executions, costed for an average queue.
	// Every query here is shaped so that the generic plan is the index
	// plan whatever the table holds: a literal LIMIT (a LIMIT $n is costed
	// as thousands of rows, and the planner then hash-joins over a
	// sequential scan), the (queue, id) primary key as the only index in id
	// order (an index on id alone tempts the planner to walk it filtering
	// on queue: the whole table for an empty queue), queue = $n in every
	// statement that reads by index, and id = ANY(array) instead of joins
	// with unnest.
	// plan_test.go checks the plans.
	//
	// The update finds the rows it leases by the ctid of the version
	// locked (a TID scan) rather than by their key again (an index lookup
	// per row). A row updated by another transaction between this one's
	// snapshot and its lock is locked in its new version, which the
	// update's snapshot does not see: it is skipped, left visible for the
	// next receive.
	claim = x(`
UPDATE {{schema}}.messages m
SET receive_count = m.receive_count + 1, visible_at = now() + $2::bigint * interval '1 microsecond'
WHERE m.ctid = ANY(ARRAY(
	SELECT ctid FROM {{schema}}.messages
	WHERE queue = $1 AND visible_at <= now()
	ORDER BY id LIMIT ` + lim + `
	FOR UPDATE SKIP LOCKED))
RETURNING m.id, m.uuid, m.payload, m.metadata, m.receive_count, coalesce(m.dead_letter_source, '')`)

	// FIFO: only the head of a group (no older row of the group left,
	// visible or in flight) can be received, so a group has at most one
	// message in flight and is delivered in order. A row is deleted only
	// by ack or by moving to the dead-letter queue.
	claimFIFO = x(`
UPDATE {{schema}}.messages m
SET receive_count = m.receive_count + 1, visible_at = now() + $2::bigint * interval '1 microsecond'
WHERE m.ctid = ANY(ARRAY(
	SELECT h.ctid FROM {{schema}}.messages h
	WHERE h.queue = $1 AND h.visible_at <= now()
	  AND NOT EXISTS (
		SELECT 1 FROM {{schema}}.messages p
		WHERE p.queue = $1 AND p.group_id = h.group_id AND p.id < h.id)
	ORDER BY h.id LIMIT ` + lim + `
	FOR UPDATE SKIP LOCKED))
RETURNING m.id, m.uuid, m.payload, m.metadata, m.receive_count, coalesce(m.dead_letter_source, '')`)
	return claim, claimFIFO
}
