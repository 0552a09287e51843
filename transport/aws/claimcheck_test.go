package aws_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// testDSN is database test on 127.0.0.1:5432; EDA_TEST_POSTGRES_DSN
// overrides it.
func testDSN() string {
	if dsn := os.Getenv("EDA_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// blobStore returns a PostgresBlobStore in a fresh schema.
func blobStore(t *testing.T) *edaaws.PostgresBlobStore {
	t.Helper()
	ctx := testContext(t)
	pool, err := pgxpool.New(ctx, testDSN())
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("Postgres at %s: %v; start it with: scripts/postgres.sh", testDSN(), err)
	}
	t.Cleanup(pool.Close)
	schema := strings.ReplaceAll(uniq("claimcheck"), "-", "_")
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	store, err := edaaws.NewPostgresBlobStore(ctx, pool, schema+".blobs")
	if err != nil {
		t.Fatal(err)
	}
	return store
}

func TestClaimCheck(t *testing.T) {
	ctx := testContext(t)
	store := blobStore(t)
	cfg := testConfig(t)
	cfg.ClaimCheck.Store = store
	tr := newTransport(t, cfg)
	if got := tr.Features().MaxMessageSize; got != 0 {
		t.Errorf("Features.MaxMessageSize with a claim check = %d, want 0 (no limit)", got)
	}
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	big := newMsg("", map[string]string{"ce_type": "reports.Generated"})
	big.Payload = bytes.Repeat([]byte("0123456789"), 100*1024) // 1 MB
	small := newMsg("small", nil)
	if err := tr.Publish(topic, big, small); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for range 2 {
		m := receive(t, ch, "claim check")
		got[m.UUID] = len(m.Payload)
		if m.UUID == big.UUID && !bytes.Equal(m.Payload, big.Payload) {
			t.Errorf("big payload differs (%d bytes)", len(m.Payload))
		}
		if m.Metadata.Get("ce_type") != big.Metadata.Get("ce_type") && m.UUID == big.UUID {
			t.Errorf("metadata lost: %v", m.Metadata)
		}
		m.Ack()
	}
	if got[big.UUID] != len(big.Payload) || got[small.UUID] != len("small") {
		t.Errorf("received %v", got)
	}

	// Metadata alone over the limit still fails: only the payload is stored.
	huge := newMsg("x", map[string]string{"x-big": strings.Repeat("m", edaaws.MaxWireSize)})
	if err := tr.Publish(topic, huge); !errors.Is(err, transport.ErrMessageTooLarge) {
		t.Errorf("metadata over the limit: %v, want ErrMessageTooLarge", err)
	}

	// A pointer to a blob that is gone is delivered raw, marked.
	url, err := tr.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.SQS().SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: url.QueueUrl, MessageBody: awssdk.String("eda-claim-check:gone"),
		MessageAttributes: map[string]sqstypes.MessageAttributeValue{
			"eda_claimcheck": {DataType: awssdk.String("String"), StringValue: awssdk.String("gone")},
		},
	}); err != nil {
		t.Fatal(err)
	}
	gone := receive(t, ch, "pointer to a missing blob")
	if !strings.Contains(gone.Metadata.Get(edaaws.MetadataTransportError), "not found") {
		t.Errorf("missing blob: metadata %v, want %s naming it", gone.Metadata, edaaws.MetadataTransportError)
	}
	gone.Ack()

	// Expiry.
	n, err := store.DeleteBefore(ctx, time.Now().Add(time.Minute))
	if err != nil || n != 1 {
		t.Errorf("DeleteBefore: %d, %v; want 1 blob deleted", n, err)
	}
	if _, err := store.Get(ctx, "missing"); !errors.Is(err, edaaws.ErrBlobNotFound) {
		t.Errorf("Get of a missing key: %v, want ErrBlobNotFound", err)
	}
}

func TestTooLargeWithoutClaimCheck(t *testing.T) {
	tr := newTransport(t, testConfig(t))
	ctx := testContext(t)
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ok := newMsg("fine", nil)
	big := newMsg(strings.Repeat("b", edaaws.MaxMessageSize+1), nil)
	err := tr.Publish(topic, ok, big)
	if !errors.Is(err, transport.ErrMessageTooLarge) {
		t.Fatalf("Publish over the limit: %v, want ErrMessageTooLarge", err)
	}
	// Nothing was sent: every message is checked first.
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	marker := newMsg("marker", nil)
	if err := tr.Publish(topic, marker); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, "marker"); m.UUID != marker.UUID {
		t.Errorf("received %q before the marker: a batch with a too-large message was partly sent", m.Payload)
	}
}
