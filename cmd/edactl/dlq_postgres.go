package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/middleware"
	"github.com/edaproject/eda/transport"
	"github.com/edaproject/eda/transport/postgres"
)

// pgDLQ reads the Postgres transport's tables (transport/postgres
// schema.go): queues (dead_letter_queue names a queue's DLQ), subscriptions
// and messages (dead_letter_source: the queue a row was dead-lettered
// from). show only reads; redrive moves rows in one transaction.
type pgDLQ struct {
	pool   *pgxpool.Pool
	schema string
}

func newPGDLQ(ctx context.Context, pf pgFlags) (*pgDLQ, error) {
	pool, err := connectPostgres(ctx, pf.dsn)
	if err != nil {
		return nil, err
	}
	d := &pgDLQ{pool: pool, schema: pf.schema}
	if err := d.checkSchema(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}

func (d *pgDLQ) close() { d.pool.Close() }

// sql expands {{schema}} to the quoted schema.
func (d *pgDLQ) sql(q string) string {
	return strings.ReplaceAll(q, "{{schema}}", pgx.Identifier{d.schema}.Sanitize())
}

func (d *pgDLQ) checkSchema(ctx context.Context) error {
	var have int
	err := d.pool.QueryRow(ctx, d.sql(`SELECT coalesce(max(version), 0) FROM {{schema}}.schema_version`)).Scan(&have)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return fmt.Errorf("%w: schema %q has no eda transport tables (wrong -schema?)", postgres.ErrSchemaVersion, d.schema)
	}
	if err != nil {
		return fmt.Errorf("read the transport schema version: %w", err)
	}
	if have != postgres.SchemaVersion {
		return fmt.Errorf("%w: schema %q is at version %d, this edactl reads version %d", postgres.ErrSchemaVersion, d.schema, have, postgres.SchemaVersion)
	}
	return nil
}

func (d *pgDLQ) list(ctx context.Context, prefix string) ([]deadQueue, error) {
	rows, err := d.pool.Query(ctx, d.sql(`
SELECT q.name,
	coalesce((SELECT array_agg(s.name ORDER BY s.name) FROM {{schema}}.queues s WHERE s.dead_letter_queue = q.name), '{}')
FROM {{schema}}.queues q
WHERE starts_with(q.name, $1)
ORDER BY q.name`), prefix)
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	var out []deadQueue
	for rows.Next() {
		var q deadQueue
		if err := rows.Scan(&q.Queue, &q.Sources); err != nil {
			return nil, fmt.Errorf("list queues: %w", err)
		}
		switch {
		case len(q.Sources) > 0:
			q.Kind = kindDeadLetter
		case strings.Contains(q.Queue, "poison"):
			q.Kind = kindPoison
		case strings.HasSuffix(q.Queue, "-dlq"):
			q.Kind = kindNamed
		default:
			continue
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	// The depths as the transport's Inspector reads them, in one query.
	tr, err := postgres.New(ctx, postgres.Config{Pool: d.pool, Schema: d.schema})
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	names := make([]string, len(out))
	for i, q := range out {
		names[i] = q.Queue
	}
	depths, err := tr.QueueDepths(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("read queue depths: %w", err)
	}
	for i := range out {
		depth := depths[out[i].Queue]
		out[i].Messages, out[i].InFlight = depth.Visible, depth.InFlight
	}
	return out, nil
}

// queueFIFO tells whether queue is FIFO, or that it does not exist.
func (d *pgDLQ) queueFIFO(ctx context.Context, db pgxQuerier, queue string) (bool, error) {
	var fifo bool
	err := db.QueryRow(ctx, d.sql(`SELECT fifo FROM {{schema}}.queues WHERE name = $1`), queue).Scan(&fifo)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("%w: no queue %q in schema %s", transport.ErrUnknownQueue, queue, d.schema)
	}
	if err != nil {
		return false, fmt.Errorf("find queue %q: %w", queue, err)
	}
	return fifo, nil
}

type pgxQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (d *pgDLQ) peek(ctx context.Context, queue string, limit int) ([]deadMessage, error) {
	if _, err := d.queueFIFO(ctx, d.pool, queue); err != nil {
		return nil, err
	}
	rows, err := d.pool.Query(ctx, d.sql(`
SELECT m.id, m.payload, m.metadata, m.receive_count, coalesce(m.dead_letter_source, ''), m.published_at, m.visible_at > now(),
	coalesce(q.max_receive_count, 0)
FROM {{schema}}.messages m LEFT JOIN {{schema}}.queues q ON q.name = m.dead_letter_source
WHERE m.queue = $1 ORDER BY m.id LIMIT $2`), queue, limit)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", queue, err)
	}
	defer rows.Close()
	var out []deadMessage
	for rows.Next() {
		var (
			id       int64
			payload  []byte
			rawMD    []byte
			rc       int
			src      string
			at       time.Time
			inFlight bool
			maxRC    int
		)
		if err := rows.Scan(&id, &payload, &rawMD, &rc, &src, &at, &inFlight, &maxRC); err != nil {
			return nil, fmt.Errorf("read %s: %w", queue, err)
		}
		md, err := decodePGMetadata(rawMD)
		if err != nil {
			out = append(out, deadMessage{ID: strconv.FormatInt(id, 10), Error: "cannot decode: " + err.Error()})
			continue
		}
		m := newDeadMessage(strconv.FormatInt(id, 10), md, payload, src, maxRC)
		m.Enqueued = at.UTC().Format(time.RFC3339Nano)
		m.ReceiveCount = strconv.Itoa(rc)
		if inFlight {
			m.ReceiveCount += " (in flight now)"
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// redrive moves, in one transaction, the rows of queue that o selects among
// those there when it started (one statement's snapshot, and published_at
// no later than the transaction's start: a copy a consumer poisons again
// while the redrive runs is never read; rows someone holds under a lease are
// skipped). Nothing is written with -dry-run, and nothing at all
// if one selected message cannot be moved.
func (d *pgDLQ) redrive(ctx context.Context, queue string, o redriveOptions) (redriveResult, error) {
	var res redriveResult
	if _, err := d.queueFIFO(ctx, d.pool, queue); err != nil {
		return res, err
	}
	if o.to != "" {
		if _, err := d.queueFIFO(ctx, d.pool, o.to); err != nil {
			return res, fmt.Errorf("-to: %w", err)
		}
	}
	var ids []string
	for id := range o.ids {
		ids = append(ids, id)
	}
	notify := map[string]bool{}
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		res = redriveResult{}
		// Rows someone holds under a lease (a consumer of the DLQ) are left
		// alone, like SQS leaves invisible messages.
		rows, err := tx.Query(ctx, d.sql(`
SELECT m.id, m.uuid, m.payload, m.metadata, coalesce(m.group_id, ''), coalesce(m.dead_letter_source, ''), m.published_at,
	coalesce(q.max_receive_count, 0)
FROM {{schema}}.messages m LEFT JOIN {{schema}}.queues q ON q.name = m.dead_letter_source
WHERE m.queue = $1 AND m.visible_at <= now() AND m.published_at <= now() -- now(): when the transaction began
  AND ($2::text[] IS NULL OR m.uuid = ANY($2) OR m.id::text = ANY($2))
ORDER BY m.id
FOR UPDATE OF m SKIP LOCKED`), queue, ids)
		if err != nil {
			return fmt.Errorf("read %s: %w", queue, err)
		}
		type row struct {
			id                int64
			uuid, group, src  string
			payload, metadata []byte
			at                time.Time
			maxRC             int
		}
		var todo []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.uuid, &r.payload, &r.metadata, &r.group, &r.src, &r.at, &r.maxRC); err != nil {
				rows.Close()
				return fmt.Errorf("read %s: %w", queue, err)
			}
			todo = append(todo, r)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read %s: %w", queue, err)
		}
		fifo := map[string]bool{}
		for _, r := range todo {
			if o.limit > 0 && len(res.Moved) >= o.limit {
				break
			}
			id := strconv.FormatInt(r.id, 10)
			md, err := decodePGMetadata(r.metadata)
			if err != nil {
				return fmt.Errorf("message %s: %w", id, err)
			}
			m := newDeadMessage(id, md, r.payload, r.src, r.maxRC)
			m.Enqueued = r.at.UTC().Format(time.RFC3339Nano)
			if !o.selects(m) {
				continue
			}
			t, err := redriveTarget(r.src, md, o.to)
			if err != nil {
				return fmt.Errorf("message %s (event %s): %w", id, md.Get(transport.MetadataEventID), err)
			}
			outMD := redriveMetadata(m, r.src, r.maxRC)
			moved := movedMessage{ID: id, EventID: m.EventID, Type: m.Type, Reason: m.Reason, To: t.String()}
			moved.Redrives, _ = strconv.Atoi(outMD[middleware.MetadataPoisonRedrives])
			if o.dryRun {
				res.Moved = append(res.Moved, moved)
				continue
			}
			out := encodePGMetadata(outMD)
			group := groupID(r.group, md)
			if t.queue != "" {
				f, ok := fifo[t.queue]
				if !ok {
					if f, err = d.queueFIFO(ctx, tx, t.queue); err != nil {
						return fmt.Errorf("message %s: %w", id, err)
					}
					fifo[t.queue] = f
				}
				var g *string
				if f {
					if group == "" {
						return fmt.Errorf("%w: message %s: %s is FIFO and the message has no group id", transport.ErrMissingGroupID, id, t.queue)
					}
					g = &group
				}
				if _, err := tx.Exec(ctx, d.sql(`INSERT INTO {{schema}}.messages (queue, uuid, payload, metadata, group_id) VALUES ($1, $2, $3, $4, $5)`),
					t.queue, r.uuid, r.payload, out, g); err != nil {
					return fmt.Errorf("message %s: send to %s: %w", id, t, err)
				}
				notify[t.queue] = true
			} else {
				targets, err := tx.Query(ctx, d.sql(`
INSERT INTO {{schema}}.messages (queue, uuid, payload, metadata, group_id)
SELECT s.queue, $2, $3, $4, CASE WHEN q.fifo THEN $5 END
FROM {{schema}}.subscriptions s JOIN {{schema}}.queues q ON q.name = s.queue
WHERE s.topic = $1
RETURNING queue`), t.topic, r.uuid, r.payload, out, group)
				if err != nil {
					return fmt.Errorf("message %s: send to %s: %w", id, t, err)
				}
				queues, err := pgx.CollectRows(targets, pgx.RowTo[string])
				if err != nil {
					return fmt.Errorf("message %s: send to %s: %w", id, t, err)
				}
				if len(queues) == 0 {
					return fmt.Errorf("%w: message %s: %s has no subscribed queue", transport.ErrUnknownTopic, id, t)
				}
				for _, q := range queues {
					notify[q] = true
				}
			}
			if _, err := tx.Exec(ctx, d.sql(`DELETE FROM {{schema}}.messages WHERE queue = $1 AND id = $2`), queue, r.id); err != nil {
				return fmt.Errorf("message %s: delete from %s: %w", id, queue, err)
			}
			res.Moved = append(res.Moved, moved)
		}
		// Wake the consumers of the queues written to (the transport's
		// LISTEN channel, postgres.go channelName), at commit.
		channel := d.schema + "_messages"
		channel = channel[:min(len(channel), 63)]
		for q := range notify {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, q); err != nil {
				return fmt.Errorf("notify: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return redriveResult{}, fmt.Errorf("redrive rolled back, nothing moved: %w", err)
	}
	return res, nil
}
