package aws

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/edaproject/eda/transport"
)

// SNS drops a message no subscription takes, and reports it published. So
// before the first Publish to a topic, Publish makes sure the topic has a
// subscription for every queue known to subscribe to it (readyTopic); a
// subscription whose queue disappeared declares it again (healQueue); and a
// running subscription checks now and then that its queue is still
// subscribed to its topics (watchQueue). This file holds all three.

// readiness is what the transport knows of the topology beyond its caches
// of ARNs and URLs. Guarded by Transport.mu.
type readiness struct {
	declared map[string]Queue       // queue name as declared → its last Declare or Apply in this process
	topics   map[string]Topic       // topics listed in Apply's Topology.Topics, by name
	ready    map[string]readyEntry  // topic as published → when it was checked ready
	locks    map[string]*sync.Mutex // one check at a time per topic or queue
	verified map[string]time.Time   // SQS queue name → its last periodic check
}

type readyEntry struct {
	info topicInfo
	at   time.Time
}

// noteDeclared records what Declare or Apply declared: Publish expects
// these subscriptions, a subscription re-declares its queue from it.
func (t *Transport) noteDeclared(topo Topology) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rd.declared == nil {
		t.rd.declared, t.rd.topics = map[string]Queue{}, map[string]Topic{}
	}
	for _, q := range topo.Queues {
		if prev, ok := t.rd.declared[q.Name]; ok {
			// Declaring again with more topics adds them (as on SNS); a
			// topic declared before keeps its filter policy.
			topics, policies := slices.Clone(q.Topics), maps.Clone(q.FilterPolicies)
			for _, tp := range prev.Topics {
				if slices.Contains(q.Topics, tp) {
					continue
				}
				topics = append(topics, tp)
				if fp, ok := prev.FilterPolicies[tp]; ok {
					if policies == nil {
						policies = map[string]string{}
					}
					policies[tp] = fp
				}
			}
			q.Topics, q.FilterPolicies = topics, policies
		}
		t.rd.declared[q.Name] = q
	}
	for _, tp := range topo.Topics {
		t.rd.topics[tp.Name] = tp
	}
}

// lock returns the mutex of one topic or queue check.
func (t *Transport) lock(key string) *sync.Mutex {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rd.locks == nil {
		t.rd.locks = map[string]*sync.Mutex{}
	}
	mu, ok := t.rd.locks[key]
	if !ok {
		mu = &sync.Mutex{}
		t.rd.locks[key] = mu
	}
	return mu
}

// readyTopic returns the topic to publish to, once it is known to deliver
// to every queue declared (in this process or in Config.Topology) to
// subscribe to it. With AutoCreate it declares what is missing first;
// without, it fails with transport.ErrTopicNotReady. A topic no queue is
// known to subscribe to only has to exist. The answer is cached for
// Config.ReadyTTL.
func (t *Transport) readyTopic(ctx context.Context, name string) (topicInfo, error) {
	if info, ok := t.cachedReady(name); ok {
		return info, nil
	}
	mu := t.lock("topic " + name)
	mu.Lock()
	defer mu.Unlock()
	if info, ok := t.cachedReady(name); ok {
		return info, nil
	}
	topo, known := t.topicTopology(name)
	if !known {
		info, found, err := t.resolveTopic(ctx, name)
		if err != nil {
			return topicInfo{}, err
		}
		if !found {
			return topicInfo{}, fmt.Errorf("%w: aws: SNS topic %q does not exist (tried %s), and no queue declared in this process or in Config.Topology subscribes to it, so nothing would receive the messages: declare its queues (or run edactl topology apply), or list the topic in Config.Topology",
				transport.ErrTopicNotReady, name, strings.Join(topicCandidates(name), ", "))
		}
		t.markReady(name, info)
		return info, nil
	}
	if !t.cfg.AutoCreate {
		// A publisher with least privilege may list its topic's
		// subscriptions, not read the consumers' queues: check that each
		// expected queue is subscribed, by ARN.
		info, err := t.checkSubscribed(ctx, name, topo)
		if err != nil {
			return topicInfo{}, err
		}
		t.markReady(name, info)
		return info, nil
	}
	st, applied, missing, err := t.ensure(ctx, topo)
	if err != nil {
		return topicInfo{}, fmt.Errorf("aws: check topic %q and its subscriptions before publishing: %w", name, err)
	}
	if len(missing) > 0 {
		return topicInfo{}, fmt.Errorf("%w: aws: topic %q would not deliver to every queue that subscribes to it, missing: %s (AutoCreate is off): run edactl topology apply",
			transport.ErrTopicNotReady, name, describeChanges(missing))
	}
	if len(applied) > 0 {
		t.log.WarnContext(ctx, "eda/aws: declared the missing part of a topic's topology before publishing to it", "topic", name, "changes", describeChanges(applied))
	}
	var info topicInfo
	for _, tp := range must(topo.topics()) {
		if tp.Name == name || physical(tp.Name, tp.FIFO) == name {
			info = st.topics[tp.Name]
			break
		}
	}
	t.markReady(name, info)
	return info, nil
}

func must[T any](v T, _ error) T { return v }

// checkSubscribed is readyTopic's check without AutoCreate: the topic exists
// (GetTopicAttributes) and lists an SQS subscription for every queue of topo
// (ListSubscriptionsByTopic), the two calls a publisher's policy grants
// (ServicePolicy). It does not look at the queues themselves: their
// consumers verify them (watchQueue).
func (t *Transport) checkSubscribed(ctx context.Context, name string, topo Topology) (topicInfo, error) {
	notReady := func(format string, args ...any) error {
		return fmt.Errorf("%w: aws: topic %q: %s (AutoCreate is off): run edactl topology apply",
			transport.ErrTopicNotReady, name, fmt.Sprintf(format, args...))
	}
	info, found, err := t.resolveTopic(ctx, name)
	if err != nil {
		return topicInfo{}, err
	}
	if !found {
		return topicInfo{}, notReady("does not exist (tried %s)", strings.Join(topicCandidates(name), ", "))
	}
	subscribed := map[string]bool{}
	p := sns.NewListSubscriptionsByTopicPaginator(t.sns, &sns.ListSubscriptionsByTopicInput{TopicArn: &info.arn})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if isNotFound(err) {
			t.unready(name)
			return topicInfo{}, notReady("%s does not exist any more", info.arn)
		}
		if err != nil {
			return topicInfo{}, classify(fmt.Errorf("aws: list subscriptions of %s: %w", info.arn, err))
		}
		for _, sub := range page.Subscriptions {
			if awssdk.ToString(sub.Protocol) == "sqs" {
				subscribed[awssdk.ToString(sub.Endpoint)] = true
			}
		}
	}
	var missing []string
	for _, q := range topo.Queues {
		arn, err := t.arn(ctx, "sqs", physical(q.Name, q.FIFO))
		if err != nil {
			return topicInfo{}, err
		}
		if !subscribed[arn] {
			missing = append(missing, arn)
		}
	}
	if len(missing) > 0 {
		return topicInfo{}, notReady("no subscription for %s, so SNS would not deliver to it", strings.Join(missing, ", "))
	}
	return info, nil
}

func (t *Transport) cachedReady(name string) (topicInfo, bool) {
	ttl := t.cfg.ReadyTTL
	if ttl < 0 {
		return topicInfo{}, false
	}
	t.mu.Lock()
	e, ok := t.rd.ready[name]
	t.mu.Unlock()
	if !ok || time.Since(e.at) > ttl {
		return topicInfo{}, false
	}
	return e.info, true
}

func (t *Transport) markReady(name string, info topicInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rd.ready == nil {
		t.rd.ready = map[string]readyEntry{}
	}
	t.rd.ready[name] = readyEntry{info: info, at: time.Now()}
	t.topics[name] = info
}

// unready forgets that a topic was checked ready, and its ARN: the next
// Publish looks again.
func (t *Transport) unready(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.rd.ready, name)
	delete(t.topics, name)
}

// unreadyAll forgets every topic checked ready: a queue had to be declared
// again, so the broker may have lost more.
func (t *Transport) unreadyAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.rd.ready)
}

// topicTopology returns the part of the known topology that a topic
// published to as name needs: the topic and, for each queue that
// subscribes to it, the queue (with its dead-letter queue) and that one
// subscription. A queue declared in this process wins over Config.Topology.
// known is false when neither mentions the topic.
func (t *Transport) topicTopology(name string) (topo Topology, known bool) {
	t.mu.Lock()
	declared := slices.Collect(maps.Values(t.rd.declared))
	topics := slices.Collect(maps.Values(t.rd.topics))
	t.mu.Unlock()
	slices.SortFunc(declared, func(a, b Queue) int { return strings.Compare(a.Name, b.Name) })
	topics = append(topics, t.cfg.Topology.Topics...)
	for _, tp := range topics {
		if (tp.Name == name || physical(tp.Name, tp.FIFO) == name) && !slices.Contains(topo.Topics, tp) {
			topo.Topics = append(topo.Topics, tp)
			known = true
		}
	}
	seen := map[string]bool{}
	for _, q := range append(declared, t.cfg.Topology.Queues...) {
		for _, tp := range q.Topics {
			if tp != name && physical(tp, q.FIFO) != name {
				continue
			}
			d := q.WithDefaults()
			if seen[physical(d.Name, d.FIFO)] {
				break
			}
			seen[physical(d.Name, d.FIFO)] = true
			r := Queue{Queue: d}
			r.Topics = []string{tp}
			if fp, ok := q.FilterPolicies[tp]; ok {
				r.FilterPolicies = map[string]string{tp: fp}
			}
			topo.Queues = append(topo.Queues, r)
			known = true
			break
		}
	}
	return topo, known
}

// ensure plans topo and, when something it needs to deliver is missing (a
// topic, a queue, a subscription), applies the plan with AutoCreate or
// returns what is missing without. Differences in attributes alone are
// left to Declare and Apply: two processes declaring a queue differently
// must not take turns changing it.
func (t *Transport) ensure(ctx context.Context, topo Topology) (st *planState, applied, missing []Change, err error) {
	st, plan, err := t.plan(ctx, topo)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, c := range plan.Changes {
		switch c.Action {
		case ActionCreateTopic, ActionCreateQueue, ActionSubscribe:
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		t.remember(topo, st)
		return st, nil, nil, nil
	}
	if !t.cfg.AutoCreate {
		return st, nil, missing, nil
	}
	for i, c := range plan.Changes {
		if err := c.apply(ctx); err != nil {
			return nil, plan.Changes[:i], nil, fmt.Errorf("aws: apply %s: %w", c, err)
		}
	}
	t.remember(topo, st)
	return st, plan.Changes, nil, nil
}

func describeChanges(cs []Change) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return strings.Join(s, "; ")
}

// declaration returns how the queue subscribed to as name was declared: in
// this process, else in Config.Topology. For a dead-letter queue it is the
// queue it serves (declaring that declares the dead-letter queue too).
func (t *Transport) declaration(name string) (Queue, bool) {
	t.mu.Lock()
	q, ok := t.rd.declared[name]
	if !ok {
		if parent := t.dlqOf[name]; parent != "" {
			q, ok = t.rd.declared[parent]
		}
	}
	t.mu.Unlock()
	if ok {
		return q, true
	}
	for _, q := range t.cfg.Topology.Queues {
		if d := q.WithDefaults(); d.Name == name || d.DeadLetterQueue == name {
			return q, true
		}
	}
	return Queue{}, false
}

// healQueue handles a failed ReceiveMessage. When the queue no longer
// exists (deleted, or the broker lost its state) and AutoCreate is on, it
// declares the queue again as it was declared, with its subscriptions, and
// reports healed: the subscription polls again at once. Otherwise it
// returns the error to log before backing off: for a missing queue a
// transport.ErrUnknownQueue that says how to fix it.
func (t *Transport) healQueue(ctx context.Context, q queueInfo, err error) (healed bool, _ error) {
	if !isNotFound(err) {
		return false, classify(err)
	}
	gone := fmt.Sprintf("SQS queue %q (%s) does not exist any more (deleted, or the broker lost its state)", q.name, q.url)
	decl, ok := t.declaration(q.name)
	switch {
	case !ok:
		return false, fmt.Errorf("%w: aws: %s and it was not declared in this process: run edactl topology apply", transport.ErrUnknownQueue, gone)
	case !t.cfg.AutoCreate:
		return false, fmt.Errorf("%w: aws: %s (AutoCreate is off): run edactl topology apply", transport.ErrUnknownQueue, gone)
	}
	mu := t.lock("queue " + physical(decl.Name, decl.FIFO))
	mu.Lock()
	defer mu.Unlock()
	_, applied, _, err := t.ensure(ctx, Topology{Queues: []Queue{decl}})
	if err != nil {
		return false, fmt.Errorf("%w: aws: %s, and declaring it again failed: %w", transport.ErrUnknownQueue, gone, err)
	}
	t.mu.Lock()
	now := t.queues[q.name]
	t.mu.Unlock()
	if now.url != "" && now.url != q.url {
		return false, fmt.Errorf("%w: aws: %s; declared again, it has the URL %s: subscribe again", transport.ErrUnknownQueue, gone, now.url)
	}
	t.unreadyAll()
	if len(applied) > 0 {
		t.log.WarnContext(ctx, "eda/aws: a queue had disappeared; declared it again", "queue", q.name, "changes", describeChanges(applied))
	}
	return true, nil
}

// watchQueue checks every Config.VerifyInterval, until ctx ends, that the
// queue subscribed to as name still exists with its subscriptions
// (verifyQueue). wait returns once it has stopped.
func (t *Transport) watchQueue(ctx context.Context, name string) (wait func()) {
	iv := t.cfg.VerifyInterval
	if iv < 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(iv)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			t.verifyQueue(ctx, name, iv)
		}
	}()
	return func() { <-done }
}

// verifyQueue checks that a queue declared in this process (or in
// Config.Topology) still has its topics and subscriptions: with AutoCreate
// it declares what is missing, without it logs an error that says what.
// Several subscriptions of one queue check it once per interval.
func (t *Transport) verifyQueue(ctx context.Context, name string, iv time.Duration) {
	decl, ok := t.declaration(name)
	if !ok {
		return
	}
	key := physical(decl.Name, decl.FIFO)
	mu := t.lock("queue " + key)
	if !mu.TryLock() {
		return // being checked or declared again right now
	}
	defer mu.Unlock()
	t.mu.Lock()
	if t.rd.verified == nil {
		t.rd.verified = map[string]time.Time{}
	}
	if time.Since(t.rd.verified[key]) < iv/2 {
		t.mu.Unlock()
		return
	}
	t.rd.verified[key] = time.Now()
	t.mu.Unlock()
	_, applied, missing, err := t.ensure(ctx, Topology{Queues: []Queue{decl}})
	switch {
	case err != nil:
		if ctx.Err() == nil {
			t.log.WarnContext(ctx, "eda/aws: checking a queue's topology failed", "queue", name, "error", err)
		}
	case len(missing) > 0:
		t.log.ErrorContext(ctx, "eda/aws: a queue's topology is incomplete, so it misses messages (AutoCreate is off): run edactl topology apply",
			"queue", name, "missing", describeChanges(missing))
	case len(applied) > 0:
		t.unreadyAll()
		t.log.WarnContext(ctx, "eda/aws: a queue's topology had lost parts; declared them again", "queue", name, "changes", describeChanges(applied))
	}
}

func (tp Topology) empty() bool { return len(tp.Topics) == 0 && len(tp.Queues) == 0 }
