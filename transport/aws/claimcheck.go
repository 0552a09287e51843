package aws

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// BlobStore keeps the payloads of messages too large for SNS/SQS (the claim
// check pattern): Publish stores the payload under a fresh key and sends the
// key; the subscriber fetches the payload back before delivering.
//
// A blob is read by every queue subscribed to the topic, possibly more than
// once (redeliveries), so it is not deleted on ack: expire blobs older than
// the longest retention of the queues (PostgresBlobStore.DeleteBefore).
type BlobStore interface {
	Put(ctx context.Context, key string, data []byte) error
	// Get returns the blob, or an error wrapping ErrBlobNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
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

// DeleteBefore deletes the blobs stored before t and returns how many.
func (s *PostgresBlobStore) DeleteBefore(ctx context.Context, t time.Time) (int64, error) {
	tag, err := s.db.Exec(ctx, `DELETE FROM `+s.table+` WHERE created_at < $1`, t)
	if err != nil {
		return 0, fmt.Errorf("aws: claim check: delete before %s: %w", t, err)
	}
	return tag.RowsAffected(), nil
}
