package aws_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/edaproject/eda/eda"
	"github.com/edaproject/eda/internal/poll"
	"github.com/edaproject/eda/transport"
	edaaws "github.com/edaproject/eda/transport/aws"
)

const account = "000000000000"

func topicARN(name string) string { return "arn:aws:sns:us-east-1:" + account + ":" + name }
func queueARN(name string) string { return "arn:aws:sqs:us-east-1:" + account + ":" + name }

// subscriptionARN returns the SQS subscription of queue to topic, "" when
// there is none (or no topic).
func subscriptionARN(t *testing.T, tr *edaaws.Transport, topic, queue string) string {
	t.Helper()
	out, err := tr.SNS().ListSubscriptionsByTopic(context.Background(), &sns.ListSubscriptionsByTopicInput{TopicArn: awssdk.String(topicARN(topic))})
	if err != nil {
		return ""
	}
	for _, s := range out.Subscriptions {
		if awssdk.ToString(s.Endpoint) == queueARN(queue) {
			return awssdk.ToString(s.SubscriptionArn)
		}
	}
	return ""
}

func topicExists(tr *edaaws.Transport, topic string) bool {
	_, err := tr.SNS().GetTopicAttributes(context.Background(), &sns.GetTopicAttributesInput{TopicArn: awssdk.String(topicARN(topic))})
	return err == nil
}

func queueExists(tr *edaaws.Transport, queue string) bool {
	_, err := tr.SQS().GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: &queue})
	return err == nil
}

// logRecorder is a slog.Handler keeping every record's message and error.
type logRecorder struct {
	mu   sync.Mutex
	recs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.Key + "=" + a.Value.String()
		return true
	})
	l.mu.Lock()
	l.recs = append(l.recs, line)
	l.mu.Unlock()
	return nil
}

// count returns how many records contain every one of parts.
func (l *logRecorder) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, r := range l.recs {
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue next
			}
		}
		n++
	}
	return n
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.recs, "\n")
}

// TestPublishChecksSubscriptions: a publisher-only process that knows from
// Config.Topology which queue subscribes to its topic refuses to publish
// while the topic or that subscription is missing (ErrTopicNotReady,
// which the outbox retries), publishes once it is there, and refuses again
// when the subscription is removed; with AutoCreate it declares the
// missing part itself.
func TestPublishChecksSubscriptions(t *testing.T) {
	ctx := testContext(t)
	topic, queue := uniq("topic"), uniq("queue")
	topo := edaaws.Topology{Queues: []edaaws.Queue{{Queue: transport.Queue{Name: queue, Topics: []string{topic}}}}}
	cfg := testConfig(t)
	cfg.AutoCreate, cfg.Topology, cfg.ReadyTTL = false, topo, -1
	strict := newTransport(t, cfg)

	err := strict.Publish(topic, newMsg("before", nil))
	if !errors.Is(err, transport.ErrTopicNotReady) || errors.Is(err, transport.ErrUnknownTopic) {
		t.Fatalf("Publish before the topology exists: %v, want ErrTopicNotReady", err)
	}
	if !strings.Contains(err.Error(), "edactl topology apply") {
		t.Errorf("the error does not say how to fix it: %v", err)
	}
	if topicExists(strict, topic) {
		t.Fatal("Publish created the topic")
	}

	admin := newTransport(t, testConfig(t))
	if _, err := admin.Apply(ctx, topo); err != nil {
		t.Fatal(err)
	}
	ch, err := admin.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	if err := strict.Publish(topic, newMsg("ready", nil)); err != nil {
		t.Fatalf("Publish once the topology exists: %v", err)
	}
	if m := receive(t, ch, "after apply"); string(m.Payload) != "ready" {
		t.Fatalf("got %q", m.Payload)
	} else {
		m.Ack()
	}

	sub := subscriptionARN(t, admin, topic, queue)
	if _, err := admin.SNS().Unsubscribe(ctx, &sns.UnsubscribeInput{SubscriptionArn: &sub}); err != nil {
		t.Fatal(err)
	}
	if err := strict.Publish(topic, newMsg("lost", nil)); !errors.Is(err, transport.ErrTopicNotReady) {
		t.Fatalf("Publish with the subscription gone: %v, want ErrTopicNotReady", err)
	}

	cfg.AutoCreate = true
	healing := newTransport(t, cfg)
	if err := healing.Publish(topic, newMsg("healed", nil)); err != nil {
		t.Fatalf("Publish with AutoCreate: %v", err)
	}
	if subscriptionARN(t, admin, topic, queue) == "" {
		t.Fatal("Publish with AutoCreate did not subscribe the queue again")
	}
	if m := receive(t, ch, "after the publisher subscribed the queue again"); string(m.Payload) != "healed" {
		t.Fatalf("got %q", m.Payload)
	} else {
		m.Ack()
	}
}

// TestPublishNeverCreatesBareTopic: with AutoCreate and no known
// subscription, Publish does not create the topic (a topic without
// subscriptions drops everything): it fails with ErrTopicNotReady. A topic
// listed in Config.Topology, even without queues, is created.
func TestPublishNeverCreatesBareTopic(t *testing.T) {
	tr := newTransport(t, testConfig(t))
	topic := uniq("topic")
	if err := tr.Publish(topic, newMsg("void", nil)); !errors.Is(err, transport.ErrTopicNotReady) {
		t.Fatalf("Publish to an unknown topic: %v, want ErrTopicNotReady", err)
	}
	if topicExists(tr, topic) {
		t.Fatal("Publish created a topic no queue subscribes to")
	}

	listed := uniq("topic")
	cfg := testConfig(t)
	cfg.Topology = edaaws.Topology{Topics: []edaaws.Topic{{Name: listed}}}
	if err := newTransport(t, cfg).Publish(listed, newMsg("declared topic", nil)); err != nil {
		t.Fatalf("Publish to a topic of Config.Topology: %v", err)
	}
	if !topicExists(tr, listed) {
		t.Fatal("the topic of Config.Topology was not created")
	}
}

// TestSubscriptionRedeclaresQueue deletes the queue of a running
// subscription: with AutoCreate the subscription declares it again with
// its subscription and goes on receiving; without, it logs a typed error
// that says how to fix it, backing off.
func TestSubscriptionRedeclaresQueue(t *testing.T) {
	for _, autoCreate := range []bool{true, false} {
		t.Run(fmt.Sprintf("AutoCreate=%t", autoCreate), func(t *testing.T) {
			ctx := testContext(t)
			topic, queue := uniq("topic"), uniq("queue")
			q := transport.Queue{Name: queue, Topics: []string{topic}, MaxReceiveCount: 3}
			admin := newTransport(t, testConfig(t))
			if err := admin.Declare(ctx, q); err != nil {
				t.Fatal(err)
			}
			logs := &logRecorder{}
			cfg := testConfig(t)
			cfg.AutoCreate, cfg.WaitTime, cfg.VerifyInterval, cfg.Logger = autoCreate, time.Second, -1, slog.New(logs)
			consumer := newTransport(t, cfg)
			if err := consumer.Declare(ctx, q); err != nil {
				t.Fatal(err)
			}
			ch, err := consumer.Subscribe(ctx, queue)
			if err != nil {
				t.Fatal(err)
			}
			url, err := admin.SQS().GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &queue})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := admin.SQS().DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: url.QueueUrl}); err != nil {
				t.Fatal(err)
			}
			if sub := subscriptionARN(t, admin, topic, queue); sub != "" {
				// AWS keeps a subscription whose queue is gone; make it
				// the worse case of a lost topology.
				_, _ = admin.SNS().Unsubscribe(ctx, &sns.UnsubscribeInput{SubscriptionArn: &sub})
			}

			if !autoCreate {
				if !poll.Until(10*time.Second, func() bool {
					return logs.count("receive failed", transport.ErrUnknownQueue.Error(), "does not exist any more", "run edactl topology apply") > 0
				}) {
					t.Fatalf("no error saying the queue is gone and how to fix it; logs:\n%s", logs)
				}
				before := logs.count("receive failed")
				time.Sleep(2 * time.Second) // the backoff: a count over a fixed time
				if n := logs.count("receive failed") - before; n > 5 {
					t.Errorf("%d receive failures logged in 2s: not backing off", n)
				}
				if queueExists(admin, queue) {
					t.Error("the queue was declared again with AutoCreate off")
				}
				return
			}
			if !poll.Until(15*time.Second, func() bool {
				return queueExists(admin, queue) && subscriptionARN(t, admin, topic, queue) != ""
			}) {
				t.Fatalf("queue and subscription not declared again; logs:\n%s", logs)
			}
			if logs.count("declared it again", queue) == 0 {
				t.Errorf("the re-declaration is not logged; logs:\n%s", logs)
			}
			if err := admin.Publish(topic, newMsg("after", nil)); err != nil {
				t.Fatal(err)
			}
			if m := receive(t, ch, "after the queue was declared again"); string(m.Payload) != "after" {
				t.Fatalf("got %q", m.Payload)
			} else {
				m.Ack()
			}
		})
	}
}

// TestVerifyRestoresSubscription removes a running subscription's SNS
// subscription while its queue stays (what a topic deleted and created
// again leaves on AWS): the periodic check subscribes it again.
func TestVerifyRestoresSubscription(t *testing.T) {
	ctx := testContext(t)
	topic, queue := uniq("topic"), uniq("queue")
	logs := &logRecorder{}
	cfg := testConfig(t)
	cfg.WaitTime, cfg.VerifyInterval, cfg.Logger = time.Second, 500*time.Millisecond, slog.New(logs)
	consumer := newTransport(t, cfg)
	if err := consumer.Declare(ctx, transport.Queue{Name: queue, Topics: []string{topic}}); err != nil {
		t.Fatal(err)
	}
	ch, err := consumer.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	admin := newTransport(t, testConfig(t))
	sub := subscriptionARN(t, admin, topic, queue)
	if _, err := admin.SNS().Unsubscribe(ctx, &sns.UnsubscribeInput{SubscriptionArn: &sub}); err != nil {
		t.Fatal(err)
	}
	if !poll.Until(10*time.Second, func() bool { return subscriptionARN(t, admin, topic, queue) != "" }) {
		t.Fatalf("the subscription was not restored; logs:\n%s", logs)
	}
	if logs.count("declared them again", queue) == 0 {
		t.Errorf("the restoration is not logged; logs:\n%s", logs)
	}
	if err := admin.Publish(topic, newMsg("after", nil)); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, "after the subscription was restored"); string(m.Payload) != "after" {
		t.Fatalf("got %q", m.Payload)
	} else {
		m.Ack()
	}
}

// TestFilterPolicyRemoval applies a filter policy, then the same topology
// without it: Apply sets the policy to "{}" (what SetSubscriptionAttributes
// takes to remove one on AWS; "" is no JSON), is idempotent afterwards, and
// a message the old policy dropped now arrives.
func TestFilterPolicyRemoval(t *testing.T) {
	ctx := testContext(t)
	tr := newTransport(t, testConfig(t))
	topic, queue := uniq("topic"), uniq("queue")
	withPolicy := edaaws.Topology{Queues: []edaaws.Queue{{
		Queue:          transport.Queue{Name: queue, Topics: []string{topic}},
		FilterPolicies: map[string]string{topic: `{"ce_type":["wanted"]}`},
	}}}
	if _, err := tr.Apply(ctx, withPolicy); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscribe(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	typed := func(typ string) *message.Message {
		return newMsg(typ, map[string]string{eda.MetadataType: typ})
	}
	if err := tr.Publish(topic, typed("other"), typed("wanted")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, "with the policy"); string(m.Payload) != "wanted" {
		t.Fatalf("with the policy: got %q, want only the wanted one", m.Payload)
	} else {
		m.Ack()
	}

	without := edaaws.Topology{Queues: []edaaws.Queue{{Queue: withPolicy.Queues[0].Queue}}}
	plan, err := tr.Apply(ctx, without)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 1 || plan.Changes[0].Action != edaaws.ActionUpdateSubscription || !strings.Contains(plan.Changes[0].Detail, "FilterPolicy={}") {
		t.Fatalf("removing the policy applied:\n%s\nwant one update-subscription FilterPolicy={}", plan)
	}
	out, err := tr.SNS().GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: awssdk.String(subscriptionARN(t, tr, topic, queue))})
	if err != nil {
		t.Fatal(err)
	}
	if fp, ok := out.Attributes["FilterPolicy"]; ok && fp != "{}" {
		t.Errorf("FilterPolicy after removal = %q, want {} or none", fp)
	}
	if again, err := tr.Plan(ctx, without); err != nil || len(again.Changes) != 0 {
		t.Errorf("Plan after the removal: %v %v, want no changes", again, err)
	}
	if err := tr.Publish(topic, typed("other")); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, ch, "without the policy"); string(m.Payload) != "other" {
		t.Fatalf("without the policy: got %q", m.Payload)
	} else {
		m.Ack()
	}
}
