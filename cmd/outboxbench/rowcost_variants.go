package main

import (
	"context"
	"maps"

	"github.com/jackc/pgx/v5"

	"github.com/edaproject/eda/outbox"
	"github.com/edaproject/eda/transport"
)

// rowCostExtra are the rowcost phase's candidate rows: the outbox row with
// one thing changed each (statement form, metadata type and content,
// indexes), and the 2-column row padded to the outbox row's size.
func rowCostExtra(schema string, record func(context.Context, OrderPlaced) (outbox.Record, error)) []rowVariant {
	const cols = "event_id, topic, payload, metadata, ordering_key, dedup_id, deliver_at"
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
		return []any{r.EventID, r.Topic, r.Payload, raw, r.OrderingKey, r.DedupID, nil}, nil
	}
	plain := func(table string, trim bool) func(context.Context, *pgx.Batch, OrderPlaced) error {
		return func(ctx context.Context, bt *pgx.Batch, e OrderPlaced) error {
			a, err := args(ctx, e, trim)
			if err != nil {
				return err
			}
			bt.Queue("INSERT INTO "+table+" ("+cols+") VALUES ($1, $2, $3, $4, $5, $6, $7)", a...)
			return nil
		}
	}
	like := func(t, extra string) string {
		return "CREATE TABLE " + schema + "." + t + " (LIKE " + schema + ".rc_current INCLUDING ALL); " + extra
	}
	return []rowVariant{
		{name: "2-column row padded to the outbox row's size", queue: func(_ context.Context, bt *pgx.Batch, e OrderPlaced) error {
			bt.Queue("INSERT INTO order_lines_wide (customer, amount, pad) VALUES ($1, $2, $3)", e.Customer, e.Amount, widePad)
			return nil
		}},
		{name: "PK only", setup: like("rc_pk", "DROP INDEX "+schema+".rc_pk_id_idx; DROP INDEX "+schema+".rc_pk_ordering_key_id_idx; DROP INDEX "+schema+".rc_pk_published_at_idx; DROP INDEX "+schema+".rc_pk_deliver_at_id_idx"), queue: plain("rc_pk", false)},
		{name: "current schema, plain INSERT (no CTE)", queue: plain("rc_current", false)},
		{name: "current schema, plain INSERT, metadata without ce_id/partitionkey", queue: plain("rc_current", true)},
		{name: "metadata text", setup: like("rc_text", "ALTER TABLE "+schema+".rc_text ALTER COLUMN metadata TYPE text"), queue: plain("rc_text", false)},
		{name: "metadata bytea", setup: like("rc_bytea", "ALTER TABLE "+schema+".rc_bytea ALTER COLUMN metadata TYPE bytea USING convert_to(metadata::text, 'UTF8')"), queue: plain("rc_bytea", false)},
		{name: "PK + pending index only", setup: like("rc_pkpend", "DROP INDEX "+schema+".rc_pkpend_ordering_key_id_idx; DROP INDEX "+schema+".rc_pkpend_published_at_idx; DROP INDEX "+schema+".rc_pkpend_deliver_at_id_idx"), queue: plain("rc_pkpend", false)},
		{name: "pending index only (no PK)", setup: like("rc_pend", "ALTER TABLE "+schema+".rc_pend DROP CONSTRAINT rc_pend_pkey; DROP INDEX "+schema+".rc_pend_ordering_key_id_idx; DROP INDEX "+schema+".rc_pend_published_at_idx; DROP INDEX "+schema+".rc_pend_deliver_at_id_idx"), queue: plain("rc_pend", false)},
	}
}
