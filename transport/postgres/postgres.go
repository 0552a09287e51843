package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/edaproject/eda/transport"

	"github.com/edaproject/eda/internal/sqlident"
)

// Defaults of Config.
const (
	DefaultSchema         = "eda_transport"
	DefaultPollInterval   = time.Second
	DefaultBatchSize      = 10
	DefaultMaxBatchSize   = 100
	DefaultMaxMessageSize = 256 * 1024 // the SQS/SNS limit, so tests on Postgres catch what production would reject
	DefaultDedupWindow    = 5 * time.Minute
)

// Config configures a Transport. Set Pool or DSN.
type Config struct {
	// Pool is the connection pool to use. The transport does not close it.
	Pool *pgxpool.Pool
	// DSN is used when Pool is nil: the transport opens its own pool and
	// closes it on Close.
	DSN string
	// Schema is the Postgres schema holding the transport's tables.
	// Default DefaultSchema. Lower-case letters, digits and _.
	Schema string
	// PollInterval is the longest a consumer waits before looking for
	// messages again when it has nothing to do. With LISTEN/NOTIFY a consumer
	// wakes as soon as a message is published; the poll covers lost
	// notifications and expiring visibility timeouts are waited for
	// precisely. Default DefaultPollInterval.
	//
	// Publish sends NOTIFY after its transaction commits, at most one
	// statement per 5ms per transport covering every topic published in
	// that time; PublishTx sends it inside the caller's transaction.
	PollInterval time.Duration
	// DisableNotify turns LISTEN/NOTIFY off: consumers then find new messages
	// by polling only (and the transport holds no listening connection).
	DisableNotify bool
	// BatchSize is how many messages a consumer receives per query (the
	// consumers of a queue in one Transport receive together, see
	// Subscribe). The extra ones wait under their lease for the next
	// consumer to be free; those still unhandled when half the visibility
	// timeout has passed are given back. 1 gives the fairest spread between
	// consumers in different processes. Default DefaultBatchSize.
	BatchSize int
	// MaxBatchSize is how many messages a consumer receives per query at
	// most when its handlers keep up: after a full batch handled in less
	// time than its query took, the consumer asks for ten times as many
	// next time, up to MaxBatchSize, and back to BatchSize after the first batch
	// that takes longer. Handlers that fast spend their time waiting for the
	// database, and the messages they hold wait less than a query would take
	// another consumer; slower handlers keep BatchSize, so the spread between
	// consumers is unchanged. Default the larger of BatchSize and
	// DefaultMaxBatchSize; set it to BatchSize to always receive BatchSize.
	MaxBatchSize int
	// MaxMessageSize is the largest message (payload plus metadata, as
	// transport.MessageSize counts) Publish accepts. Default
	// DefaultMaxMessageSize; -1 means no limit.
	MaxMessageSize int
	// DedupWindow is how long a FIFO queue remembers deduplication ids.
	// Default DefaultDedupWindow.
	DedupWindow time.Duration
	// Logger receives errors the transport handles itself (a failed ack, a
	// lost listening connection). Nil discards them.
	Logger *slog.Logger
}

var errInvalid = transport.ErrInvalidConfig

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Pool == nil && c.DSN == "" {
		errs = append(errs, fmt.Errorf("%w: postgres: set Pool or DSN", errInvalid))
	}
	if c.Pool != nil && c.DSN != "" {
		errs = append(errs, fmt.Errorf("%w: postgres: set Pool or DSN, not both", errInvalid))
	}
	if c.DSN != "" {
		if _, err := pgxpool.ParseConfig(c.DSN); err != nil {
			errs = append(errs, fmt.Errorf("%w: postgres: DSN: %v", errInvalid, err))
		}
	}
	if c.Schema != "" && !sqlident.Valid(c.Schema, sqlident.MaxLen) {
		errs = append(errs, fmt.Errorf("%w: postgres: schema name %q (want lower-case letters, digits, _; at most 63)", errInvalid, c.Schema))
	}
	if c.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: postgres: negative PollInterval %s", errInvalid, c.PollInterval))
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("%w: postgres: negative BatchSize %d", errInvalid, c.BatchSize))
	}
	if c.MaxBatchSize < 0 {
		errs = append(errs, fmt.Errorf("%w: postgres: negative MaxBatchSize %d", errInvalid, c.MaxBatchSize))
	}
	if batch := cmp.Or(max(c.BatchSize, 0), DefaultBatchSize); c.MaxBatchSize > 0 && c.MaxBatchSize < batch {
		errs = append(errs, fmt.Errorf("%w: postgres: MaxBatchSize %d below BatchSize %d", errInvalid, c.MaxBatchSize, batch))
	}
	if c.MaxMessageSize < -1 {
		errs = append(errs, fmt.Errorf("%w: postgres: MaxMessageSize %d", errInvalid, c.MaxMessageSize))
	}
	if c.DedupWindow < 0 {
		errs = append(errs, fmt.Errorf("%w: postgres: negative DedupWindow %s", errInvalid, c.DedupWindow))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxBatchSize == 0 {
		c.MaxBatchSize = max(c.BatchSize, DefaultMaxBatchSize)
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// pool returns the configured pool, or opens one from DSN (owned = true).
func (c Config) pool(ctx context.Context) (*pgxpool.Pool, bool, error) {
	if c.Pool != nil {
		return c.Pool, false, nil
	}
	pool, err := pgxpool.New(ctx, c.DSN)
	if err != nil {
		return nil, false, classify("open pool", err)
	}
	return pool, true, nil
}

// DBTX is what PublishTx needs: a pgx.Tx, *pgx.Conn or *pgxpool.Pool.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var (
	_ DBTX = pgx.Tx(nil)
	_ DBTX = (*pgxpool.Pool)(nil)
	_ DBTX = (*pgx.Conn)(nil)
)

// Transport is the Postgres transport. Create it with New.
type Transport struct {
	cfg     Config
	pool    *pgxpool.Pool
	owned   bool
	channel string // NOTIFY channel
	q       queries
	log     *slog.Logger

	mu        sync.Mutex
	closed    bool
	closing   chan struct{}
	wg        sync.WaitGroup // consumers and their helpers
	listening bool
	waiters   map[string]map[chan struct{}]struct{} // queue → consumer wake-ups
	receivers map[receiverKey]*receiver             // of the queues consumed
	cancel    context.CancelFunc                    // stops the listener

	lastCleanup time.Time // of expired dedup ids; guarded by mu

	pubMu     sync.Mutex
	pubQueue  []*publishCall // Publish calls waiting to be written (see combine)
	combiners int            // goroutines writing them; guarded by pubMu

	notifying  bool                // the notifier goroutine runs; guarded by mu
	toNotify   map[string]struct{} // topics published since the last NOTIFY; guarded by mu
	notifyKick chan struct{}
}

var _ transport.Transport = (*Transport)(nil)

// New returns a transport on the schema cfg names, which Migrate must have
// created (else ErrSchemaVersion).
func New(ctx context.Context, cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	pool, owned, err := cfg.pool(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkSchema(ctx, pool, cfg.Schema); err != nil {
		if owned {
			pool.Close()
		}
		return nil, err
	}
	return &Transport{
		cfg:        cfg,
		pool:       pool,
		owned:      owned,
		channel:    channelName(cfg.Schema),
		q:          newQueries(cfg.Schema, cfg.BatchSize, cfg.MaxBatchSize),
		log:        cfg.Logger,
		closing:    make(chan struct{}),
		waiters:    map[string]map[chan struct{}]struct{}{},
		receivers:  map[receiverKey]*receiver{},
		toNotify:   map[string]struct{}{},
		notifyKick: make(chan struct{}, 1),
	}, nil
}

// channelName is the NOTIFY channel of schema. Channel names are identifiers
// (at most 63 bytes); two schemas sharing a truncated name only wake each
// other's consumers for nothing.
func channelName(schema string) string {
	ch := schema + "_messages"
	return ch[:min(len(ch), 63)]
}

// Features: the whole SNS/SQS model. The visibility timeout is a lease
// timestamp, so any positive duration works; redelivery happens when a
// consumer next looks, which an idle consumer schedules for the moment the
// earliest lease of its queue expires.
func (t *Transport) Features() transport.Features {
	return transport.Features{
		FIFO:                 true,
		Deduplication:        true,
		DeadLetter:           true,
		ReceiveCount:         true,
		VisibilityTimeout:    true,
		MaxMessageSize:       max(t.cfg.MaxMessageSize, 0),
		MinVisibilityTimeout: 10 * time.Millisecond,
		Heartbeat:            true,
		DelayedRedelivery:    true,
		DelayedDelivery:      true,
	}
}

// Close stops every consumer, gives back messages they received but did not
// hand out, and refuses further calls. A message in a handler at Close stays
// leased until its visibility timeout, as with a consumer process that stops.
// It closes the pool if the transport opened it.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.closing)
	if t.cancel != nil {
		t.cancel()
	}
	t.mu.Unlock()
	t.wg.Wait()
	if t.owned {
		t.pool.Close()
	}
	return nil
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// Declare creates q (and its dead-letter queue) and subscribes it to its
// topics, in one transaction. Declaring an existing queue again adds topics;
// other settings are an error (ErrInvalidConfig), except for a queue created
// only as a dead-letter queue, which takes the settings it is declared with.
func (t *Transport) Declare(ctx context.Context, q transport.Queue) error {
	if err := q.Validate(); err != nil {
		return err
	}
	if t.isClosed() {
		return transport.ErrClosed
	}
	q = q.WithDefaults()
	return pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if q.DeadLetterQueue != "" {
			if _, err := tx.Exec(ctx, t.q.insertPlainQueue, q.DeadLetterQueue, q.FIFO, transport.DefaultVisibilityTimeout.Microseconds()); err != nil {
				return classify("declare dead-letter queue "+q.DeadLetterQueue, err)
			}
		}
		var dlq *string
		if q.DeadLetterQueue != "" {
			dlq = &q.DeadLetterQueue
		}
		vt := q.VisibilityTimeout.Microseconds()
		tag, err := tx.Exec(ctx, t.q.insertQueue, q.Name, q.FIFO, vt, q.MaxReceiveCount, dlq)
		if err != nil {
			return classify("declare queue "+q.Name, err)
		}
		if tag.RowsAffected() == 0 { // exists: compare
			var (
				fifo, plain bool
				oldVT       int64
				oldMax      int
				oldDLQ      *string
			)
			if err := tx.QueryRow(ctx, t.q.selectQueueForUpdate, q.Name).Scan(&fifo, &oldVT, &oldMax, &oldDLQ, &plain); err != nil {
				return classify("declare queue "+q.Name, err)
			}
			same := fifo == q.FIFO && oldVT == vt && oldMax == q.MaxReceiveCount && (oldDLQ == nil) == (dlq == nil) && (dlq == nil || *oldDLQ == *dlq)
			switch {
			case same:
			case plain && fifo == q.FIFO:
				if _, err := tx.Exec(ctx, t.q.upgradeQueue, q.Name, vt, q.MaxReceiveCount, dlq); err != nil {
					return classify("declare queue "+q.Name, err)
				}
			default:
				return fmt.Errorf("%w: postgres: queue %q already declared with other settings (fifo %t, visibility timeout %s, max receive count %d, dead-letter queue %v)",
					errInvalid, q.Name, fifo, time.Duration(oldVT)*time.Microsecond, oldMax, deref(oldDLQ))
			}
		}
		if len(q.Topics) > 0 {
			// q.FIFO is the queue's: a declaration that differs was refused above.
			if _, err := tx.Exec(ctx, t.q.insertSubscriptions, q.Name, q.Topics, q.FIFO); err != nil {
				return classify("subscribe queue "+q.Name, err)
			}
		}
		return nil
	})
}

func deref(s *string) string {
	if s == nil {
		return "none"
	}
	return *s
}

// Publish sends msgs to every queue subscribed to topic, in one transaction:
// all of them or none. Publishing to a topic no queue subscribes to succeeds
// and stores nothing, as SNS does.
func (t *Transport) Publish(topic string, msgs ...*message.Message) error {
	return t.PublishContext(context.Background(), topic, msgs...)
}

// PublishContext is Publish with a context.
func (t *Transport) PublishContext(ctx context.Context, topic string, msgs ...*message.Message) error {
	return t.publish(ctx, t.pool, true, topic, msgs...)
}

// PublishTx publishes within db, typically the caller's pgx.Tx: the messages
// become visible to consumers when that transaction commits and are never
// delivered if it rolls back. With a pool or connection the publish is its
// own (implicit) transaction. The transaction holds an advisory lock per FIFO
// message group until it ends, so that a group's messages are numbered in
// commit order, and (unless DisableNotify) sends the NOTIFY that wakes
// consumers, which makes Postgres serialize the commits of concurrent
// notifying transactions: prefer Publish where no caller's transaction is
// needed.
func (t *Transport) PublishTx(ctx context.Context, db DBTX, topic string, msgs ...*message.Message) error {
	own := true
	switch d := db.(type) {
	case pgx.Tx:
		own = false
	case *pgx.Conn:
		own = d.PgConn().TxStatus() == 'I'
	}
	return t.publish(ctx, db, own, topic, msgs...)
}

// publish writes msgs in db; own means the transaction is the transport's
// (db is the pool, or a connection outside a transaction).
func (t *Transport) publish(ctx context.Context, db DBTX, own bool, topic string, msgs ...*message.Message) error {
	if topic == "" {
		return fmt.Errorf("%w: postgres: empty topic", errInvalid)
	}
	if t.isClosed() {
		return transport.ErrClosed
	}
	if t.cfg.MaxMessageSize > 0 {
		for _, msg := range msgs {
			if size := transport.MessageSize(msg); size > t.cfg.MaxMessageSize {
				return transport.TooLargeError(topic, msg, size, t.cfg.MaxMessageSize)
			}
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	var (
		uuids    = make([]string, len(msgs))
		payloads = make([][]byte, len(msgs))
		metas    = make([][]byte, len(msgs))
		groups   = make([]*string, len(msgs))
		dedups   = make([]string, len(msgs))
		delays   = make([]int64, len(msgs)) // µs
		grouped  bool
	)
	now := time.Now()
	for i, msg := range msgs {
		at, ok, err := transport.DeliverAt(msg)
		if err != nil {
			return fmt.Errorf("postgres: publish to %q: %w", topic, err)
		}
		if ok && at.After(now) {
			// A delay rather than a time: visible_at is computed on the
			// database's clock, as leases are.
			delays[i] = int64(math.Ceil(float64(at.Sub(now)) / float64(time.Microsecond)))
		}
		uuids[i], payloads[i], metas[i], dedups[i] = msg.UUID, msg.Payload, EncodeMetadata(storedMetadata(msg.Metadata)), transport.DedupID(msg)
		if g := msg.Metadata.Get(transport.MetadataGroupID); g != "" {
			groups[i], grouped = &g, true
		}
	}

	// Publishing is one pipelined batch: one round trip. In its own
	// transaction the transport sends the NOTIFY afterwards, from a
	// background goroutine that coalesces the topics published meanwhile
	// (notifyLater): Postgres holds a database-wide lock from a notifying
	// transaction's pre-commit to its end, so a NOTIFY inside the publishing
	// transaction would serialize every publisher's commit, fsync included,
	// and make each publish wait for other notifiers. A notification lost
	// that way (the process dies right after COMMIT) costs consumers at most
	// one poll interval. In the caller's transaction the NOTIFY has to go
	// with it, and a savepoint keeps that transaction usable if the publish
	// fails.
	b := &pgx.Batch{} // in an implicit transaction when own
	if !own {
		b.Queue("SAVEPOINT eda_transport_publish")
	}
	if grouped {
		b.Queue(t.q.lockGroups, topic, groups, t.cfg.Schema)
		b.Queue(t.q.insertMessages, topic, uuids, payloads, metas, groups, dedups, t.cfg.DedupWindow.Microseconds(), delays)
	} else if len(msgs) == 1 {
		b.Queue(t.q.insertOne, topic, uuids[0], payloads[0], metas[0], delays[0])
	} else {
		b.Queue(t.q.insertUngrouped, topic, uuids, payloads, metas, delays)
	}
	if !own {
		if !t.cfg.DisableNotify {
			b.Queue(t.q.notify, []string{topic}, t.channel)
		}
		b.Queue("RELEASE SAVEPOINT eda_transport_publish")
	}
	var err error
	if pooled, _ := db.(*pgxpool.Pool); pooled == t.pool && own && !grouped {
		q := b.QueuedQueries[0] // in the transport's own transaction: combined with concurrent ones
		err = t.combine(ctx, q.SQL, q.Arguments...)
	} else {
		err = db.SendBatch(ctx, b).Close()
	}
	if err != nil && !own {
		// Back to before the publish; the caller's transaction goes on.
		if _, rerr := db.Exec(ctx, "ROLLBACK TO SAVEPOINT eda_transport_publish"); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "EDA01":
		return fmt.Errorf("%w: postgres: publish to %q: %s", transport.ErrMissingGroupID, topic, pgErr.Message)
	case err != nil:
		return classify("publish to "+topic, err)
	}
	if own && !t.cfg.DisableNotify {
		t.notifyLater(topic)
	}
	return nil
}

// storedMetadata returns md without the keys that ask the transport for a
// delay: they are requests to the transport, not part of the message.
func storedMetadata(md message.Metadata) message.Metadata {
	_, a := md[transport.MetadataDeliverAt]
	_, b := md[transport.MetadataRedeliveryDelay]
	if !a && !b {
		return md
	}
	md = maps.Clone(md)
	delete(md, transport.MetadataDeliverAt)
	delete(md, transport.MetadataRedeliveryDelay)
	return md
}

// Depth returns how many messages of queue are visible (waiting to be
// received) and how many are in flight (received, lease not expired) or
// delayed (delivery or redelivery delay not over).
func (t *Transport) Depth(ctx context.Context, queue string) (visible, inFlight int, err error) {
	var exists bool
	err = t.pool.QueryRow(ctx, t.q.depth, queue).Scan(&exists, &visible, &inFlight)
	if err != nil {
		return 0, 0, classify("depth of "+queue, err)
	}
	if !exists {
		return 0, 0, fmt.Errorf("%w: postgres: %q", transport.ErrUnknownQueue, queue)
	}
	return visible, inFlight, nil
}

// classify wraps err with what failed, and with transport.ErrUnavailable when
// the database could not be reached (retrying may help).
func classify(what string, err error) error {
	if err == nil {
		return nil
	}
	var (
		pgErr   *pgconn.PgError
		connErr *pgconn.ConnectError
		netErr  net.Error
	)
	unavailable := errors.As(err, &connErr) || errors.As(err, &netErr) || pgconn.Timeout(err) || pgconn.SafeToRetry(err)
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08", // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutdown, cannot connect now
			pgErr.Code == "53300": // too many connections
			unavailable = true
		}
	}
	if unavailable {
		return fmt.Errorf("postgres: %s: %w: %w", what, transport.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", what, err)
}
