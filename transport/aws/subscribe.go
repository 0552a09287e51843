package aws

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"

	"github.com/edaproject/eda/transport"
)

// settleTimeout bounds a delete or visibility change made after the
// subscription's context ended (pending acks, releases at shutdown).
const settleTimeout = 30 * time.Second

// Subscribe starts a consumer of the SQS queue declared as queue.
//
// It long-polls ReceiveMessage for up to Config.BatchSize messages, keeps at
// most Config.Concurrency messages out with handlers (one per FIFO group)
// and a batch more per poller received ahead, and extends the visibility of every
// held message while its handler runs (heartbeat), so a handler may run
// longer than the visibility timeout. Ack deletes the message (acks are
// gathered into DeleteMessageBatch calls, waiting up to 20 ms for the acks
// of messages still out, so that one-at-a-time handlers share a call);
// Nack makes it visible again at once (ChangeMessageVisibility 0), or after
// its transport.RedeliveryDelay (ChangeMessageVisibility of that many
// seconds, rounded up, at most what SQS allows: 12 hours from the receive).
// Delivered messages carry transport.MetadataReceiveCount (SQS
// ApproximateReceiveCount).
//
// watermill-aws's SQS subscriber handles one message at a time, deletes one
// by one and has no heartbeat; this one calls the SDK itself for those.
//
// The channel closes when ctx ends or the transport is closed. Messages
// received ahead are released at once; one with a handler is left in flight
// (a crashed consumer): its late Ack or Nack still counts until its
// visibility timeout, after which SQS delivers it again.
func (t *Transport) Subscribe(ctx context.Context, queue string) (<-chan *message.Message, error) {
	if err := t.begin(); err != nil {
		return nil, err
	}
	q, err := t.resolveQueue(ctx, queue)
	if err != nil {
		t.wg.Done()
		return nil, err
	}
	subCtx, cancel := context.WithCancel(ctx)
	s := &subscription{
		t:      t,
		q:      q,
		source: queueARN(t.cfg.Partition, t.cfg.AWS.Region, q.url),
		ctx:    subCtx,
		out:    make(chan *message.Message),
		// Room for what handlers hold plus a batch per poller: pollers
		// reserving whole batches cannot block each other.
		slots:    make(chan struct{}, t.cfg.Concurrency+pollers(t.cfg)*t.cfg.BatchSize),
		work:     make(chan []*held),
		ackRoom:  make(chan struct{}, maxBatch*t.cfg.Concurrency),
		ackReady: make(chan struct{}, 1),
		acksDone: make(chan struct{}),
		held:     map[*held]struct{}{},
	}
	s.ackTimer = time.AfterFunc(time.Hour, s.signalAcks)
	s.ackTimer.Stop()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		cancel()
		t.wg.Done()
		return nil, transport.ErrClosed
	}
	t.cancels[s] = cancel
	s.dlqSource = t.dlqOf[queue]
	if t.live[q.url] == nil {
		t.live[q.url] = map[*subscription]struct{}{}
	}
	t.live[q.url][s] = struct{}{}
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		watched := t.watchQueue(subCtx, queue) // ready.go
		defer watched()
		s.run()
		t.mu.Lock()
		delete(t.cancels, s)
		delete(t.live[q.url], s)
		if len(t.live[q.url]) == 0 {
			delete(t.live, q.url)
		}
		t.mu.Unlock()
		cancel()
	}()
	return s.out, nil
}

type subscription struct {
	t         *Transport
	q         queueInfo
	dlqSource string
	ctx       context.Context
	out       chan *message.Message
	slots     chan struct{} // one per held message
	work      chan []*held  // a standard message alone, or a FIFO group's messages in order

	// Acked messages waiting for their delete, taken by the deleters in
	// batches (see ack).
	ackMu    sync.Mutex
	acked    []*held       // guarded by ackMu
	ackRoom  chan struct{} // one per queued ack: workers wait while deletes lag far behind
	ackReady chan struct{} // a batch may be ready: a deleter looks
	acksDone chan struct{} // closed when no more acks come
	ackTimer *time.Timer   // signals ackReady ackWait after a batch's first ack

	hbMu sync.Mutex // a heartbeat in progress; nack and release wait for it
	mu   sync.Mutex
	held map[*held]struct{} // received and not settled: the heartbeat extends them

	feeders   sync.WaitGroup // pollers and adoptions that may still send to work
	accepting bool           // adoptions are welcome; guarded by mu

	// source is the CloudEvents source given to messages without one: the
	// queue's ARN.
	source string

	// unacked counts held messages not yet acked or let go (received, in a
	// handler or waiting for one): while there are some, the deleters wait a
	// little for their acks to fill its DeleteMessageBatch.
	unacked atomic.Int64
}

type held struct {
	raw       sqstypes.Message
	received  time.Time // before the ReceiveMessage call that returned it
	handed    bool      // given to a handler; guarded by subscription.mu
	slotFreed bool      // acked, its slot given back, waiting for its delete; guarded by subscription.mu
}

type verdict int

const (
	acked verdict = iota
	nacked
	postponed // not delivered now; visible again after its timeout
	stopped
)

func (s *subscription) run() {
	defer close(s.out)
	cfg := s.t.cfg
	pollers := pollers(cfg)
	var workWG, ackWG sync.WaitGroup
	for range pollers {
		ackWG.Go(s.deleter)
	}
	for range cfg.Concurrency {
		workWG.Go(s.worker)
	}
	s.mu.Lock()
	s.accepting = true
	s.mu.Unlock()
	for range pollers {
		s.feeders.Go(s.poll)
	}
	hbDone := make(chan struct{})
	var hbWG sync.WaitGroup
	hbWG.Go(func() { s.heartbeat(hbDone) })

	<-s.ctx.Done()
	s.mu.Lock()
	s.accepting = false
	s.mu.Unlock()
	s.feeders.Wait()
	close(s.work)
	workWG.Wait()
	close(s.acksDone)
	ackWG.Wait()
	s.ackTimer.Stop()
	close(hbDone)
	hbWG.Wait()

	s.mu.Lock()
	var rest []*held
	for h := range s.held {
		if !h.handed {
			rest = append(rest, h)
		}
	}
	s.mu.Unlock()
	s.release(rest)
}

// pollers is how many ReceiveMessage loops a subscription runs: enough for
// Concurrency messages in batches of BatchSize.
func pollers(cfg Config) int { return 1 + (cfg.Concurrency-1)/cfg.BatchSize }

// poll receives messages while there is room for them.
func (s *subscription) poll() {
	cfg := s.t.cfg
	backoff := 100 * time.Millisecond
	r := s.newReceiver()
	defer close(r.calls)
	for {
		// Wait for room for a whole batch: receiving whatever single slot
		// an ack just freed would mean many small receives.
		n := cfg.BatchSize
		for i := range n {
			select {
			case s.slots <- struct{}{}:
			case <-s.ctx.Done():
				for range i {
					<-s.slots
				}
				return
			}
		}
		start := time.Now()
		out, err, ok := s.receive(r, n)
		if !ok {
			return
		}
		var msgs []sqstypes.Message
		if out != nil {
			msgs = out.Messages
		}
		for range n - len(msgs) {
			<-s.slots
		}
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			healed, err := s.t.healQueue(s.ctx, s.q, err) // ready.go: a vanished queue is declared again
			if healed {
				backoff = 100 * time.Millisecond
				continue
			}
			s.t.log.WarnContext(s.ctx, "eda/aws: receive failed", "queue", s.q.name, "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		s.dispatch(msgs, start)
	}
}

// dispatch registers received messages as held and sends them to the
// workers.
func (s *subscription) dispatch(msgs []sqstypes.Message, received time.Time) {
	for _, u := range s.units(msgs, received) {
		select {
		case s.work <- u:
		case <-s.ctx.Done():
			return // the rest is held and not handed: run releases it
		}
	}
}

// What ReceiveMessage asks for (read only): every message attribute, and
// the system attributes a delivered message's metadata takes; the group id
// only on a FIFO queue, where messages are handled by group.
var (
	allMessageAttributes = []string{"All"}
	systemAttributes     = []sqstypes.MessageSystemAttributeName{
		sqstypes.MessageSystemAttributeNameApproximateReceiveCount,
		sqstypes.MessageSystemAttributeNameDeadLetterQueueSourceArn,
		sqstypes.MessageSystemAttributeNameSentTimestamp, // ce_time of a message without one
	}
	systemAttributesFIFO = append(slices.Clip(systemAttributes), sqstypes.MessageSystemAttributeNameMessageGroupId)
)

// receiver makes a poller's ReceiveMessage calls in a goroutine of its
// own, so that the poller can stop while a call runs on (see receive).
// It is one goroutine for all the poller's calls, not one per call: a new
// goroutine would grow its stack again for every call through the SDK's
// deep middleware stack (a tenth of the consumer's CPU time).
type receiver struct {
	calls   chan receiveCall   // closed when the poller stops
	results chan receiveResult // the result of the last call, until taken
}

type receiveCall struct {
	in    *sqs.ReceiveMessageInput
	start time.Time // before the call: when its messages were received
}

type receiveResult struct {
	out *sqs.ReceiveMessageOutput
	err error
}

// newReceiver starts a poller's receiver. Once the poller stops, the
// receiver ends after the call in flight, if any, whose messages nobody
// took: it gives them to another running subscription of the queue, or
// releases them (adopt).
func (s *subscription) newReceiver() *receiver {
	r := &receiver{calls: make(chan receiveCall), results: make(chan receiveResult, 1)}
	t := s.t
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		var last receiveCall
		for c := range r.calls {
			out, err := t.sqs.ReceiveMessage(t.closeCtx, c.in)
			r.results <- receiveResult{out, err}
			last = c
		}
		select {
		case res := <-r.results: // abandoned by the stopped poller
			if res.err == nil && len(res.out.Messages) > 0 {
				t.adopt(s.q, res.out.Messages, last.start)
			}
		default:
		}
	}()
	return r
}

// receive calls ReceiveMessage for n messages (through the poller's
// receiver r). When the subscription stops first, the call is not
// abandoned: SQS (and fauxqs) would still hand it messages, counted as
// received and then invisible until their timeout. It runs on (until
// Close) and its messages go to another running subscription of the queue,
// or are released at once (adopt). ok is false when the subscription
// stopped.
func (s *subscription) receive(r *receiver, n int) (out *sqs.ReceiveMessageOutput, err error, ok bool) {
	start := time.Now()
	cfg := s.t.cfg
	in := &sqs.ReceiveMessageInput{
		QueueUrl:                    &s.q.url,
		MaxNumberOfMessages:         int32(n),
		WaitTimeSeconds:             int32(cfg.WaitTime / time.Second),
		MessageAttributeNames:       allMessageAttributes,
		MessageSystemAttributeNames: systemAttributes,
	}
	if s.q.fifo {
		in.MessageSystemAttributeNames = systemAttributesFIFO
		// A response lost on the way (the SDK retries) would leave its
		// messages in flight, and their groups blocked, until the visibility
		// timeout; on a FIFO queue SQS answers a retry with the same attempt
		// id with the same messages. (fauxqs ignores it.)
		in.ReceiveRequestAttemptId = awssdk.String(uuid.NewString())
	}
	select {
	case r.calls <- receiveCall{in, start}:
	case <-s.ctx.Done():
		for range n {
			<-s.slots
		}
		return nil, nil, false
	}
	select {
	case res := <-r.results:
		return res.out, res.err, true
	case <-s.ctx.Done():
	}
	for range n {
		<-s.slots
	}
	return nil, nil, false
}

// adopt gives messages received for a stopped subscription to a running one
// of the same queue, or releases them.
func (t *Transport) adopt(q queueInfo, msgs []sqstypes.Message, received time.Time) {
	t.mu.Lock()
	var subs []*subscription
	for s := range t.live[q.url] {
		subs = append(subs, s)
	}
	t.mu.Unlock()
	for _, s := range subs {
		if s.inject(msgs, received) {
			return
		}
	}
	hs := make([]*held, len(msgs))
	for i, m := range msgs {
		hs[i] = &held{raw: m}
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	(&subscription{t: t, q: q, ctx: ctx}).changeVisibility(ctx, hs, 0)
}

// inject takes adopted messages if the subscription runs and has room.
func (s *subscription) inject(msgs []sqstypes.Message, received time.Time) bool {
	s.mu.Lock()
	if !s.accepting {
		s.mu.Unlock()
		return false
	}
	s.feeders.Add(1)
	s.mu.Unlock()
	defer s.feeders.Done()
	for i := range msgs {
		select {
		case s.slots <- struct{}{}:
		default:
			for range i {
				<-s.slots
			}
			return false
		}
	}
	s.dispatch(msgs, received)
	return true
}

// units registers received messages as held and splits them into units of
// work: each message of a standard queue alone; on a FIFO queue, each
// group's messages together, in order.
func (s *subscription) units(msgs []sqstypes.Message, received time.Time) [][]*held {
	// One allocation each for the batch's held messages, its units and the
	// units' elements, not one per message.
	hs := make([]held, len(msgs))
	ptrs := make([]*held, len(msgs))
	units := make([][]*held, 0, len(msgs))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unacked.Add(int64(len(msgs)))
	for i, m := range msgs {
		hs[i] = held{raw: m, received: received}
		h := &hs[i]
		s.held[h] = struct{}{}
		ptrs[i] = h
	}
	if !s.q.fifo {
		for i := range ptrs {
			units = append(units, ptrs[i:i+1:i+1])
		}
		return units
	}
	groups := map[string]int{}
	for _, h := range ptrs {
		g := h.raw.Attributes[string(sqstypes.MessageSystemAttributeNameMessageGroupId)]
		if i, ok := groups[g]; ok {
			units[i] = append(units[i], h)
			continue
		}
		groups[g] = len(units)
		units = append(units, []*held{h})
	}
	return units
}

func (s *subscription) worker() {
	for unit := range s.work {
		for i, h := range unit {
			if s.ctx.Err() != nil {
				break // the rest stays unhanded: run releases it
			}
			v := s.deliver(h)
			if v == stopped {
				break
			}
			if (v == nacked || v == postponed) && s.q.fifo {
				// The group's next messages must wait for this one.
				s.release(unit[i+1:])
				break
			}
		}
	}
}

// deliver hands one message to a handler and waits for its verdict.
func (s *subscription) deliver(h *held) verdict {
	msg, err := s.message(h)
	if err != nil {
		// The claim-check store failed: leave the message invisible until
		// its timeout (a natural backoff); after MaxReceiveCount it goes to
		// the dead-letter queue.
		s.t.log.ErrorContext(s.ctx, "eda/aws: cannot fetch the claim-checked payload, retrying after the visibility timeout",
			"queue", s.q.name, "message_id", awssdk.ToString(h.raw.MessageId), "error", err)
		s.forget(h)
		return postponed
	}
	msgCtx, cancel := context.WithCancel(s.ctx)
	msg.SetContext(msgCtx)
	select {
	case s.out <- msg:
	case <-s.ctx.Done():
		cancel()
		return stopped
	}
	s.mu.Lock()
	h.handed = true
	s.mu.Unlock()
	select {
	case <-msg.Acked():
		cancel()
		s.freeSlot(h) // a deleter forgets h once deleted: until then the heartbeat keeps it invisible
		s.ack(h)
		return acked
	case <-msg.Nacked():
		cancel()
		s.releaseAfter([]*held{h}, transport.RedeliveryDelay(msg))
		return nacked
	case <-s.ctx.Done():
		// The consumer stops with the message in its handler: no more
		// heartbeat; a late verdict still counts until the visibility timeout.
		s.forget(h)
		t := s.t
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer cancel()
			ctx, stop := context.WithTimeout(context.WithoutCancel(s.ctx), settleTimeout)
			defer stop()
			timer := time.NewTimer(s.q.visibility)
			defer timer.Stop()
			select {
			case <-msg.Acked():
				s.deleteBatch(ctx, []*held{h})
			case <-msg.Nacked():
				s.changeVisibility(ctx, []*held{h}, redeliveryVisibility(h, transport.RedeliveryDelay(msg)))
			case <-timer.C:
			case <-t.closeCtx.Done():
			}
		}()
		return stopped
	}
}

// MetadataTransportError is set on a delivered message the transport could
// not decode (not in eda's wire form, or its claim-checked payload is gone):
// the payload is the raw SQS body, the metadata the raw attributes. eda's
// decoding then fails and the poison middleware routes it; a dead-letter
// consumer sees why.
const MetadataTransportError = "eda_transporterror"

// message decodes a received message and fetches a claim-checked payload.
// Only a failing claim-check store is an error: a message that cannot be
// decoded is delivered raw, with MetadataTransportError.
func (s *subscription) message(h *held) (*message.Message, error) {
	body, id := awssdk.ToString(h.raw.Body), awssdk.ToString(h.raw.MessageId)
	// Room for what defaultEnvelope and the receive count and dead-letter
	// source below may add.
	const extra = 6
	d, err := decodeAttrs(body, h.raw.MessageAttributes, attributeText, extra, id)
	if err == nil && d.claimKey != "" {
		if s.t.blobs == nil {
			err = fmt.Errorf("aws: message %s is claim-checked (key %s) and Config.ClaimCheck is not set", d.msg.UUID, d.claimKey)
		} else if d.msg.Payload, err = s.t.blobs.Get(s.ctx, d.claimKey); err != nil && !errors.Is(err, ErrBlobNotFound) {
			return nil, err
		}
	}
	if err != nil {
		s.t.log.WarnContext(s.ctx, "eda/aws: delivering an undecodable message raw", "queue", s.q.name, "message_id", id, "error", err)
		d.msg = message.NewMessage(id, []byte(body))
		d.msg.Metadata = make(message.Metadata, len(h.raw.MessageAttributes)+extra)
		for k, v := range h.raw.MessageAttributes {
			if text, ok := attributeText(v); ok {
				d.msg.Metadata[k] = text
			}
		}
		d.msg.Metadata[MetadataTransportError] = err.Error()
	} else {
		s.defaultEnvelope(d.msg, h.raw)
	}
	md := d.msg.Metadata
	md[transport.MetadataReceiveCount] = h.raw.Attributes[string(sqstypes.MessageSystemAttributeNameApproximateReceiveCount)]
	if src := h.raw.Attributes[string(sqstypes.MessageSystemAttributeNameDeadLetterQueueSourceArn)]; src != "" {
		md[transport.MetadataDeadLetterSource] = strings.TrimSuffix(src[strings.LastIndexByte(src, ':')+1:], fifoSuffix)
	} else if s.dlqSource != "" && s.t.cfg.EmulatorNoDeadLetterQueueSourceArn {
		// fauxqs does not set DeadLetterQueueSourceArn; a DLQ declared by this
		// transport knows its source.
		md[transport.MetadataDeadLetterSource] = s.dlqSource
	}
	return d.msg, nil
}

// attributeText is a message attribute's value as text (a Binary one's
// bytes as a string); false when it has neither.
func attributeText(v sqstypes.MessageAttributeValue) (string, bool) {
	switch {
	case v.StringValue != nil:
		return *v.StringValue, true
	case v.BinaryValue != nil:
		return string(v.BinaryValue), true
	}
	return "", false
}

// forget stops holding h (no more heartbeat) and frees its slot.
func (s *subscription) forget(h *held) {
	s.mu.Lock()
	_, ok := s.held[h]
	delete(s.held, h)
	free := ok && !h.slotFreed
	s.mu.Unlock()
	if free {
		s.unacked.Add(-1)
		<-s.slots
	}
}

// freeSlot gives h's slot to the next message while h stays held: an acked
// message is heartbeated until its delete is done, so a slow delete cannot
// let it reappear.
func (s *subscription) freeSlot(h *held) {
	s.mu.Lock()
	_, ok := s.held[h]
	free := ok && !h.slotFreed
	h.slotFreed = true
	s.mu.Unlock()
	if free {
		s.unacked.Add(-1)
		<-s.slots
	}
}

// release makes messages visible again at once, in order.
func (s *subscription) release(hs []*held) { s.releaseAfter(hs, 0) }

// releaseAfter makes messages visible again after delay (a nack's
// transport.RedeliveryDelay).
func (s *subscription) releaseAfter(hs []*held, delay time.Duration) {
	if len(hs) == 0 {
		return
	}
	s.hbMu.Lock() // a heartbeat in flight must not hide them again
	for _, h := range hs {
		s.forget(h)
	}
	s.hbMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), settleTimeout)
	defer cancel()
	if delay <= 0 {
		s.changeVisibility(ctx, hs, 0)
		return
	}
	for _, h := range hs { // one message in practice: a nack
		s.changeVisibility(ctx, []*held{h}, redeliveryVisibility(h, delay))
	}
}

// MaxRedeliveryDelay is the longest transport.RedeliveryDelay honoured: SQS
// keeps a message invisible at most 12 hours from its receive. Longer delays
// are shortened to what is left of that.
const MaxRedeliveryDelay = 12 * time.Hour

// redeliveryVisibility is the visibility timeout that makes h visible again
// after delay: whole seconds, rounded up, within what SQS accepts (the 12
// hours count from the receive; a second is kept for clock drift).
func redeliveryVisibility(h *held, delay time.Duration) time.Duration {
	if delay <= 0 {
		return 0
	}
	d := (delay + time.Second - 1).Truncate(time.Second)
	left := (MaxRedeliveryDelay - time.Since(h.received) - time.Second).Truncate(time.Second)
	return max(0, min(d, left))
}

// ackWait is how long the deleters hold acks for more to fill a
// DeleteMessageBatch while other messages are still out: a consumer that
// handles one message at a time acks ten in one call, as a loop that
// deletes each received batch once handled does. An acked message stays
// held (heartbeated) until its delete, so waiting does not let it reappear.
const ackWait = 20 * time.Millisecond

// ack queues h for a DeleteMessageBatch. The deleters take a batch when it
// is full, when no other message is out (no ack is coming), or ackWait
// after its first ack; while every deleter is busy, acks queue up for the
// next batches, up to maxBatch per handler, after which the workers wait.
// The worker queues its ack itself, with no goroutine between it and the
// deleters.
func (s *subscription) ack(h *held) {
	s.ackRoom <- struct{}{}
	s.ackMu.Lock()
	if s.acked == nil {
		s.acked = make([]*held, 0, maxBatch)
	}
	s.acked = append(s.acked, h)
	n := len(s.acked)
	s.ackMu.Unlock()
	switch {
	case n >= maxBatch || s.unacked.Load() == 0:
		s.signalAcks()
	case n == 1:
		s.ackTimer.Reset(ackWait)
	}
}

// signalAcks wakes a deleter (or leaves a wake-up for the next free one).
func (s *subscription) signalAcks() {
	select {
	case s.ackReady <- struct{}{}:
	default:
	}
}

// takeAcks takes the next batch of acked messages (nil when there is
// none) and wakes another deleter, or sets the timer, for what is left.
func (s *subscription) takeAcks(done bool) []*held {
	s.ackMu.Lock()
	batch := s.acked
	if len(batch) > maxBatch {
		batch, s.acked = batch[:maxBatch:maxBatch], batch[maxBatch:]
	} else {
		s.acked = nil
	}
	left := len(s.acked)
	s.ackMu.Unlock()
	for range batch {
		<-s.ackRoom
	}
	switch {
	case left == 0:
	case done || left >= maxBatch || s.unacked.Load() == 0:
		s.signalAcks()
	default:
		s.ackTimer.Reset(ackWait)
	}
	return batch
}

// deleter deletes batches of acked messages (several run: one call at a
// time each) until no more acks come and none is left.
func (s *subscription) deleter() {
	for {
		done := false
		select {
		case <-s.ackReady:
		case <-s.acksDone:
			done = true
		}
		batch := s.takeAcks(done)
		if len(batch) == 0 {
			if done {
				return
			}
			continue
		}
		// Deletes outlive the subscription's context: an ack must not be lost
		// to a shutdown.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), settleTimeout)
		s.deleteBatch(ctx, batch)
		cancel()
		for _, h := range batch {
			s.forget(h)
		}
	}
}

func (s *subscription) deleteBatch(ctx context.Context, batch []*held) {
	entries := make([]sqstypes.DeleteMessageBatchRequestEntry, len(batch))
	for i, h := range batch {
		entries[i] = sqstypes.DeleteMessageBatchRequestEntry{Id: awssdk.String(strconv.Itoa(i)), ReceiptHandle: h.raw.ReceiptHandle}
	}
	out, err := s.t.sqs.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: &s.q.url, Entries: entries})
	if err != nil {
		s.t.log.WarnContext(ctx, "eda/aws: delete failed; the messages will be delivered again", "queue", s.q.name, "count", len(batch), "error", classify(err))
		return
	}
	for _, f := range out.Failed {
		s.t.log.WarnContext(ctx, "eda/aws: delete failed; the message will be delivered again", "queue", s.q.name,
			"code", awssdk.ToString(f.Code), "error", awssdk.ToString(f.Message))
	}
}

// changeVisibility sets the visibility timeout of messages, in batches.
func (s *subscription) changeVisibility(ctx context.Context, hs []*held, timeout time.Duration) {
	for start := 0; start < len(hs); start += maxBatch {
		part := hs[start:min(start+maxBatch, len(hs))]
		entries := make([]sqstypes.ChangeMessageVisibilityBatchRequestEntry, len(part))
		for i, h := range part {
			entries[i] = sqstypes.ChangeMessageVisibilityBatchRequestEntry{
				Id:                awssdk.String(strconv.Itoa(i)),
				ReceiptHandle:     h.raw.ReceiptHandle,
				VisibilityTimeout: int32(timeout / time.Second),
			}
		}
		out, err := s.t.sqs.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: &s.q.url, Entries: entries})
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				s.t.log.WarnContext(ctx, "eda/aws: change visibility failed", "queue", s.q.name, "count", len(part), "error", classify(err))
			}
			continue
		}
		for _, f := range out.Failed {
			s.t.log.DebugContext(ctx, "eda/aws: change visibility failed", "queue", s.q.name,
				"code", awssdk.ToString(f.Code), "error", awssdk.ToString(f.Message))
		}
	}
}

// heartbeat extends the visibility of every held message every third of the
// queue's visibility timeout, so long handlers keep their message.
func (s *subscription) heartbeat(done <-chan struct{}) {
	vt := s.q.visibility
	if vt < time.Second {
		return
	}
	tick := time.NewTicker(vt / 3)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		s.hbMu.Lock()
		s.mu.Lock()
		hs := make([]*held, 0, len(s.held))
		for h := range s.held {
			hs = append(hs, h)
		}
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), vt/3)
		s.changeVisibility(ctx, hs, vt)
		cancel()
		s.hbMu.Unlock()
	}
}
