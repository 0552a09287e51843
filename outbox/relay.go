package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/transport"
)

// Defaults of RelayConfig.
const (
	DefaultBatchSize       = 500
	DefaultPollInterval    = time.Second
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
	DefaultRetention       = 7 * 24 * time.Hour
	DefaultCleanupInterval = time.Minute
	DefaultCleanupBatch    = 10000
	DefaultWorkers         = 1
)

// RelayConfig configures a Relay.
type RelayConfig struct {
	// Store is the outbox to drain. Required.
	Store Store
	// Publisher publishes the events: an eda transport or any Watermill
	// publisher. Required. Publish(topic, msgs...) is called with up to
	// BatchSize messages; a transport that supports batches (SNS
	// PublishBatch) sends them in few calls.
	Publisher message.Publisher
	// BatchSize is how many records one claim takes. Default
	// DefaultBatchSize.
	BatchSize int
	// Workers is how many claim loops this relay runs; they share the work
	// like separate relays do. With a PartitionedStore each worker claims
	// its own share of the ordering keys (and any record without a key),
	// so that workers do not hold back each other's keys. Default
	// DefaultWorkers.
	Workers int
	// PollInterval is how often the relay looks for records when no wake-up
	// arrives: a lost notification costs at most this. Default
	// DefaultPollInterval.
	PollInterval time.Duration
	// MinBackoff and MaxBackoff bound the delay before a record whose
	// publishing failed transiently is tried again; it doubles with each
	// attempt. Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Retention is how long published and discarded records are kept
	// before the relay deletes them. Default DefaultRetention; negative
	// disables the cleanup.
	Retention time.Duration
	// CleanupInterval is how often the cleanup runs. Default
	// DefaultCleanupInterval.
	CleanupInterval time.Duration
	// Permanent reports whether a publish error can never heal (the record
	// goes to Failed) rather than being transient (retried with backoff).
	// Default DefaultPermanent.
	Permanent func(error) bool
	// Logger receives the relay's logs. Nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with c, joined.
func (c RelayConfig) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: relay: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.Store == nil {
		add("Store is nil")
	}
	if c.Publisher == nil {
		add("Publisher is nil")
	}
	if c.BatchSize < 0 {
		add("negative BatchSize %d", c.BatchSize)
	}
	if c.Workers < 0 {
		add("negative Workers %d", c.Workers)
	}
	if c.PollInterval < 0 {
		add("negative PollInterval %s", c.PollInterval)
	}
	if c.MinBackoff < 0 || c.MaxBackoff < 0 {
		add("negative backoff (%s, %s)", c.MinBackoff, c.MaxBackoff)
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		add("MinBackoff %s > MaxBackoff %s", c.MinBackoff, c.MaxBackoff)
	}
	if c.CleanupInterval < 0 {
		add("negative CleanupInterval %s", c.CleanupInterval)
	}
	return errors.Join(errs...)
}

func (c *RelayConfig) setDefaults() {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = min(DefaultMinBackoff, max(c.MaxBackoff, time.Nanosecond))
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = DefaultCleanupInterval
	}
	if c.Permanent == nil {
		c.Permanent = DefaultPermanent
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// blockedRetry is how soon a worker whose claim found only held-back
// records looks again (plus up to as much jitter).
const blockedRetry = 10 * time.Millisecond

// followUp is how soon a worker that published records claims again when
// its batch was not full.
const followUp = 20 * time.Millisecond

// DefaultPermanent classifies the errors no retry can fix: the transport's
// ErrMessageTooLarge, ErrUnknownTopic, ErrInvalidConfig and
// ErrMissingGroupID, and errors marked eda.Permanent. Everything else
// (ErrUnavailable, timeouts, throttling...) is transient.
func DefaultPermanent(err error) bool {
	return errors.Is(err, transport.ErrMessageTooLarge) ||
		errors.Is(err, transport.ErrUnknownTopic) ||
		errors.Is(err, transport.ErrInvalidConfig) ||
		errors.Is(err, transport.ErrMissingGroupID) ||
		eda.IsPermanent(err)
}

// Relay publishes committed outbox records through a publisher.
//
// Several relays (in one process or many) can drain one store: each claim
// takes records no other claim holds, and a record is only claimed once
// every older record of its ordering key is settled, so a key is never
// published out of order. A record is marked Published only after Publish
// returned nil; if the relay dies in between, the record is published again
// (at least once: consumers deduplicate on the event id).
//
// Compared with Watermill's components/forwarder (which reads a watermill-sql
// subscription and forwards one message at a time, acknowledging each in its
// own transaction): the relay claims batches with FOR UPDATE SKIP LOCKED so
// relays share the work instead of serialising on one consumer-group offset,
// publishes a batch per topic in one Publish call, keeps per-key order across
// relays, backs off per record instead of blocking the stream, and parks
// poison records in a visible failed state.
type Relay struct {
	cfg RelayConfig
	// lead is how far ahead of their due time delayed records are claimed
	// and published with the remaining delay (the publisher's
	// MaxDeliveryDelay); 0 when the publisher does not delay delivery, so
	// records are held until due.
	lead time.Duration

	published, failed, retried atomic.Uint64
	rate                       rateMeter
	running                    atomic.Bool
}

// NewRelay validates cfg, fills defaults and returns a Relay.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Relay{cfg: cfg, lead: deliveryLead(cfg.Publisher)}, nil
}

// unlimitedLead is the lead for a publisher that delays delivery without
// a maximum: every scheduled record is handed to it at once.
const unlimitedLead = 100 * 365 * 24 * time.Hour

// deliveryLead is the lead of a relay publishing through pub: its
// Features().MaxDeliveryDelay when it has delayed delivery, else 0.
func deliveryLead(pub message.Publisher) time.Duration {
	fp, ok := pub.(interface{ Features() transport.Features })
	if !ok {
		return 0
	}
	f := fp.Features()
	switch {
	case !f.DelayedDelivery:
		return 0
	case f.MaxDeliveryDelay <= 0:
		return unlimitedLead
	}
	return f.MaxDeliveryDelay
}

// RelayStats count what a relay did since it was created.
type RelayStats struct {
	Published uint64 // records marked published
	Failed    uint64 // records moved to the failed state
	Retried   uint64 // transient publish failures (record attempts)
	// PublishedPerSecond is the publishing rate over the last 10 seconds.
	PublishedPerSecond float64
}

// Stats returns the relay's counters.
func (r *Relay) Stats() RelayStats {
	return RelayStats{
		Published:          r.published.Load(),
		Failed:             r.failed.Load(),
		Retried:            r.retried.Load(),
		PublishedPerSecond: r.rate.Rate(time.Now()),
	}
}

// Run relays until ctx is cancelled, then returns nil once the claim in
// progress is settled. Store errors are logged and retried. Run can be
// called once at a time.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: relay is already running", ErrInvalidConfig)
	}
	defer r.running.Store(false)

	wake := newBroadcast()
	var wg sync.WaitGroup
	wg.Go(func() {
		for range r.cfg.Store.Wakeup(ctx) { // closed by the store after ctx is done
			wake.Fire()
		}
	})
	for i := range r.cfg.Workers {
		wg.Go(func() { r.work(ctx, wake, i) })
	}
	if r.cfg.Retention > 0 {
		wg.Go(func() { r.cleanup(ctx) })
	}
	wg.Wait()
	return nil
}

// work is one worker's claim loop. With several workers and a
// PartitionedStore, worker i claims partition i only.
//
// The loop is a pipeline of two claims: while one claim's batch is being
// published, the next batch is claimed (with the first claim's records as
// ClaimRequest.InFlight), and while that one is published the first is
// marked. The next claim publishes only after the previous one's publish
// returned, and leaves unpublished (no Result: still pending) every record
// of a key that the previous claim did not publish whole, so a key's
// records go out in order; it records its outcomes only after the previous
// claim recorded its own. At most two claims (two transactions) are open.
func (r *Relay) work(ctx context.Context, wake *broadcast, worker int) {
	log := r.cfg.Logger
	claim := r.claimFunc(worker)
	var prev *claimRun // the claim still publishing or settling, if any
	defer func() {
		if prev != nil {
			<-prev.done
		}
	}()
	storeErrs := 0
	for ctx.Err() == nil {
		woken := wake.C() // before the claim, so a wake-up during it is not lost
		cur := r.startClaim(ctx, claim, prev, wake)
		<-cur.entered
		prevProgressed := false
		if prev != nil {
			<-prev.done
			if prev.err != nil && ctx.Err() == nil {
				log.Error("outbox relay: claim failed", "err", prev.err)
			}
			prevProgressed = prev.progressed
		}
		if cur.full && (prev == nil || prev.progressed) {
			// A whole batch: more may be waiting. Claim the next one while
			// this one is published (not while the publisher fails: then
			// the loop below waits as a serial relay would).
			prev = cur
			continue
		}
		prev = nil
		<-cur.done
		n, err, progressed := cur.n, cur.err, cur.progressed
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			storeErrs++
			d := r.backoff(storeErrs)
			log.Error("outbox relay: claim failed", "err", err, "retry_in", d)
			wait(ctx, nil, d)
			continue
		}
		storeErrs = 0
		switch {
		case n == r.cfg.BatchSize && progressed:
			continue // more may be waiting
		case n > 0 && !progressed:
			// Everything found was held back behind records another claim
			// holds (or failed transiently and now backs off): look again
			// soon rather than after a whole poll interval.
			wait(ctx, woken, min(r.cfg.PollInterval, blockedRetry+time.Duration(rand.Int64N(int64(blockedRetry)))))
		case progressed || prevProgressed:
			// Writers skip some notifications under load (see
			// pgxstore.Config.NotifyInterval): look once more shortly.
			wait(ctx, woken, min(r.cfg.PollInterval, followUp))
		default:
			wait(ctx, woken, r.cfg.PollInterval)
		}
	}
}

// claimFn claims up to limit records, with inflight the seqs the caller
// still holds in an earlier claim (ClaimRequest.InFlight).
type claimFn func(ctx context.Context, limit int, inflight []int64, publish func(context.Context, []Record) []Result) (int, error)

// claimFunc is how worker claims: its partition of a PartitionedStore when
// the relay has several workers, records due up to the publisher's lead
// with a DueStore. A store that is not a DueStore does not learn the
// in-flight records; it holds back their keys instead, which is slower but
// in order.
func (r *Relay) claimFunc(worker int) claimFn {
	var part Partition
	ps, partitioned := r.cfg.Store.(PartitionedStore)
	if partitioned && r.cfg.Workers > 1 {
		part = Partition{Index: worker, Of: r.cfg.Workers}
	}
	if ds, ok := r.cfg.Store.(DueStore); ok {
		return func(ctx context.Context, limit int, inflight []int64, publish func(context.Context, []Record) []Result) (int, error) {
			req := ClaimRequest{Limit: limit, Partition: part, InFlight: inflight}
			if r.lead > 0 {
				req.DueBy = time.Now().Add(r.lead)
			}
			return ds.ClaimDue(ctx, req, publish)
		}
	}
	if part.Of > 0 {
		return func(ctx context.Context, limit int, _ []int64, publish func(context.Context, []Record) []Result) (int, error) {
			return ps.ClaimPartition(ctx, part, limit, publish)
		}
	}
	return func(ctx context.Context, limit int, _ []int64, publish func(context.Context, []Record) []Result) (int, error) {
		return r.cfg.Store.Claim(ctx, limit, publish)
	}
}

// claimRun is one claim of a worker's pipeline.
type claimRun struct {
	entered   chan struct{} // closed once the records are claimed (or the claim returned)
	published chan struct{} // closed once the publish returned (or the claim returned)
	done      chan struct{} // closed once Claim returned

	// Set before entered is closed.
	seqs []int64 // the records passed to publish
	full bool    // a whole batch was passed to publish
	// Set before published is closed: the ordering keys with a record in
	// this claim that was not published.
	unsettled map[string]bool
	// Set before done is closed.
	n          int
	err        error
	progressed bool // some record was published
}

// startClaim starts a claim after prev (nil when none is open) in its own
// goroutine.
func (r *Relay) startClaim(ctx context.Context, claim claimFn, prev *claimRun, wake *broadcast) *claimRun {
	// prev is not kept in c: a pipeline that runs for hours would chain
	// every claim to the one before it.
	c := &claimRun{entered: make(chan struct{}), published: make(chan struct{}), done: make(chan struct{})}
	var inflight []int64
	if prev != nil {
		inflight = prev.seqs
	}
	go func() {
		defer close(c.done)
		called := false
		c.n, c.err = claim(ctx, r.cfg.BatchSize, inflight, func(ctx context.Context, batch []Record) []Result {
			called = true
			c.seqs = make([]int64, len(batch))
			for i, rec := range batch {
				c.seqs[i] = rec.Seq
			}
			c.full = len(batch) >= r.cfg.BatchSize
			close(c.entered)
			res := r.publishAfter(ctx, prev, c, batch)
			for _, x := range res {
				if x.Outcome == OutcomePublished {
					c.progressed = true
					break
				}
			}
			close(c.published)
			if prev != nil {
				<-prev.done // record outcomes in claim order
			}
			return res
		})
		if !called {
			close(c.entered)
			close(c.published)
		}
		if c.progressed && r.cfg.Workers > 1 {
			// Records this claim settled may have been holding back later
			// records of their keys that another worker found blocked.
			wake.Fire()
		}
	}()
	return c
}

// publishAfter publishes c's batch once the previous claim's (p, nil when
// none) publish returned, leaving out the records of keys p did not publish
// whole (they stay pending, behind the older record), and sets
// c.unsettled.
func (r *Relay) publishAfter(ctx context.Context, p, c *claimRun, batch []Record) []Result {
	keep := batch
	if p != nil {
		<-p.published
		if len(p.unsettled) > 0 {
			keep = make([]Record, 0, len(batch))
			for _, rec := range batch {
				if !ordered(rec) || !p.unsettled[rec.OrderingKey] {
					keep = append(keep, rec)
				}
			}
		}
	}
	var res []Result
	if len(keep) > 0 {
		res = r.publish(ctx, keep)
	}
	published := make(map[int64]bool, len(res))
	for _, x := range res {
		if x.Outcome == OutcomePublished {
			published[x.Seq] = true
		}
	}
	for _, rec := range batch {
		if ordered(rec) && !published[rec.Seq] {
			if c.unsettled == nil {
				c.unsettled = map[string]bool{}
			}
			c.unsettled[rec.OrderingKey] = true
		}
	}
	return res
}

// ordered reports whether rec is in its ordering key's order: it has a key
// and no due time.
func ordered(rec Record) bool { return rec.OrderingKey != "" && rec.DeliverAt.IsZero() }

func wait(ctx context.Context, ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-ch:
	case <-t.C:
	}
}

// publish publishes a claimed batch and reports every record's outcome.
// A key whose records span several topics in one batch is cut at the first
// topic change (the rest waits for the next claim), so that each topic's
// records can be published in one call without reordering a key.
//
// A record with a due time is outside its key's order: it is published as
// if it had no key. One not yet due is published with its due time
// (transport.MetadataDeliverAt) in a call of its own per topic, when the
// publisher delays delivery; if the publisher refuses the delay
// (transport.ErrDelayUnsupported: an SNS FIFO topic, say) it stays pending
// until it is due and is then published without it. A record not yet due
// when the publisher cannot delay (a store that claims early) is left
// pending until due: never published early.
func (r *Relay) publish(ctx context.Context, batch []Record) []Result {
	keyTopic := map[string]string{}
	cut := map[string]bool{}
	groups := map[string][]Record{}
	var topics []string
	var delayed map[string][]Record
	var delayedTopics []string
	results := make([]Result, 0, len(batch))
	now := time.Now()
	for _, rec := range batch {
		if !rec.DeliverAt.IsZero() {
			rec.OrderingKey = "" // scheduled: outside its key's order
			if rec.DeliverAt.After(now) {
				if r.lead <= 0 {
					results = append(results, Result{Seq: rec.Seq, Outcome: OutcomeRetry, Err: "outbox: not due", RetryAt: rec.DeliverAt})
					continue
				}
				if delayed == nil {
					delayed = map[string][]Record{}
				}
				if _, ok := delayed[rec.Topic]; !ok {
					delayedTopics = append(delayedTopics, rec.Topic)
				}
				delayed[rec.Topic] = append(delayed[rec.Topic], rec)
				continue
			}
		}
		if k := rec.OrderingKey; k != "" {
			if cut[k] {
				continue
			}
			if t, ok := keyTopic[k]; ok && t != rec.Topic {
				cut[k] = true
				continue
			}
			keyTopic[k] = rec.Topic
		}
		if _, ok := groups[rec.Topic]; !ok {
			topics = append(topics, rec.Topic)
		}
		groups[rec.Topic] = append(groups[rec.Topic], rec)
	}
	for _, topic := range topics {
		results = r.publishTopic(ctx, topic, groups[topic], results, false)
	}
	for _, topic := range delayedTopics {
		results = r.publishTopic(ctx, topic, delayed[topic], results, true)
	}
	var pub, failed, retried uint64
	for _, x := range results {
		switch x.Outcome {
		case OutcomePublished:
			pub++
		case OutcomeFailed:
			failed++
		case OutcomeRetry:
			retried++
		}
	}
	r.published.Add(pub)
	r.failed.Add(failed)
	r.retried.Add(retried)
	r.rate.Add(time.Now(), pub)
	return results
}

// publishTopic publishes recs to topic in one call; with delayed, each
// message carries its record's due time.
func (r *Relay) publishTopic(ctx context.Context, topic string, recs []Record, results []Result, delayed bool) []Result {
	msgs := make([]*message.Message, len(recs))
	for i, rec := range recs {
		msgs[i] = rec.Message()
		if delayed {
			transport.SetDeliverAt(msgs[i], rec.DeliverAt)
		}
		msgs[i].SetContext(ctx) // publishers that honour it stop on shutdown
	}
	err := r.cfg.Publisher.Publish(topic, msgs...)
	if err == nil {
		for _, rec := range recs {
			results = append(results, Result{Seq: rec.Seq, Outcome: OutcomePublished})
		}
		return results
	}
	if delayed && errors.Is(err, transport.ErrDelayUnsupported) {
		// Nothing was published: hold them until due, then publish them
		// without the delay. Never failed for it, never sent early.
		r.cfg.Logger.Info("outbox relay: publisher refused the delay; holding the records until due", "topic", topic, "records", len(recs), "err", err)
		for _, rec := range recs {
			results = append(results, Result{Seq: rec.Seq, Outcome: OutcomeRetry, Err: err.Error(), RetryAt: rec.DeliverAt})
		}
		return results
	}
	var partial PartialError
	if errors.As(err, &partial) && !r.cfg.Permanent(err) {
		// Only the messages not sent are retried; the others are
		// published. A key stops at its first unsent message.
		notSent := map[string]bool{}
		for _, id := range partial.NotSent() {
			notSent[id] = true
		}
		stopped := map[string]bool{}
		now := time.Now()
		for _, rec := range recs {
			k := rec.OrderingKey
			switch {
			case k != "" && stopped[k]:
				results = append(results, Result{Seq: rec.Seq, Outcome: OutcomeRetry, Err: err.Error(), RetryAt: now.Add(r.backoff(rec.Attempts + 1))})
			case notSent[rec.EventID]:
				stopped[k] = k != ""
				results = append(results, Result{Seq: rec.Seq, Outcome: OutcomeRetry, Err: err.Error(), RetryAt: now.Add(r.backoff(rec.Attempts + 1))})
			default:
				results = append(results, Result{Seq: rec.Seq, Outcome: OutcomePublished})
			}
		}
		r.cfg.Logger.Warn("outbox relay: publish partly failed, will retry the rest", "topic", topic, "records", len(recs), "not_sent", len(notSent), "err", err)
		return results
	}
	if !r.cfg.Permanent(err) {
		r.cfg.Logger.Warn("outbox relay: publish failed, will retry", "topic", topic, "records", len(recs), "err", err)
		now := time.Now()
		for _, rec := range recs {
			results = append(results, Result{Seq: rec.Seq, Outcome: OutcomeRetry, Err: err.Error(), RetryAt: now.Add(r.backoff(rec.Attempts + 1))})
		}
		return results
	}
	if len(recs) == 1 {
		r.cfg.Logger.Error("outbox relay: record cannot be published", "seq", recs[0].Seq, "event_id", recs[0].EventID, "topic", topic, "err", err)
		return append(results, Result{Seq: recs[0].Seq, Outcome: OutcomeFailed, Err: err.Error()})
	}
	// A permanent error for a batch: publish one by one to find the poison
	// records. A key stops at its first failure; its later records stay
	// pending behind it.
	stopped := map[string]bool{}
	for i, rec := range recs {
		if rec.OrderingKey != "" && stopped[rec.OrderingKey] {
			continue
		}
		err := r.cfg.Publisher.Publish(topic, msgs[i])
		switch {
		case err == nil:
			results = append(results, Result{Seq: rec.Seq, Outcome: OutcomePublished})
		case r.cfg.Permanent(err):
			r.cfg.Logger.Error("outbox relay: record cannot be published", "seq", rec.Seq, "event_id", rec.EventID, "topic", topic, "err", err)
			results = append(results, Result{Seq: rec.Seq, Outcome: OutcomeFailed, Err: err.Error()})
			stopped[rec.OrderingKey] = rec.OrderingKey != ""
		default:
			results = append(results, Result{Seq: rec.Seq, Outcome: OutcomeRetry, Err: err.Error(), RetryAt: time.Now().Add(r.backoff(rec.Attempts + 1))})
			stopped[rec.OrderingKey] = rec.OrderingKey != ""
		}
	}
	return results
}

// PartialError is implemented by a publisher's error when some messages of
// a Publish call were sent and others were not (a partly failed SNS
// PublishBatch): NotSent lists the UUIDs (event ids) of those not sent. The
// relay then marks the others published and retries only those, so a
// partial failure causes no duplicates. A key's messages after its first
// unsent one are retried too, even if they were sent (ordering first).
type PartialError interface {
	error
	NotSent() []string
}

// backoff returns the delay before attempt n+1: MinBackoff doubling per
// attempt up to MaxBackoff, with ±20% jitter.
func (r *Relay) backoff(attempt int) time.Duration {
	d := r.cfg.MinBackoff
	for i := 1; i < attempt && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.cfg.MaxBackoff)
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	if rand.IntN(2) == 0 {
		return d - jitter
	}
	return min(d+jitter, r.cfg.MaxBackoff)
}

func (r *Relay) cleanup(ctx context.Context) {
	t := time.NewTicker(r.cfg.CleanupInterval)
	defer t.Stop()
	for {
		before := time.Now().Add(-r.cfg.Retention)
		for ctx.Err() == nil {
			n, err := r.cfg.Store.Cleanup(ctx, before, DefaultCleanupBatch)
			if err != nil {
				if ctx.Err() == nil {
					r.cfg.Logger.Error("outbox relay: cleanup failed", "err", err)
				}
				break
			}
			if n > 0 {
				r.cfg.Logger.Debug("outbox relay: cleaned up", "records", n)
			}
			if n < DefaultCleanupBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// broadcast wakes every waiter: C returns a channel closed by the next Fire.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

func (b *broadcast) C() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) Fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

// rateMeter counts events in one-second buckets over a 10-second window.
type rateMeter struct {
	mu    sync.Mutex
	secs  [10]int64
	count [10]uint64
}

func (m *rateMeter) Add(now time.Time, n uint64) {
	if n == 0 {
		return
	}
	s := now.Unix()
	i := s % int64(len(m.secs))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.secs[i] != s {
		m.secs[i], m.count[i] = s, 0
	}
	m.count[i] += n
}

func (m *rateMeter) Rate(now time.Time) float64 {
	s := now.Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	var sum uint64
	for i, sec := range m.secs {
		if sec > s-int64(len(m.secs)) && sec <= s {
			sum += m.count[i]
		}
	}
	return float64(sum) / float64(len(m.secs))
}
