package main

import (
	"context"
	"maps"

	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/transport"
)

// rowCostExtra are the rowcost phase's candidate rows: the outbox row in a
// fresh table with one thing changed each (metadata type, columns,
// defaults), the current one with less metadata, and the 2-column row
// padded to the outbox row's size.
func rowCostExtra(schema string, record func(context.Context, OrderPlaced) (outbox.Record, error)) []rowVariant {
	args := func(ctx context.Context, e OrderPlaced, trim bool) ([]any, error) {
		r, err := record(ctx, e)
		if err != nil {
			return nil, err
		}
		md := r.Metadata
		if trim {
			md = maps.Clone(md)
			delete(md, transport.MetadataEventID)
			delete(md, transport.MetadataGroupID)
		}
		raw, err := outbox.MarshalMetadata(md)
		if err != nil {
			return nil, err
		}
		return []any{r.EventID, r.Topic, r.Payload, raw, r.OrderingKey, r.DedupID}, nil
	}
	// slim: a hot table holding only what the writer inserts, PK only.
	slim := func(t, mdType, extra string) string {
		return "CREATE TABLE " + schema + "." + t + ` (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id text NOT NULL, topic text NOT NULL, payload bytea NOT NULL,
	metadata ` + mdType + ` NOT NULL, ordering_key text NOT NULL, dedup_id text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), attempts integer` + extra + `)`
	}
	slimQueue := func(table string) func(context.Context, *pgx.Batch, OrderPlaced) error {
		return func(ctx context.Context, bt *pgx.Batch, e OrderPlaced) error {
			a, err := args(ctx, e, false)
			if err != nil {
				return err
			}
			bt.Queue("INSERT INTO "+table+" (event_id, topic, payload, metadata, ordering_key, dedup_id) VALUES ($1, $2, $3, $4, $5, $6)", a...)
			return nil
		}
	}
	return []rowVariant{
		{name: "slim hot table, PK only, jsonb", setup: slim("rc_slim_jsonb", "jsonb", ""), queue: slimQueue("rc_slim_jsonb")},
		{name: "slim hot table, PK only, text", setup: slim("rc_slim_text", "text", ""), queue: slimQueue("rc_slim_text")},
		{name: "slim hot table, PK only, bytea", setup: slim("rc_slim_bytea", "bytea", ""), queue: slimQueue("rc_slim_bytea")},
		{name: "slim hot table, text, 4 columns", setup: "CREATE TABLE " + schema + `.rc_slim4 (
	id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, topic text NOT NULL, payload bytea NOT NULL,
	metadata text NOT NULL, ordering_key text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), attempts integer)`, queue: func(ctx context.Context, bt *pgx.Batch, e OrderPlaced) error {
			a, err := args(ctx, e, false)
			if err != nil {
				return err
			}
			bt.Queue("INSERT INTO rc_slim4 (topic, payload, metadata, ordering_key) VALUES ($1, $2, $3, $4)", a[1], a[2], a[3], a[4])
			return nil
		}},
		{name: "2-column row padded to the outbox row's size", queue: func(_ context.Context, bt *pgx.Batch, e OrderPlaced) error {
			bt.Queue("INSERT INTO order_lines_wide (customer, amount, pad) VALUES ($1, $2, $3)", e.Customer, e.Amount, widePad)
			return nil
		}},
		{name: "current schema, plain INSERT, metadata without ce_id/partitionkey", queue: func(ctx context.Context, bt *pgx.Batch, e OrderPlaced) error {
			a, err := args(ctx, e, true)
			if err != nil {
				return err
			}
			bt.Queue("INSERT INTO rc_current (event_id, topic, payload, metadata, ordering_key, dedup_id) VALUES ($1, $2, $3, $4, $5, $6)", a...)
			return nil
		}},
		{name: "slim hot table, attempts NOT NULL DEFAULT 0", setup: slim("rc_slim_def", "jsonb", " NOT NULL DEFAULT 0"), queue: slimQueue("rc_slim_def")},
	}
}
