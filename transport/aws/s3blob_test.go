package aws_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

const s3Prefix = "blobs/"

// s3Config returns a Config on the emulator with a claim check on a fresh
// bucket (path-style: fauxqs serves S3 on the SNS/SQS endpoint), which
// t.Cleanup empties and deletes.
func s3Config(t *testing.T) (edaaws.Config, *s3.Client) {
	t.Helper()
	cfg := testConfig(t)
	bucket := uniq("eda-cc")
	cfg.ClaimCheck = edaaws.ClaimCheckConfig{Bucket: bucket, Prefix: s3Prefix, UsePathStyle: true}
	client := s3.NewFromConfig(cfg.AWS, func(o *s3.Options) {
		o.BaseEndpoint = awssdk.String(cfg.Endpoint)
		o.UsePathStyle = true
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, k := range objects(t, client, bucket) {
			_, _ = client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &k})
		}
		_, _ = client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket})
	})
	return cfg, client
}

// objects lists the keys under s3Prefix; none when the bucket is missing.
func objects(t *testing.T, client *s3.Client, bucket string) []string {
	t.Helper()
	out, err := client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: awssdk.String(s3Prefix)})
	if err != nil {
		return nil
	}
	keys := make([]string, 0, len(out.Contents))
	for _, o := range out.Contents {
		keys = append(keys, awssdk.ToString(o.Key))
	}
	return keys
}

func eventMetadata() map[string]string {
	return map[string]string{
		"ce_type": "reports.Generated", "ce_source": "reports", "ce_specversion": "1.0",
		"ce_time": "2026-12-01T12:00:00.123456789Z", "ce_datacontenttype": "application/json",
		"ce_schemaversion": "1", "ce_correlationid": "c0ffee00-0000-7000-8000-000000000000",
	}
}

func TestS3ClaimCheck(t *testing.T) {
	ctx := testContext(t)
	cfg, client := s3Config(t)
	bucket := cfg.ClaimCheck.Bucket
	tr := newTransport(t, cfg)
	if got := tr.Features().MaxMessageSize; got != 0 {
		t.Errorf("Features.MaxMessageSize with a claim check = %d, want 0 (no limit)", got)
	}
	topic, queue := uniq("topic"), uniq("queue")
	// Declare with AutoCreate applies the topology: the bucket and its
	// lifecycle rule too.
	if err := tr.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	lc, err := client.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: &bucket})
	if err != nil {
		t.Fatalf("lifecycle of the claim-check bucket: %v", err)
	}
	if len(lc.Rules) != 1 || awssdk.ToString(lc.Rules[0].ID) != "eda-claim-check:"+s3Prefix ||
		lc.Rules[0].Filter == nil || awssdk.ToString(lc.Rules[0].Filter.Prefix) != s3Prefix ||
		lc.Rules[0].Expiration == nil || awssdk.ToInt32(lc.Rules[0].Expiration.Days) != 15 || lc.Rules[0].Status != "Enabled" {
		t.Errorf("lifecycle rules %+v, want one enabled rule expiring %s after 15 days", lc.Rules, s3Prefix)
	}
	// A second transport finds it done.
	if plan, err := newTransport(t, cfg).Plan(ctx, edaaws.Topology{}); err != nil || len(plan.Changes) != 0 {
		t.Errorf("Plan after Apply: %v, %v; want no changes", plan, err)
	}

	// The wire form of a message with this metadata: what the attributes
	// add to the body.
	probe := newMsg(strings.Repeat("x", 1000), eventMetadata())
	body, attrs, err := edaaws.EncodeSQS(probe, "")
	if err != nil {
		t.Fatal(err)
	}
	overhead := len(body) - len(probe.Payload)
	for k, v := range attrs {
		overhead += len(k) + len("String") + len(v)
	}

	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		size    int
		claimed bool
	}{
		{"255KiB", 255 * 1024, false},
		{"wire limit", edaaws.MaxWireSize - overhead, false},
		{"wire limit+1 (attributes count)", edaaws.MaxWireSize - overhead + 1, true},
		{"256KiB+1", 256*1024 + 1, true},
		{"5MiB", 5 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(objects(t, client, bucket))
			msg := newMsg("", eventMetadata())
			msg.Payload = bytes.Repeat([]byte("0123456789abcdef"), tc.size/16+1)[:tc.size]
			if err := tr.Publish(topic, msg); err != nil {
				t.Fatalf("Publish %d bytes: %v", tc.size, err)
			}
			if got := len(objects(t, client, bucket)) - before; got != map[bool]int{false: 0, true: 1}[tc.claimed] {
				t.Errorf("%d bytes: %d blobs stored, want claim check %t", tc.size, got, tc.claimed)
			}
			m := receive(t, ch, tc.name)
			defer m.Ack()
			if m.UUID != msg.UUID || !bytes.Equal(m.Payload, msg.Payload) {
				t.Fatalf("received %s with %d bytes, want %s with %d", m.UUID, len(m.Payload), msg.UUID, len(msg.Payload))
			}
			for k, v := range eventMetadata() {
				if m.Metadata.Get(k) != v {
					t.Errorf("metadata %s = %q, want %q", k, m.Metadata.Get(k), v)
				}
			}
			if e := m.Metadata.Get(edaaws.MetadataTransportError); e != "" {
				t.Errorf("transport error: %s", e)
			}
		})
	}

	// A pointer to a blob that is not in the bucket (expired) is delivered
	// raw, marked, not retried.
	url := queueURL(t, ctx, tr.SQS(), queue)
	if _, err := tr.SQS().SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl: &url, MessageBody: awssdk.String("eda-claim-check:expired"),
		MessageAttributes: map[string]sqstypes.MessageAttributeValue{
			"eda_claimcheck": {DataType: awssdk.String("String"), StringValue: awssdk.String("expired")},
		},
	}); err != nil {
		t.Fatal(err)
	}
	gone := receive(t, ch, "pointer to a missing blob")
	gone.Ack()
	if e := gone.Metadata.Get(edaaws.MetadataTransportError); !strings.Contains(e, "not found") || !strings.Contains(e, s3Prefix+"expired") {
		t.Errorf("missing blob: %s = %q, want it named not found", edaaws.MetadataTransportError, e)
	}
}

// A publish SNS refuses leaves no blob behind.
func TestS3ClaimCheckFailedPublish(t *testing.T) {
	ctx := testContext(t)
	big := func() *message.Message {
		m := newMsg("", eventMetadata())
		m.Payload = bytes.Repeat([]byte("b"), 300*1024)
		return m
	}

	t.Run("unknown topic", func(t *testing.T) {
		cfg, client := s3Config(t)
		cfg.AutoCreate = false
		tr := newTransport(t, cfg)
		if _, err := tr.Apply(ctx, edaaws.Topology{}); err != nil { // the bucket
			t.Fatal(err)
		}
		err := tr.Publish(uniq("nosuchtopic"), big())
		if !errors.Is(err, transport.ErrUnknownTopic) {
			t.Fatalf("Publish to a missing topic: %v, want ErrUnknownTopic", err)
		}
		if keys := objects(t, client, cfg.ClaimCheck.Bucket); len(keys) != 0 {
			t.Errorf("blobs left by a failed publish: %v", keys)
		}
	})

	// The topic is known to the transport (declared), then deleted: SNS
	// refuses the publish after the blob was stored.
	for _, tc := range []struct {
		name string
		msgs func() []*message.Message
	}{
		{"deleted topic, Publish", func() []*message.Message { return []*message.Message{big()} }},
		{"deleted topic, PublishBatch", func() []*message.Message { return []*message.Message{big(), newMsg("small", nil), big()} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, client := s3Config(t)
			tr := newTransport(t, cfg)
			topic := uniq("topic")
			if _, err := tr.Apply(ctx, edaaws.Topology{Topics: []edaaws.Topic{{Name: topic}}}); err != nil {
				t.Fatal(err)
			}
			arn := "arn:aws:sns:us-east-1:000000000000:" + topic
			if _, err := tr.SNS().DeleteTopic(ctx, &sns.DeleteTopicInput{TopicArn: &arn}); err != nil {
				t.Fatal(err)
			}
			if err := tr.Publish(topic, tc.msgs()...); !errors.Is(err, transport.ErrUnknownTopic) {
				t.Fatalf("Publish to a deleted topic: %v, want ErrUnknownTopic", err)
			}
			if keys := objects(t, client, cfg.ClaimCheck.Bucket); len(keys) != 0 {
				t.Errorf("blobs left by a failed publish: %v", keys)
			}
		})
	}
}

func TestClaimCheckConfigValidate(t *testing.T) {
	store := edaaws.NewS3BlobStore(nil, "b", "")
	for _, tc := range []struct {
		name string
		cc   edaaws.ClaimCheckConfig
		ok   bool
	}{
		{"off", edaaws.ClaimCheckConfig{}, true},
		{"bucket", edaaws.ClaimCheckConfig{Bucket: "acme-blobs", Expiration: 3 * 24 * time.Hour}, true},
		{"store", edaaws.ClaimCheckConfig{Store: store}, true},
		{"both", edaaws.ClaimCheckConfig{Bucket: "acme-blobs", Store: store}, false},
		{"prefix without bucket", edaaws.ClaimCheckConfig{Prefix: "x/"}, false},
		{"short bucket name", edaaws.ClaimCheckConfig{Bucket: "ab"}, false},
		{"part of a day", edaaws.ClaimCheckConfig{Bucket: "acme-blobs", Expiration: 36 * time.Hour}, false},
		{"negative", edaaws.ClaimCheckConfig{Bucket: "acme-blobs", Expiration: -24 * time.Hour}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := edaaws.Config{AWS: awsConfig(), ClaimCheck: tc.cc}
			err := cfg.Validate()
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, transport.ErrInvalidConfig)) {
				t.Errorf("Validate: %v, want ok=%t or ErrInvalidConfig", err, tc.ok)
			}
		})
	}
}

// Apply keeps the bucket's other lifecycle rules.
func TestS3LifecycleKeepsOtherRules(t *testing.T) {
	ctx := testContext(t)
	cfg, client := s3Config(t)
	bucket := cfg.ClaimCheck.Bucket
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	other := s3types.LifecycleRule{
		ID: awssdk.String("logs"), Status: s3types.ExpirationStatusEnabled,
		Filter:     &s3types.LifecycleRuleFilter{Prefix: awssdk.String("logs/")},
		Expiration: &s3types.LifecycleExpiration{Days: awssdk.Int32(90)},
	}
	if _, err := client.PutBucketLifecycleConfiguration(ctx, &s3.PutBucketLifecycleConfigurationInput{
		Bucket: &bucket, LifecycleConfiguration: &s3types.BucketLifecycleConfiguration{Rules: []s3types.LifecycleRule{other}},
	}); err != nil {
		t.Fatal(err)
	}
	cfg.ClaimCheck.Expiration = 3 * 24 * time.Hour
	tr := newTransport(t, cfg)
	plan, err := tr.Plan(ctx, edaaws.Topology{})
	if err != nil || len(plan.Changes) != 1 || plan.Changes[0].Action != edaaws.ActionPutLifecycle {
		t.Fatalf("Plan: %v, %v; want one %s", plan, err, edaaws.ActionPutLifecycle)
	}
	if _, err := tr.Apply(ctx, edaaws.Topology{}); err != nil {
		t.Fatal(err)
	}
	lc, err := client.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	days := map[string]int32{}
	for _, r := range lc.Rules {
		days[awssdk.ToString(r.ID)] = awssdk.ToInt32(r.Expiration.Days)
	}
	if len(days) != 2 || days["logs"] != 90 || days["eda-claim-check:"+s3Prefix] != 3 {
		t.Errorf("lifecycle rules after Apply: %v, want logs kept (90 days) and eda's (3 days)", days)
	}
}

// failingStore fails the Put after the first: the blob stored before it
// must not stay.
type failingStore struct {
	edaaws.BlobStore
	puts int
}

var errStoreDown = errors.New("store down")

func (s *failingStore) Put(ctx context.Context, key string, data []byte) error {
	if s.puts++; s.puts > 1 {
		return errStoreDown
	}
	return s.BlobStore.Put(ctx, key, data)
}

func TestClaimCheckPutFailsMidway(t *testing.T) {
	ctx := testContext(t)
	cfg, client := s3Config(t)
	bucket := cfg.ClaimCheck.Bucket
	if _, err := newTransport(t, cfg).Apply(ctx, edaaws.Topology{}); err != nil { // the bucket
		t.Fatal(err)
	}
	store := &failingStore{BlobStore: edaaws.NewS3BlobStore(client, bucket, s3Prefix)}
	cfg.ClaimCheck = edaaws.ClaimCheckConfig{Store: store}
	tr := newTransport(t, cfg)
	topic := uniq("topic")
	if _, err := tr.Apply(ctx, edaaws.Topology{Topics: []edaaws.Topic{{Name: topic}}}); err != nil {
		t.Fatal(err)
	}
	big := func() *message.Message {
		m := newMsg("", nil)
		m.Payload = bytes.Repeat([]byte("p"), 300*1024)
		return m
	}
	if err := tr.Publish(topic, big(), big()); !errors.Is(err, errStoreDown) {
		t.Fatalf("Publish with the second Put failing: %v, want %v", err, errStoreDown)
	}
	if store.puts != 2 {
		t.Fatalf("%d Puts, want 2", store.puts)
	}
	if keys := objects(t, client, bucket); len(keys) != 0 {
		t.Errorf("blob of the first message left: %v", keys)
	}
}
