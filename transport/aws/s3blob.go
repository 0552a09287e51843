package aws

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/edaproject/eda/transport"
)

// Defaults of ClaimCheckConfig.
const (
	// DefaultClaimCheckPrefix is the key prefix of the blobs in the bucket.
	DefaultClaimCheckPrefix = "eda-claim-check/"
	// DefaultClaimCheckExpiration is how long S3 keeps a blob: one day over
	// the longest SQS retention (14 days), so a message never outlives its
	// payload.
	DefaultClaimCheckExpiration = 15 * 24 * time.Hour
)

// Actions of a Plan on the claim-check bucket.
const (
	ActionCreateBucket Action = "create-bucket"
	ActionPutLifecycle Action = "put-bucket-lifecycle"
)

// ClaimCheckConfig configures the claim check: Publish stores the payload of
// a message too large for SNS/SQS (its wire form over MaxWireSize, the
// attributes included) in a blob store, sends a pointer instead, and the
// subscriber fetches the payload back before delivering. Set Bucket (S3) or
// Store (any BlobStore, e.g. PostgresBlobStore), not both; neither leaves the
// claim check off.
//
// A blob is written before its message is published; when the publish fails
// for sure (SNS refused it: unknown topic, an entry of a batch failed, a 4xx
// answer), the blob is deleted. A publish whose outcome is unknown (a
// timeout, a 5xx, a crash between the two) keeps its blob, which expires:
// on S3 by the lifecycle rule Plan and Apply put on Prefix (Declare too,
// with AutoCreate); a Store expires its own blobs
// (PostgresBlobStore.DeleteBefore).
type ClaimCheckConfig struct {
	// Bucket is the S3 bucket of the blobs (an S3BlobStore on the
	// transport's AWS config and Endpoint). Plan and Apply create it when
	// missing and keep a lifecycle rule on Prefix that expires blobs after
	// Expiration.
	Bucket string
	// Prefix of the blobs' object keys in Bucket. Default
	// DefaultClaimCheckPrefix.
	Prefix string
	// Expiration is how long S3 keeps a blob, in whole days (S3 lifecycle
	// rules count days). It must exceed the retention of every queue that
	// may receive the pointer, dead-letter queues included; a redrive later
	// than that delivers the message with MetadataTransportError. Default
	// DefaultClaimCheckExpiration.
	Expiration time.Duration
	// UsePathStyle addresses the bucket in the URL path
	// (http://endpoint/bucket/key) instead of the host name, as emulators
	// and S3-compatible stores on a plain host or IP need (fauxqs, MinIO).
	UsePathStyle bool
	// Store is a BlobStore to use instead of S3.
	Store BlobStore
}

func (c ClaimCheckConfig) enabled() bool { return c.Bucket != "" || c.Store != nil }

// Validate reports every problem with c, joined.
func (c ClaimCheckConfig) Validate() error {
	var errs []error
	if c.Bucket != "" && c.Store != nil {
		errs = append(errs, fmt.Errorf("%w: aws: ClaimCheck: both Bucket and Store set", transport.ErrInvalidConfig))
	}
	if c.Bucket == "" && (c.Prefix != "" || c.Expiration != 0 || c.UsePathStyle) {
		errs = append(errs, fmt.Errorf("%w: aws: ClaimCheck: Prefix, Expiration and UsePathStyle need a Bucket", transport.ErrInvalidConfig))
	}
	if n := len(c.Bucket); c.Bucket != "" && (n < 3 || n > 63) {
		errs = append(errs, fmt.Errorf("%w: aws: ClaimCheck: bucket name %q: S3 takes 3 to 63 characters", transport.ErrInvalidConfig, c.Bucket))
	}
	if c.Expiration < 0 || c.Expiration%(24*time.Hour) != 0 {
		errs = append(errs, fmt.Errorf("%w: aws: ClaimCheck: Expiration %s: want whole days", transport.ErrInvalidConfig, c.Expiration))
	}
	return errors.Join(errs...)
}

func (c ClaimCheckConfig) withDefaults() ClaimCheckConfig {
	if c.Bucket == "" {
		return c
	}
	if c.Prefix == "" {
		c.Prefix = DefaultClaimCheckPrefix
	}
	if c.Expiration == 0 {
		c.Expiration = DefaultClaimCheckExpiration
	}
	return c
}

// newBlobs returns the claim-check store of cfg (nil when off) and, for a
// bucket, its S3 client.
func newBlobs(cfg Config) (BlobStore, *s3.Client) {
	cc := cfg.ClaimCheck
	if cc.Bucket == "" {
		return cc.Store, nil
	}
	client := s3.NewFromConfig(cfg.AWS, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = awssdk.String(cfg.Endpoint)
		}
		o.UsePathStyle = cc.UsePathStyle
	})
	return NewS3BlobStore(client, cc.Bucket, cc.Prefix), client
}

// S3 returns the S3 client of the claim check, nil unless
// Config.ClaimCheck.Bucket is set.
func (t *Transport) S3() *s3.Client { return t.s3 }

// S3BlobStore is a BlobStore in an S3 bucket: a blob is the object
// prefix+key. It expires nothing itself: the transport's Plan and Apply put
// a lifecycle rule on the prefix (ClaimCheckConfig).
type S3BlobStore struct {
	client *s3.Client
	bucket string
	prefix string
}

var _ BlobStore = (*S3BlobStore)(nil)

// NewS3BlobStore returns a store of objects prefix+key in bucket.
func NewS3BlobStore(client *s3.Client, bucket, prefix string) *S3BlobStore {
	return &S3BlobStore{client: client, bucket: bucket, prefix: prefix}
}

// ObjectKey returns the S3 key of the blob stored under key.
func (s *S3BlobStore) ObjectKey(key string) string { return s.prefix + key }

// Put stores data as the object prefix+key.
func (s *S3BlobStore) Put(ctx context.Context, key string, data []byte) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           awssdk.String(s.ObjectKey(key)),
		Body:          bytes.NewReader(data),
		ContentLength: awssdk.Int64(int64(len(data))),
		ContentType:   awssdk.String("application/octet-stream"),
	})
	if err != nil {
		return classify(fmt.Errorf("aws: claim check: put s3://%s/%s: %w", s.bucket, s.ObjectKey(key), err))
	}
	return nil
}

// Get returns the blob stored under key, or an error wrapping
// ErrBlobNotFound. (Without s3:ListBucket on the bucket, S3 answers a
// missing key with AccessDenied, which is not ErrBlobNotFound.)
func (s *S3BlobStore) Get(ctx context.Context, key string) ([]byte, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: awssdk.String(s.ObjectKey(key))})
	var nsk *s3types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("%w: s3://%s/%s", ErrBlobNotFound, s.bucket, s.ObjectKey(key))
	}
	if err != nil {
		return nil, classify(fmt.Errorf("aws: claim check: get s3://%s/%s: %w", s.bucket, s.ObjectKey(key), err))
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, classify(fmt.Errorf("aws: claim check: read s3://%s/%s: %w", s.bucket, s.ObjectKey(key), err))
	}
	return data, nil
}

// Delete removes the blob stored under key; a missing one is no error.
func (s *S3BlobStore) Delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: awssdk.String(s.ObjectKey(key))})
	if err != nil {
		return classify(fmt.Errorf("aws: claim check: delete s3://%s/%s: %w", s.bucket, s.ObjectKey(key), err))
	}
	return nil
}

// lifecycleRuleID names the rule eda keeps on a prefix of the bucket; other
// rules of the bucket are left as they are.
func lifecycleRuleID(prefix string) string { return "eda-claim-check:" + prefix }

// planClaimCheck returns the changes that make the claim-check bucket exist
// with eda's lifecycle rule. Nothing without a bucket, or once done.
func (t *Transport) planClaimCheck(ctx context.Context) ([]Change, error) {
	if t.s3 == nil {
		return nil, nil
	}
	t.mu.Lock()
	ready := t.bucketReady
	t.mu.Unlock()
	if ready {
		return nil, nil
	}
	cc := t.cfg.ClaimCheck
	days := int32(cc.Expiration / (24 * time.Hour))
	ours := s3types.LifecycleRule{
		ID:         awssdk.String(lifecycleRuleID(cc.Prefix)),
		Status:     s3types.ExpirationStatusEnabled,
		Filter:     &s3types.LifecycleRuleFilter{Prefix: awssdk.String(cc.Prefix)},
		Expiration: &s3types.LifecycleExpiration{Days: awssdk.Int32(days)},
	}
	detail := fmt.Sprintf("expire %s* after %d days", cc.Prefix, days)
	resource := "s3://" + cc.Bucket

	var changes []Change
	var others []s3types.LifecycleRule
	_, err := t.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &cc.Bucket})
	switch {
	case isS3NotFound(err):
		changes = append(changes, Change{Action: ActionCreateBucket, Resource: resource, apply: t.createBucket})
	case err != nil:
		return nil, classify(fmt.Errorf("aws: claim check: head bucket %s: %w", cc.Bucket, err))
	default:
		out, err := t.s3.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: &cc.Bucket})
		if err != nil && !hasCode(err, "NoSuchLifecycleConfiguration") {
			return nil, classify(fmt.Errorf("aws: claim check: get lifecycle of bucket %s: %w", cc.Bucket, err))
		}
		if out != nil {
			for _, r := range out.Rules {
				if awssdk.ToString(r.ID) != *ours.ID {
					others = append(others, r)
					continue
				}
				prefix := awssdk.ToString(r.Prefix) //nolint:staticcheck // the legacy field, still returned
				if r.Filter != nil && r.Filter.Prefix != nil {
					prefix = *r.Filter.Prefix
				}
				if r.Status == s3types.ExpirationStatusEnabled && prefix == cc.Prefix &&
					r.Expiration != nil && awssdk.ToInt32(r.Expiration.Days) == days {
					t.mu.Lock()
					t.bucketReady = true
					t.mu.Unlock()
					return nil, nil
				}
			}
		}
	}
	rules := append(others, ours)
	changes = append(changes, Change{
		Action: ActionPutLifecycle, Resource: resource, Detail: detail,
		apply: func(ctx context.Context) error {
			_, err := t.s3.PutBucketLifecycleConfiguration(ctx, &s3.PutBucketLifecycleConfigurationInput{
				Bucket:                 &cc.Bucket,
				LifecycleConfiguration: &s3types.BucketLifecycleConfiguration{Rules: rules},
			})
			if err != nil {
				return classify(fmt.Errorf("aws: claim check: put lifecycle of bucket %s: %w", cc.Bucket, err))
			}
			t.mu.Lock()
			t.bucketReady = true
			t.mu.Unlock()
			return nil
		},
	})
	return changes, nil
}

func (t *Transport) createBucket(ctx context.Context) error {
	in := &s3.CreateBucketInput{Bucket: &t.cfg.ClaimCheck.Bucket}
	if r := t.cfg.AWS.Region; r != "us-east-1" {
		in.CreateBucketConfiguration = &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(r)}
	}
	_, err := t.s3.CreateBucket(ctx, in)
	var owned *s3types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return classify(fmt.Errorf("aws: claim check: create bucket %s: %w", *in.Bucket, err))
	}
	return nil
}

func isS3NotFound(err error) bool {
	var nf *s3types.NotFound
	var nb *s3types.NoSuchBucket
	return errors.As(err, &nf) || errors.As(err, &nb) || hasCode(err, "NotFound", "NoSuchBucket")
}

func hasCode(err error, codes ...string) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	for _, c := range codes {
		if api.ErrorCode() == c {
			return true
		}
	}
	return false
}
