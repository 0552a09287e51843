package aws_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	wmsns "github.com/ThreeDotsLabs/watermill-aws/sns"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

// TestWatermillPublisherInterop publishes with a plain watermill-aws SNS
// publisher (TopicArnMarshaler) and consumes with this transport: the UUID
// and metadata survive.
func TestWatermillPublisherInterop(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := wmsns.NewGenerateArnTopicResolver("000000000000", "us-east-1")
	if err != nil {
		t.Fatal(err)
	}
	ep := endpoint()
	newPub := func(m wmsns.Marshaler) *wmsns.Publisher {
		pub, err := wmsns.NewPublisher(wmsns.PublisherConfig{
			AWSConfig:                   awsConfig(),
			OptFns:                      []func(*sns.Options){func(o *sns.Options) { o.BaseEndpoint = &ep }},
			DoNotCreateTopicIfNotExists: true,
			TopicResolver:               resolver,
			Marshaler:                   m,
		}, watermill.NopLogger{})
		if err != nil {
			t.Fatal(err)
		}
		return pub
	}
	// The known difference: the default marshaler's TargetArn is refused.
	if err := newPub(nil).Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err == nil {
		t.Log("fauxqs now accepts TargetArn; TopicArnMarshaler is no longer needed for it")
	}
	sent := message.NewMessage(watermill.NewUUID(), []byte(`{"plain":"watermill"}`))
	sent.Metadata.Set("ce_type", "plain.Event")
	if err := newPub(edaaws.TopicArnMarshaler{}).Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	got := receive(t, ch, "from watermill-aws")
	if got.UUID != sent.UUID || string(got.Payload) != string(sent.Payload) || got.Metadata.Get("ce_type") != "plain.Event" {
		t.Errorf("got %s %q %v, want %s %q", got.UUID, got.Payload, got.Metadata, sent.UUID, sent.Payload)
	}
	got.Ack()
}

// TestStandardChain loads the SDK config the standard way (environment,
// shared files): the region and the endpoint (AWS_ENDPOINT_URL) come from
// there.
func TestStandardChain(t *testing.T) {
	ep := requireEmulator(t)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", empty)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_ENDPOINT_URL", ep)
	ctx := context.Background()

	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edaaws.New(edaaws.Config{AWS: cfg}); !errors.Is(err, edaaws.ErrMissingRegion) {
		t.Fatalf("New without a region in the chain: %v, want ErrMissingRegion", err)
	}

	t.Setenv("AWS_REGION", "us-east-1")
	cfg, err = config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTransport(t, edaaws.Config{AWS: cfg, AutoCreate: true}) // no Endpoint: from the chain
	topic, queue := uniq("topic"), uniq("queue")
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	sent := newMsg("chain", nil)
	if err := tr.Publish(topic, sent); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ch, "standard chain"); got.UUID != sent.UUID {
		t.Errorf("got %s, want %s", got.UUID, sent.UUID)
	} else {
		got.Ack()
	}
}
