package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/transport"
)

// Defaults of Config.
const (
	DefaultMaxMessageSize = 256 * 1024 // the SQS/SNS limit
	DefaultDedupWindow    = 5 * time.Minute
)

// Config configures a memory Transport. The zero value is valid.
type Config struct {
	// MaxMessageSize is the largest message (payload plus metadata) Publish
	// accepts. Default DefaultMaxMessageSize; -1 means no limit.
	MaxMessageSize int
	// DedupWindow is how long a FIFO queue remembers deduplication ids.
	// Default DefaultDedupWindow.
	DedupWindow time.Duration
}

// Validate reports every problem with c, joined.
func (c Config) Validate() error {
	var errs []error
	if c.MaxMessageSize < -1 {
		errs = append(errs, fmt.Errorf("%w: memory: MaxMessageSize %d", transport.ErrInvalidConfig, c.MaxMessageSize))
	}
	if c.DedupWindow < 0 {
		errs = append(errs, fmt.Errorf("%w: memory: negative DedupWindow %s", transport.ErrInvalidConfig, c.DedupWindow))
	}
	return errors.Join(errs...)
}

// Transport is the in-memory transport. Create it with New.
type Transport struct {
	cfg Config

	mu      sync.Mutex
	topics  map[string][]*queue // topic → subscribed queues
	queues  map[string]*queue
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup // consumer goroutines
}

var _ transport.Transport = (*Transport)(nil)

// New returns a memory transport.
func New(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = DefaultDedupWindow
	}
	return &Transport{
		cfg:     cfg,
		topics:  map[string][]*queue{},
		queues:  map[string]*queue{},
		closing: make(chan struct{}),
	}, nil
}

// Features reports everything: the memory transport implements the whole
// SNS/SQS model.
func (t *Transport) Features() transport.Features {
	size := t.cfg.MaxMessageSize
	if size < 0 {
		size = 0
	}
	return transport.Features{
		FIFO:                 true,
		Deduplication:        true,
		DeadLetter:           true,
		ReceiveCount:         true,
		VisibilityTimeout:    true,
		MaxMessageSize:       size,
		MinVisibilityTimeout: time.Millisecond,
		Heartbeat:            true,
		DelayedRedelivery:    true,
		DelayedDelivery:      true,
	}
}

// Declare creates q (and its dead-letter queue) and subscribes it to its
// topics. Declaring an existing queue again adds topics; different settings
// are an error.
func (t *Transport) Declare(_ context.Context, q transport.Queue) error {
	if err := q.Validate(); err != nil {
		return err
	}
	q = q.WithDefaults()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	var dlq *queue
	if q.DeadLetterQueue != "" {
		var err error
		dlq, err = t.declareLocked(transport.Queue{Name: q.DeadLetterQueue, FIFO: q.FIFO}.WithDefaults(), nil, true)
		if err != nil {
			return err
		}
	}
	_, err := t.declareLocked(q, dlq, false)
	return err
}

func (t *Transport) declareLocked(decl transport.Queue, dlq *queue, asDLQ bool) (*queue, error) {
	q, ok := t.queues[decl.Name]
	if ok {
		if asDLQ {
			return q, nil // a DLQ may be shared, or declared on its own first
		}
		old := q.decl
		if old.FIFO != decl.FIFO || old.VisibilityTimeout != decl.VisibilityTimeout ||
			old.MaxReceiveCount != decl.MaxReceiveCount || old.DeadLetterQueue != decl.DeadLetterQueue {
			if q.plain {
				// Declared implicitly as someone's DLQ: take the full settings now.
				q.decl.VisibilityTimeout, q.decl.MaxReceiveCount, q.decl.DeadLetterQueue = decl.VisibilityTimeout, decl.MaxReceiveCount, decl.DeadLetterQueue
				q.dlq, q.plain = dlq, false
			} else {
				return nil, fmt.Errorf("%w: memory: queue %q already declared with other settings (%+v)", transport.ErrInvalidConfig, decl.Name, old)
			}
		}
	} else {
		q = &queue{
			t:        t,
			decl:     decl,
			dlq:      dlq,
			plain:    asDLQ,
			inflight: map[*entry]struct{}{},
			busy:     map[string]bool{},
			seen:     map[string]struct{}{},
			notify:   make(chan struct{}),
		}
		q.decl.Topics = nil
		t.queues[decl.Name] = q
	}
	for _, topic := range decl.Topics {
		if !slices.Contains(t.topics[topic], q) {
			t.topics[topic] = append(t.topics[topic], q)
		}
		if !slices.Contains(q.decl.Topics, topic) {
			q.decl.Topics = append(q.decl.Topics, topic)
		}
	}
	return q, nil
}

// Publish sends msgs to every queue subscribed to topic. All messages are
// checked first; if one is invalid nothing is sent. Publishing to a topic no
// queue subscribes to succeeds and delivers nothing, as SNS does.
//
// A message with transport.MetadataDeliverAt in the future becomes visible
// at that time (any delay); the key itself is not stored. On a FIFO queue a
// delayed message holds back the later messages of its group.
func (t *Transport) Publish(topic string, msgs ...*message.Message) error {
	if topic == "" {
		return fmt.Errorf("%w: memory: empty topic", transport.ErrInvalidConfig)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	queues := t.topics[topic]
	at := make([]time.Time, len(msgs))
	for i, msg := range msgs {
		deliverAt, _, err := transport.DeliverAt(msg)
		if err != nil {
			return fmt.Errorf("memory: publish to %q: %w", topic, err)
		}
		at[i] = deliverAt
		if t.cfg.MaxMessageSize > 0 {
			if size := transport.MessageSize(msg); size > t.cfg.MaxMessageSize {
				return transport.TooLargeError(topic, msg, size, t.cfg.MaxMessageSize)
			}
		}
		for _, q := range queues {
			if q.decl.FIFO && msg.Metadata.Get(transport.MetadataGroupID) == "" {
				return fmt.Errorf("%w: memory: message %s to topic %q, FIFO queue %q", transport.ErrMissingGroupID, msg.UUID, topic, q.decl.Name)
			}
		}
	}
	now := time.Now()
	for i, msg := range msgs {
		for _, q := range queues {
			q.enqueueLocked(msg.UUID, msg.Payload, storedMetadata(msg.Metadata), now, at[i])
		}
	}
	return nil
}

// storedMetadata copies md without the keys that ask the transport for a
// delay: they are requests to the transport, not part of the message.
func storedMetadata(md message.Metadata) message.Metadata {
	md = maps.Clone(md)
	delete(md, transport.MetadataDeliverAt)
	delete(md, transport.MetadataRedeliveryDelay)
	return md
}

// Subscribe starts one consumer of queue. The channel closes when ctx is
// cancelled or the transport is closed; an unsettled message is then left
// in flight until it is settled or its visibility timeout expires, as with a
// consumer process that stops.
func (t *Transport) Subscribe(ctx context.Context, queueName string) (<-chan *message.Message, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, transport.ErrClosed
	}
	q, ok := t.queues[queueName]
	if !ok {
		return nil, fmt.Errorf("%w: memory: %q (declare it first)", transport.ErrUnknownQueue, queueName)
	}
	out := make(chan *message.Message)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(out)
		q.consume(ctx, out)
	}()
	return out, nil
}

// Close stops every consumer and refuses further publishing.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.closing)
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

// Depth returns how many messages of queue wait to be received and how many
// are in flight (received, not yet settled). Delayed messages (delivery or
// redelivery delay not yet over) are neither.
func (t *Transport) Depth(queueName string) (visible, inFlight int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q, ok := t.queues[queueName]
	if !ok {
		return 0, 0, fmt.Errorf("%w: memory: %q", transport.ErrUnknownQueue, queueName)
	}
	now := time.Now()
	for _, e := range q.ready {
		if !e.visibleAt.After(now) {
			visible++
		}
	}
	return visible, len(q.inflight), nil
}

// queue state is guarded by Transport.mu.
type queue struct {
	t     *Transport
	decl  transport.Queue
	dlq   *queue
	plain bool // declared only as another queue's DLQ

	seq       uint64
	ready     []*entry            // standard: delivery order, all visible; FIFO: sorted by seq, delayed ones included
	waiting   map[*entry]struct{} // standard: entries waiting for their visibleAt, outside ready
	inflight  map[*entry]struct{}
	busy      map[string]bool     // FIFO groups with a message in flight
	seen      map[string]struct{} // FIFO dedup ids within the window
	seenOrder []seenID            // the same, oldest first
	notify    chan struct{}       // closed and replaced on every change
}

type seenID struct {
	id string
	at time.Time
}

type entry struct {
	uuid     string
	payload  message.Payload
	metadata message.Metadata
	seq      uint64
	group    string
	received int
	receipt  uint64
	timer    *time.Timer
	// visibleAt, when in the future, is when a delayed entry (delivery or
	// redelivery delay) becomes receivable. A standard queue keeps such
	// entries out of ready until then; a FIFO queue keeps them in ready, in
	// order, where they hold back their group.
	visibleAt time.Time
	at        time.Time // when it entered this queue
}

func (q *queue) enqueueLocked(uuid string, payload message.Payload, md message.Metadata, now, visibleAt time.Time) {
	group := md.Get(transport.MetadataGroupID)
	if q.decl.FIFO {
		id := transport.DedupID(&message.Message{UUID: uuid, Metadata: md})
		for len(q.seenOrder) > 0 && now.Sub(q.seenOrder[0].at) > q.t.cfg.DedupWindow { // forget ids past the window
			delete(q.seen, q.seenOrder[0].id)
			q.seenOrder = q.seenOrder[1:]
		}
		if _, dup := q.seen[id]; dup {
			return
		}
		q.seen[id] = struct{}{}
		q.seenOrder = append(q.seenOrder, seenID{id, now})
	}
	q.seq++
	e := &entry{uuid: uuid, payload: payload, metadata: md, seq: q.seq, group: group, at: now}
	if visibleAt.After(now) {
		q.makeReadyAtLocked(e, visibleAt)
		return
	}
	q.ready = append(q.ready, e)
	q.wakeLocked()
}

// makeReadyAtLocked puts e back in the queue, receivable from at on.
func (q *queue) makeReadyAtLocked(e *entry, at time.Time) {
	e.visibleAt = at
	d := time.Until(at)
	if q.decl.FIFO {
		i, _ := slices.BinarySearchFunc(q.ready, e.seq, func(x *entry, seq uint64) int { return compare(x.seq, seq) })
		q.ready = slices.Insert(q.ready, i, e)
		if d > 0 {
			time.AfterFunc(d, func() {
				q.t.mu.Lock()
				defer q.t.mu.Unlock()
				q.wakeLocked()
			})
		}
		q.wakeLocked()
		return
	}
	if d <= 0 {
		q.ready = append(q.ready, e)
		q.wakeLocked()
		return
	}
	if q.waiting == nil {
		q.waiting = make(map[*entry]struct{})
	}
	q.waiting[e] = struct{}{}
	time.AfterFunc(d, func() {
		q.t.mu.Lock()
		defer q.t.mu.Unlock()
		delete(q.waiting, e)
		q.ready = append(q.ready, e)
		q.wakeLocked()
	})
}

func (q *queue) wakeLocked() {
	close(q.notify)
	q.notify = make(chan struct{})
}

// receiveLocked takes the next deliverable entry, or nil. Entries over the
// receive limit move to the dead-letter queue on the way.
func (q *queue) receiveLocked() *entry {
	for {
		i := 0
		if q.decl.FIFO {
			i = q.fifoHeadLocked()
		} else if len(q.ready) == 0 {
			i = -1
		}
		if i < 0 {
			return nil
		}
		e := q.ready[i]
		if i == 0 { // the common case: O(1), the backing array is reused by append
			q.ready[0] = nil
			q.ready = q.ready[1:]
		} else {
			q.ready = slices.Delete(q.ready, i, i+1)
		}
		e.received++
		if q.decl.MaxReceiveCount > 0 && e.received > q.decl.MaxReceiveCount && q.dlq != nil {
			md := e.metadata
			md[transport.MetadataDeadLetterSource] = q.decl.Name
			delete(md, transport.MetadataReceiveCount)
			q.dlq.enqueueLocked(e.uuid, e.payload, md, time.Now(), time.Time{})
			continue
		}
		e.receipt++
		q.inflight[e] = struct{}{}
		if q.decl.FIFO {
			q.busy[e.group] = true
		}
		receipt := e.receipt
		e.timer = time.AfterFunc(q.decl.VisibilityTimeout, func() { q.settle(e, receipt, false) })
		return e
	}
}

// fifoHeadLocked returns the index in ready of the first entry that can be
// received: its group has nothing in flight and no earlier entry still
// delayed. -1 if none.
func (q *queue) fifoHeadLocked() int {
	now := time.Now()
	var held map[string]bool // groups held back by a delayed entry
	for i, e := range q.ready {
		if q.busy[e.group] || held[e.group] {
			continue
		}
		if e.visibleAt.After(now) {
			if held == nil {
				held = map[string]bool{}
			}
			held[e.group] = true
			continue
		}
		return i
	}
	return -1
}

// settle acks (delete) or releases (make visible again) an in-flight entry.
// A stale receipt, from before the entry was received again, is ignored.
func (q *queue) settle(e *entry, receipt uint64, ack bool) {
	q.settleAfter(e, receipt, ack, 0)
}

// settleAfter is settle with a redelivery delay: a released entry becomes
// visible again only after delay.
func (q *queue) settleAfter(e *entry, receipt uint64, ack bool, delay time.Duration) {
	t := q.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := q.inflight[e]; !ok || e.receipt != receipt {
		return
	}
	delete(q.inflight, e)
	e.timer.Stop()
	if q.decl.FIFO {
		delete(q.busy, e.group)
	}
	if !ack {
		q.makeReadyAtLocked(e, time.Now().Add(delay))
		return
	}
	q.wakeLocked()
}

// extend restarts the visibility timeout of e, held by a consumer (the
// heartbeat). A stale receipt, or a timeout that has just fired, is left
// alone.
func (q *queue) extend(e *entry, receipt uint64) {
	t := q.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := q.inflight[e]; !ok || e.receipt != receipt {
		return
	}
	if e.timer.Stop() { // false: it fired, the entry is on its way back
		e.timer.Reset(q.decl.VisibilityTimeout)
	}
}

func compare(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (q *queue) consume(ctx context.Context, out chan<- *message.Message) {
	t := q.t
	// The heartbeat: while the consumer holds a message (from its receive
	// until it is settled or the consumer stops) its visibility timeout is
	// restarted every third of it.
	t.mu.Lock()
	vt := q.decl.VisibilityTimeout
	t.mu.Unlock()
	beat := time.NewTicker(max(vt/3, time.Microsecond))
	defer beat.Stop()
	for {
		t.mu.Lock()
		e := q.receiveLocked()
		var wait chan struct{}
		var msg *message.Message
		receipt := uint64(0)
		if e == nil {
			wait = q.notify
		} else {
			receipt = e.receipt
			msg = message.NewMessage(e.uuid, e.payload)
			msg.Metadata = maps.Clone(e.metadata)
			msg.Metadata[transport.MetadataReceiveCount] = strconv.Itoa(e.received)
		}
		t.mu.Unlock()

		if e == nil {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return
			case <-t.closing:
				return
			}
		}

		msgCtx, cancel := context.WithCancel(ctx)
		msg.SetContext(msgCtx)
	handOver:
		for {
			select {
			case out <- msg:
				break handOver
			case <-beat.C:
				q.extend(e, receipt)
			case <-ctx.Done():
				cancel()
				q.settle(e, receipt, false) // never handed over: visible again now
				return
			case <-t.closing:
				cancel()
				q.settle(e, receipt, false)
				return
			}
		}
		if !q.await(ctx, msg, e, receipt, beat.C, cancel) {
			return
		}
	}
}

// await waits for the verdict on msg, extending its visibility on every
// beat; false means the consumer stops.
func (q *queue) await(ctx context.Context, msg *message.Message, e *entry, receipt uint64, beat <-chan time.Time, cancel context.CancelFunc) bool {
	t := q.t
	for {
		select {
		case <-beat:
			q.extend(e, receipt)
			continue
		case <-msg.Acked():
			q.settle(e, receipt, true)
			cancel()
		case <-msg.Nacked():
			q.settleAfter(e, receipt, false, transport.RedeliveryDelay(msg))
			cancel()
		case <-ctx.Done():
			// The consumer is stopping with a message in its handler: no
			// more heartbeat; keep listening for its verdict until the
			// visibility timeout, as an SQS consumer's late DeleteMessage
			// would still count.
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer cancel()
				select {
				case <-msg.Acked():
					q.settle(e, receipt, true)
				case <-msg.Nacked():
					q.settleAfter(e, receipt, false, transport.RedeliveryDelay(msg))
				case <-t.closing:
				case <-time.After(q.decl.VisibilityTimeout):
				}
			}()
			return false
		case <-t.closing:
			cancel()
			return false
		}
		return true
	}
}
