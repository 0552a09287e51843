package aws

import (
	"context"
	"errors"
	"fmt"
	"time"

	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/edaproject/eda/transport"
)

// BlobStore keeps the payloads of messages too large for SNS/SQS (the claim
// check pattern): Publish stores the payload under a fresh key and sends the
// key; the subscriber fetches the payload back before delivering.
// S3BlobStore and PostgresBlobStore implement it (ClaimCheckConfig).
//
// A blob is read by every queue subscribed to the topic, possibly more than
// once (redeliveries), so it is not deleted on ack: blobs expire after the
// longest retention of the queues (an S3 lifecycle rule,
// PostgresBlobStore.DeleteBefore). Publish deletes the blob of a message
// SNS refused.
type BlobStore interface {
	Put(ctx context.Context, key string, data []byte) error
	// Get returns the blob, or an error wrapping ErrBlobNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Delete removes the blob; a missing one is no error.
	Delete(ctx context.Context, key string) error
}

// ErrBlobNotFound: a claim-checked message points at a blob that is not in
// the store (expired, or another store).
var ErrBlobNotFound = errors.New("aws: claim-check blob not found")

// DB is what PostgresBlobStore needs of a connection; *pgxpool.Pool,
// *pgx.Conn and pgx.Tx have it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// DefaultBlobTable is the table of a PostgresBlobStore that names none.
const DefaultBlobTable = "eda_claim_check"

// PostgresBlobStore is a BlobStore in a Postgres table (key, data,
// created_at). Create it with NewPostgresBlobStore.
type PostgresBlobStore struct {
	db    DB
	table string // quoted
}

var _ BlobStore = (*PostgresBlobStore)(nil)

// NewPostgresBlobStore returns a store in table (schema-qualified as
// "schema.table" or plain; empty means DefaultBlobTable), creating the table
// if it does not exist.
func NewPostgresBlobStore(ctx context.Context, db DB, table string) (*PostgresBlobStore, error) {
	if db == nil {
		return nil, fmt.Errorf("aws: claim check: nil DB")
	}
	if table == "" {
		table = DefaultBlobTable
	}
	ident := pgx.Identifier{table}
	for i := 0; i < len(table); i++ {
		if table[i] == '.' {
			ident = pgx.Identifier{table[:i], table[i+1:]}
			break
		}
	}
	s := &PostgresBlobStore{db: db, table: ident.Sanitize()}
	_, err := db.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.table+` (
		key        text PRIMARY KEY,
		data       bytea NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err != nil {
		return nil, fmt.Errorf("aws: claim check: create table %s: %w", s.table, err)
	}
	return s, nil
}

// Put stores data under key; storing the same key again keeps the first.
func (s *PostgresBlobStore) Put(ctx context.Context, key string, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	_, err := s.db.Exec(ctx, `INSERT INTO `+s.table+` (key, data) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, key, data)
	if err != nil {
		return fmt.Errorf("aws: claim check: put %s: %w", key, err)
	}
	return nil
}

// Get returns the blob stored under key.
func (s *PostgresBlobStore) Get(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := s.db.QueryRow(ctx, `SELECT data FROM `+s.table+` WHERE key = $1`, key).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrBlobNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("aws: claim check: get %s: %w", key, err)
	}
	return data, nil
}

// Delete removes the blob stored under key.
func (s *PostgresBlobStore) Delete(ctx context.Context, key string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM `+s.table+` WHERE key = $1`, key); err != nil {
		return fmt.Errorf("aws: claim check: delete %s: %w", key, err)
	}
	return nil
}

// DeleteBefore deletes the blobs stored before t and returns how many.
func (s *PostgresBlobStore) DeleteBefore(ctx context.Context, t time.Time) (int64, error) {
	tag, err := s.db.Exec(ctx, `DELETE FROM `+s.table+` WHERE created_at < $1`, t)
	if err != nil {
		return 0, fmt.Errorf("aws: claim check: delete before %s: %w", t, err)
	}
	return tag.RowsAffected(), nil
}

// storeClaims stores the payloads of the messages out[i] for i in claim and
// points their wire form at the blob. When one fails, the blobs stored
// before it are deleted and nothing is published.
func (t *Transport) storeClaims(ctx context.Context, topic string, out []outgoing, claim []int) error {
	for n, i := range claim {
		msg := out[i].msg
		key := uuid.NewString()
		w, err := encode(wireMetadata(msg), key, t.cfg.Attributes)
		if err == nil && w.size() > MaxWireSize {
			err = fmt.Errorf("%w (metadata alone, the claim check stores only the payload)", transport.TooLargeError(topic, msg, w.size(), MaxWireSize))
		}
		if err == nil {
			if err = t.blobs.Put(ctx, key, msg.Payload); err != nil {
				err = fmt.Errorf("aws: claim check for message %s to %q: %w", msg.UUID, topic, err)
			}
		}
		if err != nil {
			stored := make([]outgoing, 0, n)
			for _, j := range claim[:n] {
				stored = append(stored, out[j])
			}
			t.dropClaims(ctx, stored, nil)
			return err
		}
		out[i].wire, out[i].claimKey = w, key
	}
	return nil
}

// dropClaims deletes the blobs of messages that were not published, unless
// cause leaves that open (nil: known not sent). A publish whose outcome is
// unknown keeps its blobs: the message may be on its way; the blob
// expires.
func (t *Transport) dropClaims(ctx context.Context, os []outgoing, cause error) {
	if t.blobs == nil || (cause != nil && !refused(cause)) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	for _, o := range os {
		if o.claimKey == "" {
			continue
		}
		if err := t.blobs.Delete(ctx, o.claimKey); err != nil {
			t.log.WarnContext(ctx, "eda/aws: cannot delete the claim-check blob of a message not published; it expires",
				"message_uuid", o.msg.UUID, "key", o.claimKey, "error", err)
		}
	}
}

// refused reports whether err is SNS's answer that it did not take the
// request (4xx: unknown topic, invalid, throttled, denied), as opposed to
// an outcome unknown to the caller (no answer, 5xx, cancelled).
func refused(err error) bool {
	if isNotFound(err) {
		return true
	}
	var resp *smithyhttp.ResponseError
	return errors.As(err, &resp) && resp.HTTPStatusCode() >= 400 && resp.HTTPStatusCode() < 500
}
