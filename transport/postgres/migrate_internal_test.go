package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// A schema at each older version moves to SchemaVersion; the messages
// stored under it (a leased one, a visible one) are still delivered, and
// the messages table has the fillfactor of version 2 and subscriptions know
// which queues are FIFO.
func TestMigrateFromOlderVersions(t *testing.T) {
	// From 1 at least: with version 2 gone, New accepts version 1 and the
	// test fails.
	for from := 1; from < max(SchemaVersion, 2); from++ {
		t.Run(fmt.Sprintf("v%d", from), func(t *testing.T) { testMigrateFrom(t, from) })
	}
}

func testMigrateFrom(t *testing.T, from int) {
	ctx := context.Background()
	pool, schema := internalSchema(t, "eda_pgtest_migrate_")

	// The schema as that version's Migrate left it, with two messages
	// written the way that version's code wrote them.
	old := versionTableSQL(schema)
	for v := 1; v <= from; v++ {
		old += expand(migrations[v-1], schema) + fmt.Sprintf("\nINSERT INTO %s.schema_version (version) VALUES (%d);\n", quote(schema), v)
	}
	old += expand(`
INSERT INTO {{schema}}.queues (name, fifo, visibility_timeout_us, max_receive_count) VALUES ('q', false, 200000, 0), ('f', true, 200000, 0);
INSERT INTO {{schema}}.subscriptions (topic, queue) VALUES ('t', 'q'), ('tf', 'f');
INSERT INTO {{schema}}.messages (queue, uuid, payload, metadata, receive_count, visible_at)
VALUES ('q', 'leased', 'a', '', 1, now() + interval '100 milliseconds'), ('q', 'visible', 'b', '', 0, now());`, schema)
	if _, err := pool.Exec(ctx, old); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Pool: pool, Schema: schema}
	if _, err := New(ctx, cfg); err == nil {
		t.Fatalf("New on a schema at version %d: no error, want ErrSchemaVersion", from)
	}
	if err := Migrate(ctx, cfg); err != nil {
		t.Fatalf("Migrate from version %d: %v", from, err)
	}
	var version int
	var options, fifo []string
	if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT (SELECT max(version) FROM %[1]s.schema_version),
		(SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = '%[1]s.messages'::regclass),
		(SELECT array_agg(queue || '=' || fifo ORDER BY queue) FROM %[1]s.subscriptions)`, quote(schema))).Scan(&version, &options, &fifo); err != nil {
		t.Fatal(err)
	}
	if version != SchemaVersion || fmt.Sprint(options) != "[fillfactor=50]" || fmt.Sprint(fifo) != "[f=true q=false]" {
		t.Errorf("after Migrate from %d: version %d, messages options %v, subscriptions %v; want %d, [fillfactor=50], [f=true q=false]",
			from, version, options, fifo, SchemaVersion)
	}

	tr, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Publish("t", message.NewMessage("new", []byte("c"))); err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish("tf", message.NewMessage("no group", []byte("d"))); !errors.Is(err, transport.ErrMissingGroupID) {
		t.Errorf("publish without a group id to the FIFO queue subscribed before the migration: %v, want ErrMissingGroupID", err)
	}
	subCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ch, err := tr.Subscribe(subCtx, "q")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for len(got) < 3 {
		select {
		case m := <-ch:
			got[m.UUID] = m.Metadata.Get(transport.MetadataReceiveCount)
			m.Ack()
		case <-subCtx.Done():
			t.Fatalf("after Migrate from %d: received %v, want leased, visible and new", from, got)
		}
	}
	if want := map[string]string{"leased": "2", "visible": "1", "new": "1"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after Migrate from %d: received with receive counts %v, want %v", from, got, want)
	}
}
